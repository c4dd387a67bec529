package runner_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// G2: a run cut by the drain timeout of a stopping replica (here 1 s, the
// replica helper's) is left to the shard's next leader under delivery
// at-least-once: its cut attempt is recorded canceled, its claim (a slot's,
// or a manual trigger request's) stays open, and the replica that takes
// the shard over by hand-over runs it again at once, as attempt 2, with
// the same correlation ID. Neither job has retries: the re-run is the
// delivery policy's, not a retry. Under at-most-once the cut attempt is
// the slot's last, as before. Before the fix, both policies recorded the
// cut attempt canceled and closed the claim: nothing ran again.
//
// The same when the cut task answers success as soon as it is cancelled
// (a Python SDK task asleep in ctx.wait): the attempt is recorded
// canceled all the same, saying what the task answered, and run again.
// Before attack 14's fix (K6), it was recorded success and never run
// again.
func TestDrainTimeoutLeavesAtLeastOnceRunsToTheNextLeader(t *testing.T) {
	for _, tc := range []struct {
		name, policy string
		okOnCancel   bool // the cut task answers success
	}{
		{runner.DeliveryAtLeastOnce, runner.DeliveryAtLeastOnce, false},
		{runner.DeliveryAtMostOnce, runner.DeliveryAtMostOnce, false},
		{runner.DeliveryAtLeastOnce + "/success after the cancel", runner.DeliveryAtLeastOnce, true},
	} {
		policy := tc.policy
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			jobs := func() []*runner.Job {
				sched, manual := job("sched", runner.OverlapForbid), job("manual", runner.OverlapForbid)
				sched.Delivery, manual.Delivery = policy, policy
				return []*runner.Job{sched, manual}
			}
			ep := startEtcd(t)
			tasksA := newGatedTasks() // never opened: each run lasts until cancelled
			tasksA.okOnCancel = tc.okOnCancel
			a := startReplica(t, ep, "a", tasksA, runner.Options{})
			jobsA := jobs()
			a.r.SetJobs(jobsA)
			first := a.waitLeader(t)
			waitUntil(t, "a's catch-up", func() bool { return a.r.Scheduled() == 2 })
			slot := slotAhead()
			a.r.Fire(runner.Slot{Job: jobsA[0], Time: slot})
			tr, err := a.control().Trigger(ctx, "manual", "corr-manual", "test", "")
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "both runs on a", func() bool { return len(tasksA.correlations()) == 2 })
			corrSched := tasksA.correlations()[slices.Index(tasksA.correlations(), "corr-manual")^1]

			tasksB := newGatedTasks()
			close(tasksB.gate)
			b := startReplica(t, ep, "b", tasksB, runner.Options{})
			b.r.SetJobs(jobs())
			a.stop() // drain 1 s, then the hand-over: b is next in line
			second := b.waitLeader(t)
			if second.Token == first.Token {
				t.Fatal("b leads under a's token")
			}
			waitUntil(t, "b's catch-up", func() bool { return b.r.Scheduled() == 2 })

			if policy == runner.DeliveryAtLeastOnce {
				waitUntil(t, "both runs again on b, recorded", func() bool {
					n := 0
					for _, r := range recordsOf(t, b.cli, "sched") {
						n += b2i(r.State == observability.OutcomeSuccess)
					}
					for _, r := range recordsOf(t, b.cli, "manual") {
						n += b2i(r.State == observability.OutcomeSuccess)
					}
					return n == 2
				})
			}
			waitUntil(t, "no trigger request kept", func() bool { return storedTriggers(t, b.cli, "manual") == 0 })
			stop, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			b.r.Stop(stop)

			calls := tasksB.correlations()
			for _, id := range []string{"sched", "manual"} {
				corr := map[string]string{"sched": corrSched, "manual": "corr-manual"}[id]
				recs := recordsOf(t, b.cli, id) // by run ID: oldest first
				cut := recs[0]
				if cut.State != observability.OutcomeCanceled || cut.Attempt != 1 || cut.Node != "a" || cut.CorrelationID != corr ||
					cut.FencingToken != first.Token || cut.Manual != (id == "manual") {
					t.Errorf("%s: first record %+v, want a's attempt 1, canceled, %s", id, cut, corr)
				}
				if !strings.Contains(cut.Error, "drain timeout") {
					t.Errorf("%s: the cut attempt's error %q does not say the drain timeout cut it", id, cut.Error)
				}
				if tc.okOnCancel && (!strings.Contains(cut.Error, "the task reported success after the cancel") || cut.Output != "stopped early") {
					t.Errorf("%s: the cut attempt's error %q, output %q: want what the task answered", id, cut.Error, cut.Output)
				}
				if policy == runner.DeliveryAtMostOnce {
					if len(recs) != 1 || strings.Contains(cut.Error, "next leader") {
						t.Errorf("%s: records %+v, want the cut attempt's alone, final", id, recs)
					}
					continue
				}
				if !strings.Contains(cut.Error, "next leader") {
					t.Errorf("%s: the cut attempt's error %q does not say the slot is left to the next leader", id, cut.Error)
				}
				if len(recs) != 2 {
					t.Fatalf("%s: %d records %+v, want the cut attempt and the re-run", id, len(recs), recs)
				}
				again := recs[1]
				if again.State != observability.OutcomeSuccess || again.Attempt != 2 || again.Node != "b" || again.CorrelationID != corr ||
					again.FencingToken != second.Token || !again.ScheduledTime.Equal(cut.ScheduledTime) {
					t.Errorf("%s: re-run %+v, want b's attempt 2 of the same slot, success, %s", id, again, corr)
				}
				if id == "manual" && (again.TriggerID != tr.TriggerID || cut.TriggerID != tr.TriggerID) {
					t.Errorf("manual: trigger IDs %q, %q, want %q", cut.TriggerID, again.TriggerID, tr.TriggerID)
				}
			}
			want := []string{}
			if policy == runner.DeliveryAtLeastOnce {
				want = []string{corrSched, "corr-manual"}
			}
			if slices.Sort(calls); !slices.Equal(calls, slices.Sorted(slices.Values(want))) {
				t.Errorf("b ran %q, want %q", calls, want)
			}
			jc, err := b.c.JobClaims(ctx, "sched")
			if err != nil {
				t.Fatal(err)
			}
			if len(jc.Open) != 0 || !slices.ContainsFunc(jc.Slots, slot.Equal) {
				t.Errorf("sched's claims %+v, want its slot finished", jc)
			}
		})
	}
}

// The same after a failover: a runner stopped with a short drain leaves the
// at-least-once slot it was running open; the next term (here the lease's
// expiry, and a new runner) runs it again as attempt 2 with its
// correlation ID. Its second attempt was the cut one (the first failed):
// the claim is made to say so, and the re-run is attempt 3.
func TestDrainTimeoutLeavesTheCutAttemptToTheNextTerm(t *testing.T) {
	b := setup(t)
	first, newJob := secondAttemptRunning(t, b, "d")
	if n := len(records(t, b, "d")); n != 1 {
		t.Fatalf("%d records while attempt 2 runs, want attempt 1's", n)
	}
	stop, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	b.r.Stop(stop)
	jc, err := b.coord.JobClaims(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if len(jc.Open) != 1 {
		t.Fatalf("claims after the stop %+v, want the slot left open", jc)
	}

	again, next := setupScriptedRunner(t, b, newJob())
	second := failover(t, b, first)
	waitUntil(t, "the re-run's record", func() bool { return len(records(t, b, "d")) == 3 })
	stop2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	again.Stop(stop2)

	recs := records(t, b, "d")
	slices.Reverse(recs) // oldest first
	corr := recs[0].CorrelationID
	for i, want := range []struct {
		state string
		token int64
	}{{observability.OutcomeFailure, first.Token}, {observability.OutcomeCanceled, first.Token}, {observability.OutcomeSuccess, second.Token}} {
		if r := recs[i]; r.Attempt != i+1 || r.State != want.state || r.FencingToken != want.token || r.CorrelationID != corr {
			t.Errorf("record %d: %+v, want attempt %d %s under token %d, correlation ID %s", i, r, i+1, want.state, want.token, corr)
		}
	}
	if calls := next.called(); len(calls) != 1 || calls[0].Info.Attempt != 3 || calls[0].Info.CorrelationID != corr {
		t.Errorf("the next term's calls %+v, want attempt 3 of %s", calls, corr)
	}
}

// secondAttemptRunning fires a slot of job id (delivery at-least-once,
// one retry) on a runner whose tasks fail a first attempt at once, and
// returns once its second attempt has started: with the term it runs
// under and a maker of the same job for the next term's runner.
func secondAttemptRunning(t *testing.T, b *bundle, id string) (*coord.Term, func() *runner.Job) {
	t.Helper()
	first := b.waitLeader(t)
	b.useRunner(t, &failFirst{blockingTasks: b.tasks})
	newJob := func() *runner.Job {
		j := job(id, runner.OverlapForbid)
		j.Delivery = runner.DeliveryAtLeastOnce
		j.Retries = runner.Retries{Max: 1, InitialBackoff: time.Millisecond}
		return j
	}
	j := newJob()
	b.r.SetJobs([]*runner.Job{j})
	b.waitLeader(t)
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	<-b.tasks.started // attempt 2: attempt 1 failed at once
	return first, newJob
}

// failFirst fails a slot's first attempt at once, and runs the others as
// blockingTasks does.
type failFirst struct{ *blockingTasks }

func (f *failFirst) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	if c.Info.Attempt == 1 {
		return &pluginhost.Result{TaskError: "boom"}, nil
	}
	return f.blockingTasks.Run(ctx, c)
}

// setupScriptedRunner makes a runner calling a scripted TaskRunner the one
// that hears of the bundle's next terms (not of the current one).
func setupScriptedRunner(t *testing.T, b *bundle, jobs ...*runner.Job) (*runner.Runner, *scripted) {
	t.Helper()
	tasks := &scripted{}
	return setupNextRunner(t, b, tasks, jobs...), tasks
}

// setupNextRunner makes a runner calling tasks the one that hears of the
// bundle's next terms (not of the current one).
func setupNextRunner(t *testing.T, b *bundle, tasks runner.TaskRunner, jobs ...*runner.Job) *runner.Runner {
	t.Helper()
	return setupNextRunnerOn(t, b, b.coord, tasks, jobs...)
}

// setupNextRunnerOn is setupNextRunner with the runner calling c, the
// bundle's coordinator or a wrapper of it.
func setupNextRunnerOn(t *testing.T, b *bundle, c runner.Coordinator, tasks runner.TaskRunner, jobs ...*runner.Job) *runner.Runner {
	t.Helper()
	r := runner.New(runner.Options{Node: "n1", Coord: c, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger()})
	r.SetJobs(jobs)
	b.hook.mu.Lock()
	b.hook.r = r
	b.hook.mu.Unlock()
	t.Cleanup(func() { r.Stop(context.Background()) })
	b.r = r
	return r
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A leader that loses its lease (killed, frozen, cut off) during a slot's
// second attempt leaves a claim that names that attempt, so the next
// leader re-runs the slot as attempt 3 under at-least-once, not as a
// second attempt 2. The old leader never writes again here: its term is
// revoked while attempt 2 runs, as a kill -9 would end it, so nothing it
// does at the end (its cut record, a late rewrite of the claim) lands.
// Before the fix a slot's claim named its first attempt until a drain cut
// it, and the next leader ran attempt 2 again. The next leader records
// attempt 2 as lost (attack 25, W6: nothing recorded it).
func TestLeaderLostDuringARetryLeavesTheNextAttemptNumber(t *testing.T) {
	b := setup(t)
	first, newJob := secondAttemptRunning(t, b, "r") // its claim was rewritten before it started

	again, next := setupScriptedRunner(t, b, newJob())
	second := failover(t, b, first)
	waitUntil(t, "the re-run", func() bool { return len(next.called()) == 1 })
	waitUntil(t, "the re-run's record", func() bool {
		for _, r := range records(t, b, "r") {
			if r.FencingToken == second.Token && r.State == observability.OutcomeSuccess {
				return true
			}
		}
		return false
	})
	stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	again.Stop(stop)

	recs := records(t, b, "r")
	slices.Reverse(recs) // oldest first
	var attempts []int
	for _, r := range recs {
		attempts = append(attempts, r.Attempt)
	}
	if want := []int{1, 2, 3}; !slices.Equal(attempts, want) {
		t.Errorf("attempts recorded %v (%+v), want %v: attempt 1 failed, attempt 2 died with its leader, the next leader ran 3", attempts, recs, want)
	} else if lost := recs[1]; lost.State != "skipped" || lost.Reason != runner.SkipLockLost || lost.FencingToken != second.Token ||
		lost.CorrelationID != recs[0].CorrelationID || !strings.Contains(lost.Error, "run again as attempt 3") {
		t.Errorf("attempt 2's record %+v, want skipped lock_lost by the next leader, saying it runs attempt 3", lost)
	}
	if calls := next.called(); len(calls) != 1 || calls[0].Info.Attempt != 3 || calls[0].Info.CorrelationID != recs[0].CorrelationID {
		t.Errorf("the next term's calls %+v, want attempt 3 of %s", calls, recs[0].CorrelationID)
	}
}

// A leader that dies (or loses its lease) while a slot's retry waits out
// its backoff leaves a claim that says when the retry is due: the next
// leader runs it then, as a retry, which counts against the retry budget.
// Before, only a leader that stopped or handed over wrote the due time,
// as it left; a dead one left the failed attempt's claim, which the next
// leader took for a cut attempt and ran again at the takeover as a re-run,
// outside the budget: with retries.max 1, three attempts ran (attack 25's
// W10, left open then).
func TestLeaderLostDuringABackoffLeavesARetry(t *testing.T) {
	const backoff = 3 * time.Second // 2.4 to 3 s with the jitter
	b, _ := setupScripted(t, "boom")
	first := b.waitLeader(t)
	newJob := func() *runner.Job {
		j := job("lost-in-backoff", runner.OverlapForbid)
		j.Delivery = runner.DeliveryAtLeastOnce
		j.Retries = runner.Retries{Max: 1, InitialBackoff: backoff, MaxBackoff: backoff}
		return j
	}
	j := newJob()
	b.r.SetJobs([]*runner.Job{j})
	b.waitLeader(t)
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	var claim runner.Record
	waitUntil(t, "the claim naming the retry's due time", func() bool {
		jc, err := b.coord.JobClaims(context.Background(), j.ID)
		if err != nil || len(jc.Open) != 1 {
			return false
		}
		return json.Unmarshal(jc.Open[0].Claim, &claim) == nil && !claim.RetryAt.IsZero()
	})

	old := b.r // setupScripted's cleanup stops b.r, which setupNextRunner replaces
	t.Cleanup(func() { old.Stop(context.Background()) })
	tasks := &scripted{script: []string{"boom", "boom"}}
	setupNextRunner(t, b, tasks, newJob())
	failover(t, b, first) // as a kill -9 during the backoff: the old term writes nothing more
	waitUntil(t, "the slot decided", func() bool {
		jc, err := b.coord.JobClaims(context.Background(), j.ID)
		return err == nil && len(jc.Open) == 0
	})
	var ran []runner.Record
	for _, r := range records(t, b, j.ID) {
		if r.State != "skipped" {
			ran = append(ran, r)
		}
	}
	slices.SortFunc(ran, func(a, b runner.Record) int { return a.Attempt - b.Attempt })
	if len(ran) != 2 || len(tasks.called()) != 1 || ran[1].Attempt != 2 {
		t.Fatalf("attempts%s, the next leader ran %d; want 2 (retries.max 1 + 1): the retry left, attempt 2, counted against the budget",
			attemptList(ran), len(tasks.called()))
	}
	if ran[1].Start.Before(claim.RetryAt) {
		t.Fatalf("attempt 2 started at %v, before its retry was due (%v)", ran[1].Start, claim.RetryAt)
	}
}

// Attack 28, F5, through the retry path: under at-most-once, the leader of
// a slot (and of a manual trigger) whose attempt 1 failed is lost while
// the retry waits out its backoff. The next leader records what was lost
// as the retry, attempt 2, not run, and not as a cut attempt. Before,
// the record read "lost leadership before finishing" (or "before
// recording its end") and named no attempt.
func TestAtMostOnceRetryLostWithItsLeaderIsRecordedAsTheRetry(t *testing.T) {
	newJob := func() *runner.Job {
		j := job("lost-retry", runner.OverlapForbid)
		j.Retries = runner.Retries{Max: 2, InitialBackoff: time.Hour, MaxBackoff: time.Hour}
		return j
	}
	check := func(t *testing.T, recs func() []runner.Record, manual bool, calls func() int) {
		t.Helper()
		var lost runner.Record
		waitUntil(t, "the lost record", func() bool {
			all := recs()
			i := slices.IndexFunc(all, func(r runner.Record) bool { return r.Reason == runner.SkipLockLost })
			if i >= 0 {
				lost = all[i]
			}
			return i >= 0
		})
		if lost.State != "skipped" || lost.Attempt != 2 || lost.Manual != manual || !strings.Contains(lost.Error, "retry (attempt 2) of a failed attempt") {
			t.Fatalf("lost record: %s %s attempt %d manual %v %q; want skipped lock_lost, attempt 2, naming the retry",
				lost.State, lost.Reason, lost.Attempt, lost.Manual, lost.Error)
		}
		if n := calls(); n != 1 {
			t.Fatalf("%d attempts ran, want 1 (at-most-once: the retry lost is not run)", n)
		}
	}
	failed := func(recs []runner.Record) bool {
		return slices.ContainsFunc(recs, func(r runner.Record) bool { return r.State == "failure" })
	}
	t.Run("slot", func(t *testing.T) {
		b, first := setupScripted(t, "boom")
		term := b.waitLeader(t)
		j := newJob()
		b.r.SetJobs([]*runner.Job{j})
		b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
		waitUntil(t, "attempt 1's failure recorded", func() bool { return failed(records(t, b, j.ID)) })
		old := b.r // setupScripted's cleanup stops b.r, which setupNextRunner replaces
		t.Cleanup(func() { old.Stop(context.Background()) })
		next := &scripted{}
		setupNextRunner(t, b, next, newJob())
		failover(t, b, term) // as a kill -9 during the backoff
		check(t, func() []runner.Record { return records(t, b, j.ID) }, false, func() int { return len(first.called()) + len(next.called()) })
	})
	t.Run("manual_trigger", func(t *testing.T) {
		tasks := &scripted{script: []string{"boom"}}
		a := startReplica(t, startEtcd(t), "a", tasks, runner.Options{})
		old := a.waitLeader(t)
		j := newJob()
		a.r.SetJobs([]*runner.Job{j})
		if _, err := a.control().Trigger(context.Background(), j.ID, "corr-lost-retry", "test", ""); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "attempt 1's failure recorded", func() bool { return failed(recordsOf(t, a.cli, j.ID)) })
		// The server deletes the election key, as when the lease expires
		// (the replica frozen through it): the next term decides the
		// request its claim names.
		expireLeaderLease(t, a.cli)
		<-old.Context().Done()
		check(t, func() []runner.Record { return recordsOf(t, a.cli, j.ID) }, true, func() int { return len(tasks.called()) })
	})
}
