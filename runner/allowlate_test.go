package runner_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
)

// Attack 25, W2: the late slots of an overlap allow job (held back by a
// graceful hand-over, or missed under the misfire policy all) are decided
// as one leader decides slots due together: up to max_concurrency start at
// once, each in a run of its own, and the others are recorded skipped,
// reason overlap, "2 runs already running (max_concurrency)"; a slot the
// scheduler fires while they run is decided the same way, not queued
// behind them. Before, they ran one after the other, the run took every
// slot the scheduler fired meanwhile behind them (runs 12-17 s late, for
// 85 s after a hand-over that held back 5 slots), and the slots it skipped
// said "previous run still running", a forbid job's reason.
func TestLateSlotsOfAnAllowJobRunAtOnceUpToMaxConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name     string
		handOver bool
		misfire  string
	}{{"held back by a hand-over", true, runner.MisfireSkip}, {"missed, misfire all", false, runner.MisfireAll}} {
		t.Run(tc.name, func(t *testing.T) { lateSlotsOfAnAllowJob(t, tc.handOver, tc.misfire) })
	}
}

func lateSlotsOfAnAllowJob(t *testing.T, handOver bool, misfire string) {
	b := setup(t)
	first := b.waitLeader(t)
	tasks := newGatedTasks() // each run lasts until the gate opens
	b.useRunner(t, tasks)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	late := secondsUntil(now, -6*time.Second) // -6 s … -1 s
	busy, after := now.Add(time.Hour), now.Add(2*time.Hour)
	last := now.Add(-7 * time.Second)
	j := &runner.Job{ID: "allow", Plugin: "p", Task: "t", Schedule: append(slotList{last}, append(late, busy, after)...),
		Spec: "test: every second", Timeout: time.Minute, Overlap: runner.OverlapAllow, MaxConcurrency: 2,
		Misfire: runner.Misfire{Policy: misfire, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	// The first term ran slot -7 s, 0.1 s long, and then stopped firing
	// (a hand-over) or died.
	drained := runner.Record{Job: j.ID, ScheduledTime: last, RunID: "drained", Node: "n1", FencingToken: first.Token,
		State: observability.OutcomeSuccess, Start: last, End: last.Add(100 * time.Millisecond)}
	rec, _ := json.Marshal(drained)
	if err := b.coord.Claim(ctx, first, j.ID, last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, first, j.ID, last, drained.RunID, rec, time.Time{}, 100, 0); err != nil {
		t.Fatal(err)
	}
	if handOver {
		b.putHandOver(t, first, now.Add(-6500*time.Millisecond), time.Now())
	}
	failover(t, b, first)

	waitUntil(t, "two late runs going at once", func() bool { return len(tasks.correlations()) == 2 })
	const why = "2 runs already running (max_concurrency)"
	// The scheduler's slot, fired while both run, is skipped as on one
	// leader: not queued behind them.
	b.r.Fire(runner.Slot{Job: j, Time: busy})
	byTime := func() map[time.Time]runner.Record { return decidedSlots(t, b, j.ID) }
	waitUntil(t, "the busy slot decided", func() bool { _, ok := byTime()[busy]; return ok })
	close(tasks.gate)
	waitUntil(t, "both late runs recorded", func() bool {
		got := byTime()
		return got[late[0]].State == observability.OutcomeSuccess && got[late[1]].State == observability.OutcomeSuccess
	})
	b.r.Fire(runner.Slot{Job: j, Time: after}) // both have ended: it runs
	waitUntil(t, "the slot after them recorded", func() bool { return byTime()[after].State == observability.OutcomeSuccess })
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b.r.Stop(stop)

	got := byTime()
	for i, s := range append(slices.Clone(late), busy, after) {
		rec, ran := got[s], i < 2 || s.Equal(after)
		switch {
		case ran && rec.State != observability.OutcomeSuccess:
			t.Errorf("slot %s: %s %s %q, want it run", s.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error)
		case !ran && (rec.State != "skipped" || rec.Reason != runner.SkipOverlap || !strings.HasSuffix(rec.Error, why)):
			t.Errorf("slot %s: %s %s %q, want skipped overlap %q", s.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error, why)
		}
	}
	if calls := tasks.correlations(); len(calls) != 3 {
		t.Errorf("%d task calls, want 3: the first two late slots at once, then the slot after them", len(calls))
	}
	if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(j.ID, runner.SkipOverlap)); n != float64(len(late)-2+1) {
		t.Errorf("pacer_job_skipped_total{reason=overlap} = %v, want %d", n, len(late)-2+1)
	}
}
