package coord_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/coord"
)

// Keys as the previous version wrote them (one per slot, 24 h, and a
// horizon per job) are moved into each job's claim key when a leader first
// needs the claims: no slot claimed before can be claimed again, a slot
// left running stays open for the delivery policy, run records stay, and
// the horizon becomes the fence that stops a replica of the previous
// version from claiming the job's slots.
func TestPreviousLayoutIsMovedIntoClaimKeys(t *testing.T) {
	b := setup(t)
	cli := b.client(t)
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	slotKey := func(job string, s time.Time) string {
		return fmt.Sprintf("/pacer/test/slots/%s/%019d", job, s.UnixNano())
	}
	ops := []clientv3.Op{
		// "a": 40 finished slots, the last one left running; pruned before t0.
		clientv3.OpPut("/pacer/test/horizons/a", strconv.FormatInt(t0.UnixNano(), 10)),
		// "b": a horizon only (every slot pruned): a job removed long ago.
		clientv3.OpPut("/pacer/test/horizons/b", strconv.FormatInt(t0.UnixNano(), 10)),
		clientv3.OpPut("/pacer/test/runs/a/0195-run", `{"state":"success"}`),
	}
	for i := range 40 {
		v := fmt.Sprintf(`{"job":"a","state":"success","run_id":"r%d"}`, i)
		if i == 39 {
			v = `{"job":"a","state":"running","run_id":"r39","fencing_token":1}`
		}
		ops = append(ops, clientv3.OpPut(slotKey("a", t0.Add(time.Duration(i)*time.Second)), v))
	}
	// "a.b" sorts before "a/": the scan over job names must not skip it.
	ops = append(ops, clientv3.OpPut(slotKey("a.b", t0), `{"state":"success"}`))
	for i := 0; i < len(ops); i += 100 {
		if _, err := cli.Txn(context.Background()).Then(ops[i:min(i+100, len(ops))]...).Commit(); err != nil {
			t.Fatal(err)
		}
	}

	r := b.replica(t, "new")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	claims, err := r.c.Claims(context.Background(), term)
	if err != nil {
		t.Fatal(err)
	}
	a := claims["a"]
	if len(a.Open) != 1 || !a.Open[0].Time.Equal(t0.Add(39*time.Second)) || len(a.Slots) != 15 {
		t.Fatalf("a after the move: %+v; want slot 39 open, the 15 before finished", a)
	}
	if !claims["a.b"].Claimed() || !claims["b"].Floor.Equal(t0.Add(-time.Nanosecond)) {
		t.Fatalf("a.b %+v, b %+v", claims["a.b"], claims["b"])
	}
	for _, tc := range []struct {
		slot time.Time
		want error
	}{
		{t0.Add(-time.Hour), coord.ErrSlotTooOld},      // before the old horizon
		{t0.Add(3 * time.Second), coord.ErrSlotTooOld}, // claimed, older than the 16 kept
		{t0.Add(30 * time.Second), coord.ErrSlotTaken},
		{t0.Add(39 * time.Second), coord.ErrSlotTaken}, // open
		{t0.Add(40 * time.Second), nil},
	} {
		if err := r.c.Claim(context.Background(), term, "a", tc.slot, []byte("{}")); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("claim of a at +%s: %v, want %v", tc.slot.Sub(t0), err, tc.want)
		}
	}
	resp, err := cli.Get(context.Background(), "/pacer/test/slots/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("%d slot keys of the previous layout left (%v)", resp.Count, err)
	}
	for _, job := range []string{"a", "a.b", "b"} {
		h, err := cli.Get(context.Background(), "/pacer/test/horizons/"+job)
		if err != nil || len(h.Kvs) != 1 || string(h.Kvs[0].Value) != strconv.FormatInt(math.MaxInt64, 10) {
			t.Fatalf("horizon of %s: %v %v; want the fence", job, h, err)
		}
	}
	if runs, err := r.c.Runs(context.Background(), "a", 10); err != nil || len(runs) != 1 {
		t.Fatalf("run records of a: %q %v; want the one kept", runs, err)
	}
	// The next term finds nothing left to move, and the same claims.
	r.close()
	next := b.replica(t, "next")
	waitFor(t, "next leads", 10*time.Second, func() bool { return next.c.Term() != nil })
	if err := next.c.Claim(context.Background(), next.c.Term(), "a", t0.Add(30*time.Second), []byte("{}")); !errors.Is(err, coord.ErrSlotTaken) {
		t.Fatalf("next term, claim of a migrated slot: %v, want ErrSlotTaken", err)
	}
}

// A job that is no longer configured can be forgotten: every key it has
// (claims, pause flag, runs, trigger requests, idempotency receipts) goes,
// in one fenced transaction; a job with an open claim is refused.
func TestForgetJobRemovesItsKeys(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, job := range []string{"gone", "busy", "kept"} {
		if err := r.c.Claim(ctx, term, job, t0, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if job != "busy" {
			if err := r.c.FinishSlot(ctx, term, job, t0, "run-1", []byte("{}"), time.Time{}, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := r.c.SetPaused(ctx, "gone", true, []byte("{}"), coord.Idempotency{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := r.c.RecordRun(ctx, term, "paused-only", "run-9", []byte("{}"), 0, 0); err != nil {
		t.Fatal(err)
	}
	// A trigger request and its receipt go with their job; so do the
	// receipts a job has of a pause and a resume, all that is left of it.
	if _, err := r.c.RequestTrigger(ctx, "gone", "tr-1", []byte("{}"), coord.Idempotency{Key: "t1", Receipt: []byte("t1")}, coord.TriggerLimits{}); err != nil {
		t.Fatal(err)
	}
	for i, paused := range []bool{true, false} {
		if _, err := r.c.SetPaused(ctx, "receipts-only", paused, []byte("{}"), coord.Idempotency{Key: fmt.Sprint("r", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The cluster's own keys are no job's, even under a job's name: a
	// replica's member record, a job set and an epoch stay.
	cluster := []string{"/pacer/test/members/gone", "/pacer/test/jobsets/gone", "/pacer/test/jobsets/gone/0", "/pacer/test/epochs/gone"}
	for _, k := range cluster {
		if _, err := b.client(t).Put(ctx, k, "{}"); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := r.c.StoredJobs(ctx, true)
	if err != nil || fmt.Sprint(stored) != "[busy gone kept paused-only receipts-only]" {
		t.Fatalf("stored jobs %v, %v", stored, err)
	}
	if err := r.c.ForgetJob(ctx, term, "busy"); !errors.Is(err, coord.ErrJobBusy) {
		t.Fatalf("forget a job with an open claim: %v, want ErrJobBusy", err)
	}
	for _, job := range []string{"gone", "paused-only", "receipts-only"} {
		if err := r.c.ForgetJob(ctx, term, job); err != nil {
			t.Fatalf("forget %s: %v", job, err)
		}
	}
	stored, err = r.c.StoredJobs(ctx, true)
	if err != nil || fmt.Sprint(stored) != "[busy kept]" {
		t.Fatalf("stored jobs after forgetting: %v, %v", stored, err)
	}
	resp, err := b.client(t).Get(ctx, "/pacer/test/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]bool{}
	for _, kv := range resp.Kvs {
		left[string(kv.Key)] = true
		if slices.Contains(cluster, string(kv.Key)) {
			continue
		}
		for _, gone := range []string{"/gone", "/paused-only", "/receipts-only"} {
			if strings.HasSuffix(string(kv.Key), gone) || strings.Contains(string(kv.Key), gone+"/") {
				t.Errorf("key %s left after forgetting", kv.Key)
			}
		}
	}
	for _, k := range cluster {
		if !left[k] {
			t.Errorf("cluster key %s deleted with the job", k)
		}
	}
	// A forgotten job starts again from nothing.
	if err := r.c.Claim(ctx, term, "gone", t0, []byte("{}")); err != nil {
		t.Fatalf("claim of a forgotten job's slot: %v", err)
	}
}
