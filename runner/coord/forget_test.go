package coord_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/coord"
)

// RequestedJobs finds every job with a trigger request or a receipt;
// ForgetIdleJob removes a job's records and receipts only when all are
// older than the age given and no trigger request of it is stored, and
// only under a term that still leads.
func TestForgetIdleJobRemovesOnlyAgedKeysUnderItsTerm(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	ctx := context.Background()
	admin := b.client(t)
	longAgo := "00000001-0000-7000-8000-000000000000" // a UUIDv7 of 1970
	for k, v := range map[string]string{
		"runs/aged/" + longAgo: "{}", "idempotency/aged/h1": "old",
		"runs/young/" + longAgo: "{}", "idempotency/young/h1": "new",
		"triggers/waiting/tr-1": "{}", "idempotency/waiting/h1": "old",
		"runs/records-only/" + longAgo: "{}",
		"idempotency/stale-term/h1":    "old",
	} {
		if _, err := admin.Put(ctx, "/pacer/test/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	jobs, err := r.c.RequestedJobs(ctx)
	if err != nil || fmt.Sprint(jobs) != "[aged stale-term waiting young]" {
		t.Fatalf("requested jobs %v, %v", jobs, err)
	}
	at := func(b []byte) time.Time {
		if string(b) == "new" {
			return time.Now()
		}
		return time.Time{}
	}
	for job, want := range map[string]bool{"aged": true, "young": false, "waiting": false, "records-only": true, "nothing": false} {
		got, err := r.c.ForgetIdleJob(ctx, term, job, time.Hour, at)
		if err != nil || got != want {
			t.Errorf("ForgetIdleJob(%s) = %v, %v; want %v", job, got, err, want)
		}
	}
	left, err := admin.Get(ctx, "/pacer/test/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range left.Kvs {
		if k := strings.TrimPrefix(string(kv.Key), "/pacer/test/"); !strings.HasPrefix(k, "leader/") && !strings.HasPrefix(k, "counts/") {
			keys = append(keys, k)
		}
	}
	if got, want := strings.Join(keys, " "), "idempotency/stale-term/h1 idempotency/waiting/h1 idempotency/young/h1 "+
		"runs/young/"+longAgo+" triggers/waiting/tr-1"; got != want {
		t.Fatalf("keys left: %s\nwant: %s", got, want)
	}
	// A term that no longer leads removes nothing.
	lead, err := admin.Get(ctx, "/pacer/test/leader/", clientv3.WithPrefix())
	if err != nil || len(lead.Kvs) == 0 {
		t.Fatalf("leader key: %v %v", lead, err)
	}
	if _, err := admin.Delete(ctx, string(lead.Kvs[0].Key)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.c.ForgetIdleJob(ctx, term, "stale-term", time.Hour, at); got || !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("ForgetIdleJob under a stale term = %v, %v; want ErrNotLeader", got, err)
	}
	if resp, err := admin.Get(ctx, "/pacer/test/idempotency/stale-term/h1", clientv3.WithCountOnly()); err != nil || resp.Count != 1 {
		t.Fatalf("a stale term removed the receipt: %v %v", resp, err)
	}
}
