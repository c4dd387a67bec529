package runner_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
)

// failingJob fails every attempt and would retry 30 s later, so a retry
// that is not stopped is never reached in the test's time.
func failingJob(id string) *runner.Job {
	j := job(id, "")
	j.Retries = runner.Retries{Max: 5, InitialBackoff: 30 * time.Second, MaxBackoff: 30 * time.Second}
	return j
}

// slotTime is after the term starts: a slot due before that is left to the
// term's misfire catch-up (Fire ignores it).
var slotTime = slotAhead()

// waitRecord waits for a record of job in state/reason and returns it.
func waitRecord(t *testing.T, b *bundle, job, state, reason string) runner.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range records(t, b, job) {
			if r.State == state && r.Reason == reason {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s/%s record of %s: %+v", state, reason, job, records(t, b, job))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The first attempt fails; while its retry waits, the job is paused: the
// retry is not started and the slot's last record says so (reason
// "paused"). Before, the retry ran after its backoff whatever happened.
func TestPauseStopsPendingRetries(t *testing.T) {
	b, tasks := setupScripted(t, "boom", "boom", "boom")
	term := b.waitLeader(t)
	b.r.SetJobs([]*runner.Job{failingJob("p")})
	j, _ := b.r.Job("p")
	b.r.Fire(runner.Slot{Job: j, Time: slotTime})
	waitRecord(t, b, "p", "failure", "")
	b.r.SetPaused(map[string]bool{"p": true})
	rec := waitRecord(t, b, "p", "skipped", runner.SkipPaused)
	if rec.Attempt != 2 || !strings.Contains(rec.Error, "retry not started: the job was paused") {
		t.Fatalf("skip record %+v", rec)
	}
	if n := len(tasks.called()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
	// Counted, and the claim closed, once the skip's transaction landed,
	// which may come just after its record can be read.
	waitCount(t, "skipped{paused}", func() float64 {
		return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("p", runner.SkipPaused))
	}, 1)
	// The slot's result is the skip: the slot is finished, not left open.
	waitCount(t, "the slot's claim finished", func() float64 {
		claims, err := b.coord.Claims(context.Background(), term)
		if err != nil {
			t.Fatal(err)
		}
		if c := claims["p"]; len(c.Open) == 0 && slices.Contains(c.Slots, slotTime) {
			return 1
		}
		return 0
	}, 1)
	if n := len(tasks.called()); n != 1 {
		t.Fatalf("%d attempts after the skip, want 1", n)
	}
}

// A reload that removes or changes a job stops its pending retries (reason
// "reloaded"); one that leaves it as it was does not.
func TestReloadStopsPendingRetriesOfRemovedAndChangedJobs(t *testing.T) {
	b, tasks := setupScripted(t, "boom", "boom", "boom", "boom", "boom", "boom")
	b.waitLeader(t)
	keep, gone, changed := failingJob("keep"), failingJob("gone"), failingJob("changed")
	keep.Retries.InitialBackoff, keep.Retries.MaxBackoff = 50*time.Millisecond, 50*time.Millisecond
	keep.Retries.Max = 1
	b.r.SetJobs([]*runner.Job{keep, gone, changed})
	for _, j := range []*runner.Job{keep, gone, changed} {
		b.r.Fire(runner.Slot{Job: j, Time: slotTime})
	}
	for _, id := range []string{"gone", "changed", "keep"} {
		waitRecord(t, b, id, "failure", "")
	}
	// The same jobs again, as a reload builds them: new values; one changed.
	keep2, changed2 := failingJob("keep"), failingJob("changed")
	keep2.Retries = keep.Retries
	changed2.Timeout = 2 * time.Minute
	b.r.SetJobs([]*runner.Job{keep2, changed2})

	for _, id := range []string{"gone", "changed"} {
		rec := waitRecord(t, b, id, "skipped", runner.SkipReloaded)
		if rec.Attempt != 2 {
			t.Fatalf("%s: skip record %+v", id, rec)
		}
	}
	waitCount(t, "attempts of the unchanged job", func() float64 {
		n := 0
		for _, c := range tasks.called() {
			if c.Info.JobID == "keep" {
				n++
			}
		}
		return float64(n)
	}, 2)
	for _, c := range tasks.called() {
		if id := c.Info.JobID; id != "keep" && c.Info.Attempt > 1 {
			t.Fatalf("job %s got attempt %d after the reload", id, c.Info.Attempt)
		}
	}
}

// Stop does not wait for retries: each pending one is recorded as skipped
// (reason "stopping") and Stop returns. Before, Stop waited out the backoff
// (here 30 s) or its own deadline.
func TestStopRecordsPendingRetriesAndReturns(t *testing.T) {
	b, _ := setupScripted(t, "boom", "boom")
	b.waitLeader(t)
	b.r.SetJobs([]*runner.Job{failingJob("s")})
	j, _ := b.r.Job("s")
	b.r.Fire(runner.Slot{Job: j, Time: slotTime})
	waitRecord(t, b, "s", "failure", "")
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		b.r.Stop(ctx)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waited for a retry's backoff")
	}
	waitRecord(t, b, "s", "skipped", runner.SkipStopping)
}

// An attempt whose processes could not be confirmed dead gets no retry: the
// slot's last record says why (reason "tree_alive").
func TestNoRetryWhileProcessesOfTheAttemptMayLive(t *testing.T) {
	b, tasks := setupScripted(t, "alive:pids 123 still alive 5s after SIGKILL", "boom")
	b.waitLeader(t)
	j := failingJob("t")
	j.Retries.InitialBackoff, j.Retries.MaxBackoff = time.Millisecond, time.Millisecond
	b.r.SetJobs([]*runner.Job{j})
	b.r.Fire(runner.Slot{Job: j, Time: slotTime})
	rec := waitRecord(t, b, "t", "skipped", runner.SkipTreeAlive)
	if !strings.Contains(rec.Error, "pids 123 still alive") {
		t.Fatalf("skip record %+v", rec)
	}
	failed := waitRecord(t, b, "t", "failure", "")
	if failed.ProcessesLeft == "" {
		t.Fatalf("the attempt's record does not name the processes left: %+v", failed)
	}
	if n := len(tasks.called()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

// The end of a leadership term ends pending retries: no attempt starts
// under a term that is over.
func TestLosingLeadershipEndsPendingRetries(t *testing.T) {
	b, tasks := setupScripted(t, "boom", "boom")
	term := b.waitLeader(t)
	b.r.SetJobs([]*runner.Job{failingJob("l")})
	j, _ := b.r.Job("l")
	b.r.Fire(runner.Slot{Job: j, Time: slotTime})
	waitRecord(t, b, "l", "failure", "")
	expireLeaderLease(t, b.admin)
	<-term.Context().Done()
	stopped := make(chan struct{})
	go func() { b.r.Stop(context.Background()); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the slot's goroutine still waits for its retry after the term ended")
	}
	if n := len(tasks.called()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

// A slot that replaces a running one (overlap: replace) starts only once
// the replaced attempt has returned. One that does not return within
// ReplaceWait (its task ignores the cancel) leaves the new slot skipped as
// tree_alive, saying why, and the new slot's task never starts. (The new
// slot used to start at once, beside the old attempt.)
func TestReplacingSlotWaitsForTheReplacedAttempt(t *testing.T) {
	b := setup(t)
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: b.tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), ReplaceWait: 200 * time.Millisecond})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	b.tasks.stubborn.Store(true)
	b.waitLeader(t)
	j := job("r", "")
	j.Overlap = runner.OverlapReplace
	b.r.SetJobs([]*runner.Job{j})
	j, _ = b.r.Job("r")
	first := slotAhead()
	b.r.Fire(runner.Slot{Job: j, Time: first})
	<-b.tasks.started
	b.r.Fire(runner.Slot{Job: j, Time: first.Add(time.Second)})
	rec := waitRecord(t, b, "r", "skipped", runner.SkipTreeAlive)
	if !strings.Contains(rec.Error, "did not end within 200ms of being cancelled") || !rec.ScheduledTime.Equal(first.Add(time.Second).UTC()) {
		t.Fatalf("skip record %+v", rec)
	}
	select {
	case job := <-b.tasks.started:
		t.Fatalf("the replacing slot's task started (%s) while the replaced one still ran", job)
	default:
	}
	close(b.tasks.release)
	waitRecord(t, b, "r", "canceled", "")
}

// A replaced attempt whose task answers success as soon as it is cancelled
// (a Python SDK task asleep in ctx.wait) is recorded canceled all the same,
// saying why and what the task answered: the runner cut its work short.
// The slot that replaced it runs, and succeeds. Before attack 14's fix
// (K6), the replaced attempt was recorded success.
func TestReplacedAttemptIsCanceledWhateverTheTaskAnswered(t *testing.T) {
	b := setup(t)
	tasks := newGatedTasks()
	tasks.okOnCancel = true
	b.useRunner(t, tasks)
	b.waitLeader(t)
	j := job("r", runner.OverlapReplace)
	b.r.SetJobs([]*runner.Job{j})
	j, _ = b.r.Job("r")
	first := slotAhead()
	b.r.Fire(runner.Slot{Job: j, Time: first})
	waitUntil(t, "the first slot's call", func() bool { return len(tasks.correlations()) == 1 })
	b.r.Fire(runner.Slot{Job: j, Time: first.Add(time.Second)})
	rec := waitRecord(t, b, "r", observability.OutcomeCanceled, "")
	if !rec.ScheduledTime.Equal(first.UTC()) || rec.Output != "stopped early" ||
		!strings.Contains(rec.Error, "replaced by a newer slot") || !strings.Contains(rec.Error, "the task reported success after the cancel") {
		t.Errorf("the replaced attempt's record %+v, want the first slot's, canceled, saying it was replaced and what the task answered", rec)
	}
	waitUntil(t, "the replacing slot's call", func() bool { return len(tasks.correlations()) == 2 })
	close(tasks.gate)
	rec = waitRecord(t, b, "r", observability.OutcomeSuccess, "")
	if !rec.ScheduledTime.Equal(first.Add(time.Second).UTC()) {
		t.Errorf("success record %+v, want the replacing slot's", rec)
	}
	if n := testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("r", "p", observability.OutcomeSuccess)); n != 1 {
		t.Errorf("%v successes counted, want 1 (the replacing slot's)", n)
	}
}
