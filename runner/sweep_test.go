package runner_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner"
)

// storedKeys lists the keys under prefix (below /pacer/t/), without it,
// sorted, one line each.
func storedKeys(t *testing.T, b *bundle, prefix string) string {
	t.Helper()
	resp, err := b.admin.Get(context.Background(), "/pacer/t/"+prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), "/pacer/t/"))
	}
	return strings.Join(out, "\n")
}

func putKeys(t *testing.T, b *bundle, kvs map[string]string) {
	t.Helper()
	for k, v := range kvs {
		if _, err := b.admin.Put(context.Background(), "/pacer/t/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
}

// receiptAt is an idempotency receipt of a trigger call, stored at.
func receiptAt(at time.Time) string {
	return `{"op":"trigger","call":"c","trigger_id":"tr","at":"` + at.UTC().Format(time.RFC3339Nano) + `"}`
}

// A job that only a replica outside the cluster's job set has leaves, for
// each of its trigger requests (expired: no leader has the job), a skip
// record and an idempotency receipt. The leader removes them once none is
// younger than history.max_age, even while the replicas' job sets differ
// (when the sweep of removed jobs removes nothing); a job with a younger
// record or receipt, or with a trigger request stored, keeps them, and so
// do the leader's own jobs. Before attack 10's F15 fix they all stayed.
func TestSweepAgesTheKeysOfJobsNoLeaderHas(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	longAgo := "00000001-0000-7000-8000-000000000000" // a UUIDv7 of 1970
	now := uuid.Must(uuid.NewV7()).String()
	old, fresh := receiptAt(time.Now().Add(-2*time.Hour)), receiptAt(time.Now())
	pending, _ := json.Marshal(runner.TriggerRequest{CorrelationID: "c", RequestedAt: time.Now().UTC(), By: "test"})
	putKeys(t, b, map[string]string{
		// All aged: they go.
		"runs/aged/" + longAgo: `{}`, "idempotency/aged/h1": old, "idempotency/aged/h2": old,
		"idempotency/receipt-only/h1": old,
		// A receipt, or a record, within max_age: they stay.
		"runs/young-receipt/" + longAgo: `{}`, "idempotency/young-receipt/h1": old, "idempotency/young-receipt/h2": fresh,
		"runs/young-record/" + now: `{}`, "idempotency/young-record/h1": old,
		// A trigger request stored: it is decided (expired) first.
		"triggers/waiting/tr-1": string(pending), "idempotency/waiting/h1": old,
		// A job the leader has: its receipts are bounded by count.
		"idempotency/kept/h1": old,
	})
	var sweeps atomic.Int32
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: &slowBefore{runs: map[time.Time]int{}},
		Metrics: b.metrics, Tracer: b.tp.Tracer("t"), Logger: discardLogger(), SweepInterval: 100 * time.Millisecond,
		MaxRunAge: time.Hour, TriggerExpiry: time.Hour,
		JobSetsAgree: func() bool { sweeps.Add(1); return false }})
	defer r.Stop(context.Background())
	r.SetJobs([]*runner.Job{job("kept", "")})
	r.OnTerm(term)
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(storedKeys(t, b, ""), "/aged/"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the aged keys of a job no leader has are still there after %d sweeps:\n%s", sweeps.Load(), storedKeys(t, b, ""))
		}
	}
	// Two sweeps more: nothing else goes.
	for seen, deadline := sweeps.Load(), time.Now().Add(10*time.Second); sweeps.Load() < seen+2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no two sweeps in 10 s")
		}
	}
	want := strings.Join([]string{
		"idempotency/kept/h1",
		"idempotency/waiting/h1",
		"idempotency/young-receipt/h1", "idempotency/young-receipt/h2",
		"idempotency/young-record/h1",
		"runs/young-receipt/" + longAgo,
		"runs/young-record/" + now,
		"triggers/waiting/tr-1",
	}, "\n")
	if got := storedKeys(t, b, "idempotency/") + "\n" + storedKeys(t, b, "runs/") + "\n" + storedKeys(t, b, "triggers/"); got != want {
		t.Fatalf("keys after the sweeps:\n%s\nwant:\n%s", got, want)
	}
}

// The sweep of removed jobs looks for jobs with trigger requests or
// receipts at every sweep, not only at its second: the keys an expired
// trigger request of a job no leader has leaves, written here after the
// runner's second sweep, go two sweeps later (the replicas' job sets
// agree), however young. Before attack 10's F15 fix only the second sweep
// looked, and they stayed until a leader's restart.
func TestSweepFindsRequestedJobsAtEverySweep(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	slot := slotAhead()
	if err := b.coord.Claim(ctx, term, "gone", slot, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, term, "gone", slot, "run-1", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: &slowBefore{runs: map[time.Time]int{}},
		Metrics: b.metrics, Tracer: b.tp.Tracer("t"), Logger: discardLogger(), SweepInterval: 100 * time.Millisecond})
	defer r.Stop(context.Background())
	r.SetJobs([]*runner.Job{job("kept", "")})
	r.OnTerm(term)
	// A removed job with a claim key goes at the second sweep.
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(storedKeys(t, b, ""), "gone"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the removed job's keys are still there:\n%s", storedKeys(t, b, ""))
		}
	}
	putKeys(t, b, map[string]string{
		"runs/late/" + uuid.Must(uuid.NewV7()).String(): `{}`,
		"idempotency/late/h1":                           receiptAt(time.Now()),
	})
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(storedKeys(t, b, ""), "late"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the keys of a job no leader has, written after the second sweep, are still there:\n%s", storedKeys(t, b, ""))
		}
	}
}
