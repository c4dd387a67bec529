package runner_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/schedule"
)

// Attack 20, Q5: a replica that stops (or hands a shard over) while a
// slot waits out its jitter drained for the whole wait, with nothing
// running, holding every slot of the shard back that long; a jitter longer
// than the drain timeout lost the slot. The slot, not claimed yet, is now
// given up and held back for the next leader, which runs it, its jitter
// counted from the slot: the drain waits for runs only.
func TestHandOverGivesUpASlotWaitingOutItsJitter(t *testing.T) {
	ep := startEtcd(t)
	// A slot after the replica's term starts, fired (as its scheduler
	// would) when due: its jitter of 8 to 10 s still to wait when the
	// replica leaves.
	slot := time.Now().Add(2 * time.Second).Round(time.Millisecond)
	id := ""
	for i := 0; id == ""; i++ {
		if c := "jw-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)); schedule.Jitter(c, slot, 30*time.Second) >= 8*time.Second &&
			schedule.Jitter(c, slot, 30*time.Second) < 10*time.Second {
			id = c
		}
	}
	jobs := func() []*runner.Job {
		return []*runner.Job{{ID: id, Plugin: "p", Task: "t", Schedule: slotList{slot, slot.Add(time.Hour)}, Spec: "test: two slots", Timeout: time.Minute,
			Jitter: 30 * time.Second, Overlap: runner.OverlapForbid, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}}
	}
	tasksA, tasksB := newGatedTasks(), newGatedTasks()
	close(tasksA.gate)
	close(tasksB.gate)
	a, b, jobsA := handOverPair(t, ep, tasksA, tasksB, jobs)
	for time.Now().Before(slot) { // the slot's time, not a synchronisation
		time.Sleep(10 * time.Millisecond)
	}
	a.r.Fire(runner.Slot{Job: jobsA[0], Time: slot})
	if _, running := a.r.JobState(id); running != 1 {
		t.Fatalf("%d runs of the slot on a, want 1 waiting out its jitter", running)
	}
	a.stop()
	b.waitLeader(t)
	waitUntil(t, "the slot's record", func() bool { return len(recordsOf(t, b.cli, id)) == 1 })
	recs := recordsOf(t, b.cli, id)
	if r := recs[0]; r.State != observability.OutcomeSuccess || r.Node != "b" || !r.ScheduledTime.Equal(slot) {
		t.Fatalf("record %+v; want the slot run by b, the next leader", r)
	}
	if n := len(tasksA.correlations()); n != 0 {
		t.Fatalf("a ran %d slots in its drain; want the slot left to b", n)
	}
}

// Attack 20, Q7: a hand-over that began while a slot's retry waited out
// its backoff drained until the drain timeout, then closed the slot with
// the failed attempt's record: the retries were dropped in silence, under
// either delivery policy. The wait now ends when the term stops firing:
// at-least-once leaves the slot to the next leader, which runs the next
// attempt when its backoff ends (a short one here: see
// TestHandOverRetryWaitsOutItsBackoff); at-most-once records the retry
// not started, reason stopping.
func TestHandOverEndsAPendingRetry(t *testing.T) {
	for _, delivery := range []string{runner.DeliveryAtMostOnce, runner.DeliveryAtLeastOnce} {
		t.Run(delivery, func(t *testing.T) {
			backoff := time.Hour
			if delivery == runner.DeliveryAtLeastOnce {
				backoff = 2 * time.Second // b waits it out
			}
			left := leaveARetry(t, delivery, backoff)
			b, tasksB := left.b, left.tasksB
			const want = 2 // attempt 1's failure, and attempt 2: run by b, or recorded not started
			waitUntil(t, "the slot's last record", func() bool {
				recs := recordsOf(t, b.cli, leftRetryJob)
				return len(recs) == want && (delivery == runner.DeliveryAtMostOnce || slices.ContainsFunc(recs, func(r runner.Record) bool {
					return r.State == observability.OutcomeSuccess
				}))
			})
			recs := recordsOf(t, b.cli, leftRetryJob)
			last := recs[slices.IndexFunc(recs, func(r runner.Record) bool { return r.Attempt == 2 })]
			switch delivery {
			case runner.DeliveryAtMostOnce:
				if last.State != "skipped" || last.Reason != runner.SkipStopping || !strings.Contains(last.Error, "retry not started: this replica stopped leading") ||
					len(tasksB.called()) != 0 {
					t.Fatalf("attempt 2's record %+v (b ran %d); want the retry recorded not started, reason stopping", last, len(tasksB.called()))
				}
			default:
				first := recs[slices.IndexFunc(recs, func(r runner.Record) bool { return r.Attempt == 1 })]
				if last.State != observability.OutcomeSuccess || last.Node != "b" || last.CorrelationID != first.CorrelationID {
					t.Fatalf("attempt 2's record %+v; want b to run it, with attempt 1's correlation ID %s", last, first.CorrelationID)
				}
			}
			if jc, err := b.c.JobClaims(context.Background(), leftRetryJob); err != nil || len(jc.Open) != 0 {
				t.Fatalf("claims %+v (%v): the slot is still open", jc, err)
			}
		})
	}
}

// handOverPair starts replica a leading jobs() (caught up, its slot
// scheduled) and replica b with the same jobs, waiting: the set-up of a
// hand-over from a to b. It returns a's jobs, whose slots a fires.
func handOverPair(t *testing.T, ep string, tasksA, tasksB runner.TaskRunner, jobs func() []*runner.Job) (a, b *replica, jobsA []*runner.Job) {
	t.Helper()
	a = startHandingReplica(t, ep, "a", tasksA)
	jobsA = jobs()
	a.r.SetJobs(jobsA)
	a.waitLeader(t)
	waitUntil(t, "a's catch-up", func() bool { return a.r.Scheduled() == 1 })
	b = startHandingReplica(t, ep, "b", tasksB)
	b.r.SetJobs(jobs())
	return a, b, jobsA
}
