package runner_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/runner"
)

// keeping replaces the bundle's runner with one that keeps keep records
// per job (history.keep), calling the bundle's blocking tasks.
func (b *bundle) keeping(t *testing.T, keep int) {
	t.Helper()
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: b.tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord, KeepRuns: keep})
	b.hook.set(b.r)
	r := b.r
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Stop(stop)
	})
}

// skipsStayBounded fires n slots of j, one after the other, each of which
// the runner skips for reason, and fails if the job ever holds more than
// keep + keep/10 records.
func skipsStayBounded(t *testing.T, b *bundle, j *runner.Job, first time.Time, n, keep int, reason string) {
	t.Helper()
	skipped := b.metrics.JobSkipped.WithLabelValues(j.ID, reason)
	before := testutil.ToFloat64(skipped)
	bound := keep + keep/10
	for i := range n {
		b.r.Fire(runner.Slot{Job: j, Time: first.Add(time.Duration(i) * time.Second)})
		// Counted once decided: the skip record and the slot's mark landed
		// (and the prune due after them ran first).
		waitCount(t, reason+" skips", func() float64 { return testutil.ToFloat64(skipped) }, before+float64(i+1))
		if got := len(records(t, b, j.ID)); got > bound {
			t.Fatalf("%d records of %s after %d %s skips, want at most keep + keep/10 (%d)", got, j.ID, i+1, reason, bound)
		}
	}
}

// A paused job's slots leave only skip records, written with each slot's
// mark in the claim key: they count toward the job's history.keep as run
// records do. Paused as an operator pauses it (the pause written to etcd,
// the runner told by its watch). Before the fix the job kept one record
// per slot (15 here, keep 5) until history.max_age.
func TestPausedJobsRecordsStayWithinHistoryKeep(t *testing.T) {
	const keep = 5
	b := setup(t)
	b.keeping(t, keep)
	b.waitLeader(t)
	j := job("pj", "")
	b.r.SetJobs([]*runner.Job{j})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.coord.WatchPaused(ctx, b.r.SetPaused, b.r.PausesLost) }()
	defer func() { cancel(); <-done }()

	ctl := &runner.Control{Runner: b.r, Store: b.coord}
	if _, err := ctl.SetPaused(context.Background(), "pj", true, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitCount(t, "pj paused", func() float64 {
		if paused, _ := b.r.JobState("pj"); paused {
			return 1
		}
		return 0
	}, 1)
	skipsStayBounded(t, b, j, slotAhead(), 3*keep, keep, runner.SkipPaused)
}

// A job stuck in one long attempt under overlap forbid skips every slot
// due meanwhile as overlap: those records are pruned as well.
func TestOverlapSkipsStayWithinHistoryKeep(t *testing.T) {
	const keep = 5
	b := setup(t)
	b.keeping(t, keep)
	b.waitLeader(t)
	j := job("long", runner.OverlapForbid)
	slot := slotAhead()
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	<-b.tasks.started
	defer close(b.tasks.release)
	skipsStayBounded(t, b, j, slot.Add(time.Second), 3*keep, keep, runner.SkipOverlap)
	if got := len(records(t, b, j.ID)); got < keep {
		t.Errorf("%d records, want the newest %d skips kept", got, keep)
	}
}
