package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
)

// scripted is a TaskRunner that answers calls from a script of task
// errors ("" = success) and records what it was called with.
type scripted struct {
	mu     sync.Mutex
	script []string
	calls  []pluginhost.Call
}

func (s *scripted) Run(_ context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	res := &pluginhost.Result{Output: "ok"}
	if len(s.script) > 0 {
		res.TaskError, s.script = s.script[0], s.script[1:]
	}
	if left, ok := strings.CutPrefix(res.TaskError, "alive:"); ok {
		res.ProcessesLeft = left
	}
	return res, nil
}

func (s *scripted) called() []pluginhost.Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pluginhost.Call(nil), s.calls...)
}

func setupScripted(t *testing.T, script ...string) (*bundle, *scripted) {
	t.Helper()
	b := setup(t)
	tasks := &scripted{script: script}
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	return b, tasks
}

func records(t *testing.T, b *bundle, job string) []runner.Record {
	t.Helper()
	raw, err := b.coord.Runs(context.Background(), job, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]runner.Record, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestRetriesAreLinkedAttemptsOfOneSlot(t *testing.T) {
	b, tasks := setupScripted(t, "boom", "boom again")
	b.waitLeader(t)
	j := job("retry", "")
	j.Retries = runner.Retries{Max: 3, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	slot := slotAhead()
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	waitCount(t, "successes", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("retry", "p", observability.OutcomeSuccess))
	}, 1)

	calls := tasks.called()
	if len(calls) != 3 {
		t.Fatalf("%d attempts, want 3", len(calls))
	}
	for i, c := range calls {
		if c.Info.Attempt != i+1 || c.Info.CorrelationID != calls[0].Info.CorrelationID {
			t.Fatalf("attempt %d: %+v", i+1, c.Info)
		}
		if i > 0 && c.Info.RunID == calls[i-1].Info.RunID {
			t.Fatal("attempts share a run ID")
		}
	}
	if got := testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("retry", "p", observability.OutcomeFailure)); got != 2 {
		t.Fatalf("failures = %v, want 2", got)
	}
	waitCount(t, "records", func() float64 { return float64(len(records(t, b, "retry"))) }, 3)
	// Each attempt is its own root span, linked to the one before.
	waitCount(t, "pacer.run spans", func() float64 {
		n := 0
		for _, s := range b.spans.Ended() {
			if s.Name() == "pacer.run" {
				n++
			}
		}
		return float64(n)
	}, 3)
	var runs []string
	for _, s := range b.spans.Ended() {
		if s.Name() == "pacer.run" {
			runs = append(runs, s.SpanContext().SpanID().String())
			if len(runs) > 1 && (len(s.Links()) != 1 || s.Links()[0].SpanContext.SpanID().String() != runs[len(runs)-2]) {
				t.Fatalf("attempt %d is not linked to attempt %d", len(runs), len(runs)-1)
			}
		}
	}
	if len(runs) != 3 {
		t.Fatalf("%d pacer.run spans, want 3", len(runs))
	}
	// The claim is a child of the first attempt's span.
	for _, s := range b.spans.Ended() {
		if s.Name() == "pacer.claim" && s.Parent().SpanID().String() != runs[0] {
			t.Fatalf("pacer.claim's parent is %s, want the first pacer.run %s", s.Parent().SpanID(), runs[0])
		}
	}
}

func TestPausedJobLeavesSkipRecord(t *testing.T) {
	b, tasks := setupScripted(t)
	b.waitLeader(t)
	b.r.SetPaused(map[string]bool{"p1": true})
	b.r.Fire(runner.Slot{Job: job("p1", ""), Time: slotAhead()})
	waitCount(t, "skip records", func() float64 { return float64(len(records(t, b, "p1"))) }, 1)
	rec := records(t, b, "p1")[0]
	if rec.State != "skipped" || rec.Reason != runner.SkipPaused || len(tasks.called()) != 0 {
		t.Fatalf("record %+v, %d calls", rec, len(tasks.called()))
	}
	if got := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("p1", runner.SkipPaused)); got != 1 {
		t.Fatalf("skipped{paused} = %v", got)
	}
}

func TestCatchUpAppliesMisfirePolicy(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		grace   time.Duration
		minRuns int
		maxRuns int
		ahead   bool // a leader whose clock ran an hour ahead also claimed a slot early
	}{
		{runner.MisfireSkip, time.Hour, 0, 0, false},
		{runner.MisfireOnce, time.Hour, 1, 1, false},
		{runner.MisfireOnce, 0, 0, 0, false}, // nothing within the grace window
		{runner.MisfireAll, 4 * time.Second, 3, 5, false},
		{runner.MisfireOnce, time.Hour, 1, 1, true},
	} {
		name := tc.policy + "/grace=" + tc.grace.String()
		if tc.ahead {
			name += "/early-claim"
		}
		t.Run(name, func(t *testing.T) {
			b, tasks := setupScripted(t)
			term := b.waitLeader(t)
			j := &runner.Job{ID: "m", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
				Misfire: runner.Misfire{Policy: tc.policy, Grace: tc.grace}}
			b.r.SetJobs([]*runner.Job{j})
			// The previous leader's last claim was 10s ago.
			last := time.Now().Truncate(time.Second).Add(-10 * time.Second)
			if err := b.coord.Claim(context.Background(), term, "m", last, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if tc.ahead {
				if err := b.coord.Claim(context.Background(), term, "m", last.Add(time.Hour), []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			b.r.CatchUp(term)
			stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stopAfterRuns(stop, b.r, term) // waits for the catch-up runs and records

			runs := len(tasks.called())
			if runs < tc.minRuns || runs > tc.maxRuns {
				t.Fatalf("%d runs, want %d..%d", runs, tc.minRuns, tc.maxRuns)
			}
			recs := records(t, b, "m")
			skipped := map[time.Time]bool{}
			for _, r := range recs {
				if r.State == "skipped" {
					if r.Reason != runner.SkipMisfire {
						t.Fatalf("skip reason %q", r.Reason)
					}
					skipped[r.ScheduledTime] = true
					for s := r.ScheduledTime; r.Slots > 1 && !s.After(r.ScheduledUntil); s = s.Add(time.Second) {
						skipped[s] = true // a record for consecutive slots
					}
					if n := r.Slots; n > 1 && len(skipped) < n {
						t.Fatalf("record for %d slots names %d", n, len(skipped))
					}
				}
			}
			for _, c := range tasks.called() {
				if skipped[c.Info.ScheduledTime.UTC()] {
					t.Fatalf("slot %v both ran and was skipped", c.Info.ScheduledTime.UTC())
				}
			}
			if n := runs + len(skipped); n < 9 || n > 11 {
				t.Fatalf("%d runs + %d skips: want every missed slot (about 10) accounted for", runs, len(skipped))
			}
			if got := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("m", runner.SkipMisfire)); int(got) != len(skipped) {
				t.Fatalf("skipped{misfire} = %v, records %d", got, len(skipped))
			}
			if jc, _ := b.coord.JobClaims(context.Background(), "m"); !jc.Last(time.Now().Add(time.Minute)).After(last) {
				t.Fatal("last claimed slot did not advance: the next leader would count these slots again")
			}
		})
	}
}

// Attack 17, K8: a late run (misfire once, after a failover) waits only
// what is left of its slot's jitter, counted from its slot: one whose
// jitter has passed starts at once. Before, it waited its whole jitter
// again from the catch-up, past the job's next slot, which was then
// skipped as an overlap with a run that had not started.
func TestLateRunsJitterCountsFromItsSlot(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	// The slot the catch-up runs, two hours ago (an hour after the previous
	// leader's last claim): its jittered start has passed, however long
	// its jitter; and a job whose jitter for it is half an hour or more.
	last := time.Now().Truncate(time.Second).Add(-3 * time.Hour)
	late := last.Add(time.Hour)
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("late-%d", i); schedule.Jitter(c, late, time.Hour) >= 30*time.Minute {
			id = c
		}
	}
	j := &runner.Job{ID: id, Plugin: "p", Task: "t", Schedule: slotList{last, late}, Timeout: time.Minute,
		Jitter: time.Hour, Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: 3 * time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	if err := b.coord.Claim(context.Background(), term, id, last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	b.r.CatchUp(term)
	waitCount(t, "the late run", func() float64 { return float64(len(tasks.called())) }, 1)
	if c := tasks.called()[0]; !c.Info.ScheduledTime.Equal(late) {
		t.Fatalf("ran slot %v, want %v", c.Info.ScheduledTime, late)
	}
}

func TestManualTriggerRunsOnceWithCallersCorrelationID(t *testing.T) {
	b, tasks := setupScripted(t)
	b.waitLeader(t)
	j := job("man", "")
	b.r.SetJobs([]*runner.Job{j})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.coord.WatchTriggers(ctx, b.r.HandleTriggers) }()
	defer func() { cancel(); <-done }()

	ctl := &runner.Control{Runner: b.r, Store: b.coord}
	tr, err := ctl.Trigger(context.Background(), "man", "caller-corr-1", "test", "")
	if err != nil || tr.CorrelationID != "caller-corr-1" {
		t.Fatalf("trigger: %+v %v", tr, err)
	}
	waitCount(t, "calls", func() float64 { return float64(len(tasks.called())) }, 1)
	if c := tasks.called()[0]; c.Info.CorrelationID != "caller-corr-1" {
		t.Fatalf("correlation ID %q", c.Info.CorrelationID)
	}
	waitCount(t, "records", func() float64 { return float64(len(records(t, b, "man"))) }, 1)
	if rec := records(t, b, "man")[0]; !rec.Manual || rec.State != observability.OutcomeSuccess {
		t.Fatalf("record %+v", rec)
	}
	if _, err := ctl.Trigger(context.Background(), "nope", "", "test", ""); err == nil {
		t.Fatal("triggered an unknown job")
	}
}

func TestDeliveryPolicyForSlotsADeadLeaderLeftRunning(t *testing.T) {
	for _, tc := range []struct {
		policy string
		ahead  time.Duration // the dead leader's clock ran this far ahead
	}{
		{runner.DeliveryAtMostOnce, 0}, {runner.DeliveryAtLeastOnce, 0},
		{runner.DeliveryAtMostOnce, time.Hour}, {runner.DeliveryAtLeastOnce, time.Hour},
	} {
		policy := tc.policy
		t.Run(fmt.Sprintf("%s/ahead=%s", policy, tc.ahead), func(t *testing.T) {
			b, tasks := setupScripted(t)
			term := b.waitLeader(t)
			j := &runner.Job{ID: "d", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Timeout: time.Minute,
				Delivery: policy, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
			b.r.SetJobs([]*runner.Job{j})
			// A previous leader (token 1) claimed this hour's slot and died mid-run.
			slot := time.Now().Truncate(time.Hour).Add(tc.ahead)
			claim, _ := json.Marshal(runner.Record{Job: "d", ScheduledTime: slot, RunID: "old-run", CorrelationID: "corr-dead",
				Node: "dead-node", FencingToken: 1, Attempt: 1, State: "running"})
			if err := b.coord.Claim(context.Background(), term, "d", slot, claim); err != nil {
				t.Fatal(err)
			}
			b.r.CatchUp(term)
			stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stopAfterRuns(stop, b.r, term)

			calls := tasks.called()
			jc, err := b.coord.JobClaims(context.Background(), "d")
			if err != nil {
				t.Fatal(err)
			}
			if len(jc.Open) != 0 || !slices.ContainsFunc(jc.Slots, slot.Equal) {
				t.Fatalf("claims of d after the catch-up: %+v; want the slot finished", jc)
			}
			recs := records(t, b, "d")
			want := 1
			if policy == runner.DeliveryAtLeastOnce {
				want = 2 // the attempt taken over too
			}
			if len(recs) != want {
				t.Fatalf("%d records, want %d: %+v", len(recs), want, recs)
			}
			lost := slices.IndexFunc(recs, func(r runner.Record) bool { return r.RunID == "old-run" })
			final := recs[len(recs)-1-max(lost, 0)] // the other one
			switch policy {
			case runner.DeliveryAtLeastOnce:
				if len(calls) != 1 || calls[0].Info.Attempt != 2 || calls[0].Info.CorrelationID != "corr-dead" ||
					calls[0].Info.FencingToken != term.Token {
					t.Fatalf("re-run: %+v", calls)
				}
				if final.State != "success" || final.FencingToken != term.Token {
					t.Fatalf("slot record %+v", final)
				}
				// Attack 25, W6: the attempt the dead leader ran is
				// recorded, under its own run ID (before, it had none).
				if lost < 0 {
					t.Fatalf("records %+v: none of the dead leader's attempt (old-run)", recs)
				}
				if lost := recs[lost]; lost.State != "skipped" || lost.Reason != runner.SkipLockLost || lost.Attempt != 1 ||
					lost.CorrelationID != "corr-dead" || lost.FencingToken != term.Token || !strings.Contains(lost.Error, "dead-node") {
					t.Fatalf("the dead leader's attempt's record %+v, want attempt 1 skipped lock_lost naming dead-node", lost)
				}
			default:
				if len(calls) != 0 {
					t.Fatalf("at-most-once ran the slot again: %d calls", len(calls))
				}
				if final.State != "skipped" || final.Reason != runner.SkipLockLost || !strings.Contains(final.Error, "dead-node") ||
					final.CorrelationID != "corr-dead" {
					t.Fatalf("slot record %+v", final)
				}
			}
		})
	}
}

// differingView is a replica whose job set differs from the cluster's by
// jobs only it has.
type differingView []string

func (v differingView) View() coord.JobSetView {
	return coord.JobSetView{JobSet: "bbbb", ClusterJobSet: "aaaa", Difference: &coord.JobSetDiff{OnlyHere: v}}
}

// Attack 19, P7: a trigger of a job only this replica has, accepted while
// this replica still leads the job's shard (its job set's difference not
// settled yet), runs; its warning said "does not run". It now says that
// this replica runs it unless it steps down first.
func TestTriggerWarningSaysTheLeaderRunsIt(t *testing.T) {
	b, tasks := setupScripted(t)
	b.waitLeader(t)
	b.r.SetJobs([]*runner.Job{job("only-here", "")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.coord.WatchTriggers(ctx, b.r.HandleTriggers) }()
	defer func() { cancel(); <-done }()

	ctl := &runner.Control{Runner: b.r, Store: b.coord, Members: differingView{"only-here"}}
	tr, err := ctl.Trigger(context.Background(), "only-here", "", "test", "")
	if err != nil || !strings.Contains(tr.Warning, "this replica leads the job's shard for now and runs the request") ||
		strings.Contains(tr.Warning, "the leader does not have it") {
		t.Fatalf("trigger: %+v %v; want a warning that this replica runs it", tr, err)
	}
	waitCount(t, "calls", func() float64 { return float64(len(tasks.called())) }, 1)
}
