package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
)

// Attack 25, W6: under delivery at-least-once, the leader that takes over
// a slot an older term left running records the attempt it takes over
// (skipped, reason lock_lost, with the attempt's number, run ID and
// correlation ID as the claim names them), once: here a slot's attempt 1
// is lost with its leader, attempt 2 with the next, and the third leader
// runs attempt 3. Before, the lost attempts left no record at all (their
// leaders' own writes are refused on their stale fencing tokens): the
// slot's history showed attempt 3 alone. The record of a taken-over
// attempt is written with the takeover, in one transaction: the second
// leader here could not write anything else before it was lost (every
// record it writes on its own is refused).
// Before, it wrote the record on its own as the re-run started, and a
// leader lost within those milliseconds left the attempt without one.
func TestTakenOverAttemptsAreEachRecordedOnce(t *testing.T) {
	b := setup(t)
	first := b.waitLeader(t)
	tasks1 := newGatedTasks() // never opened: each attempt runs until its term ends
	b.useRunner(t, tasks1)
	newJob := func() *runner.Job {
		j := job("d", runner.OverlapForbid)
		j.Delivery = runner.DeliveryAtLeastOnce
		return j
	}
	b.r.SetJobs([]*runner.Job{newJob()})
	b.waitLeader(t)
	b.r.Fire(runner.Slot{Job: newJob(), Time: slotAhead()})
	waitUntil(t, "attempt 1", func() bool { return len(tasks1.correlations()) == 1 })

	tasks2 := newGatedTasks()
	setupNextRunnerOn(t, b, lostBeforeRecords{b.coord}, tasks2, newJob()) // as if lost right after its takeover
	second := failover(t, b, first)
	waitUntil(t, "attempt 2", func() bool { return len(tasks2.correlations()) == 1 })
	if !slices.ContainsFunc(records(t, b, "d"), func(r runner.Record) bool { return r.Attempt == 1 && r.Reason == runner.SkipLockLost }) {
		t.Fatalf("attempt 2 runs, and attempt 1 has no record: %+v", records(t, b, "d"))
	}

	last, tasks3 := setupScriptedRunner(t, b, newJob())
	third := failover(t, b, second)
	waitUntil(t, "attempt 3's record", func() bool {
		return slices.ContainsFunc(records(t, b, "d"), func(r runner.Record) bool { return r.State == observability.OutcomeSuccess })
	})
	stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last.Stop(stop)

	calls := []runner.Record{}
	for _, tasks := range []*gatedTasks{tasks1, tasks2} {
		tasks.mu.Lock()
		c := tasks.calls[0].Info
		tasks.mu.Unlock()
		calls = append(calls, runner.Record{RunID: c.RunID, CorrelationID: c.CorrelationID, Attempt: c.Attempt})
	}
	if got := tasks3.called(); len(got) != 1 || got[0].Info.Attempt != 3 || got[0].Info.CorrelationID != calls[0].CorrelationID {
		t.Fatalf("the third leader's calls %+v, want attempt 3 of %s", got, calls[0].CorrelationID)
	}
	recs := records(t, b, "d")
	slices.Reverse(recs) // oldest first
	if len(recs) != 3 {
		t.Fatalf("%d records %+v, want 3: attempts 1 and 2, lost with their leaders, then attempt 3", len(recs), recs)
	}
	for i, took := range []int64{second.Token, third.Token} {
		rec, ran := recs[i], calls[i]
		want := "left running by n1 (fencing token "
		again := "run again as attempt " + string(rune('2'+i))
		if rec.State != "skipped" || rec.Reason != runner.SkipLockLost || rec.Attempt != i+1 || rec.RunID != ran.RunID ||
			rec.CorrelationID != ran.CorrelationID || rec.FencingToken != took ||
			!strings.Contains(rec.Error, want) || !strings.Contains(rec.Error, again) {
			t.Errorf("record %d: %+v; want attempt %d (run %s) skipped lock_lost under token %d, saying %q and %q",
				i, rec, i+1, ran.RunID, took, want, again)
		}
	}
	if final := recs[2]; final.State != observability.OutcomeSuccess || final.Attempt != 3 || final.FencingToken != third.Token {
		t.Errorf("last record %+v, want attempt 3's success under token %d", final, third.Token)
	}
}

// lostBeforeRecords is a coordinator that writes no record on its own, as
// a leader lost right after its last claim could not: its writes are
// refused as stale.
type lostBeforeRecords struct{ runner.Coordinator }

func (lostBeforeRecords) RecordRun(context.Context, *coord.Term, string, string, []byte, int, time.Duration) error {
	return fmt.Errorf("%w (the test's: lost right after its last claim)", coord.ErrNotLeader)
}
