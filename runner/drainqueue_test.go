package runner_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// steppedTasks is a TaskRunner whose calls each wait for a step (a send
// on step, or its close) or their context's end; it records the calls,
// and says on started when each begins.
type steppedTasks struct {
	mu      sync.Mutex
	calls   []pluginhost.Call
	started chan time.Time // each call's slot, as it begins
	step    chan struct{}
}

func newSteppedTasks() *steppedTasks {
	return &steppedTasks{started: make(chan time.Time, 64), step: make(chan struct{})}
}

func (s *steppedTasks) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
	s.started <- c.Info.ScheduledTime.UTC()
	select {
	case <-s.step:
		return &pluginhost.Result{Output: "ok"}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *steppedTasks) called() []pluginhost.Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// handOverNow ends term as a graceful hand-over does once its drain is
// over: its mark (firing stopped at stopped), then its end; the bundle's
// coordinator leads again under a new token and catches up. It returns
// the new term.
func handOverNow(t *testing.T, b *bundle, term *coord.Term, stopped time.Time) *coord.Term {
	t.Helper()
	b.putHandOver(t, term, stopped, time.Now())
	return failover(t, b, term)
}

// missedSixSlots sets up a first term, a runner calling stepped tasks, and
// a job (overlap forbid, misfire all) whose slots are every second of the
// last seven: the first term ran the first of them, and the six after it
// are missed, for the next term's catch-up to claim together.
func missedSixSlots(t *testing.T) (*bundle, *steppedTasks, *runner.Job, []time.Time, *coord.Term) {
	t.Helper()
	b := setup(t)
	tasks := newSteppedTasks()
	b.useRunner(t, tasks)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots := secondsUntil(now, -7*time.Second)
	j := &runner.Job{ID: "all", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: every second until now", Timeout: time.Minute,
		Overlap: runner.OverlapForbid, Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	if err := b.coord.Claim(ctx, first, j.ID, slots[0], []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, first, j.ID, slots[0], "run-0", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	return b, tasks, j, slots, first
}

// Attack 25, W13: a graceful stop during a catch-up (misfire all, at-most-once)
// kept starting the catch-up's queued late slots in its drain, one after the
// other; the drain timeout cut the one running, and the next leader recorded
// the rest lock_lost, "not started before it lost leadership": lost. Once the
// term stops firing, no queued slot starts now: its claim stays queued, and
// the next leader, taking the hand-over mark, runs it late, in slot order.
func TestStopDuringACatchUpLeavesItsQueuedSlotsToTheNextLeader(t *testing.T) {
	b, tasks, j, slots, first := missedSixSlots(t)
	ctx := context.Background()
	missed := slots[1:] // claimed together by the catch-up, all but the first queued
	second := failover(t, b, first)
	if s := <-tasks.started; !s.Equal(missed[0]) {
		t.Fatalf("the catch-up started slot %s first, want %s", s.Format(time.TimeOnly), missed[0].Format(time.TimeOnly))
	}
	stopped := second.StopFiring() // a stop or a hand-over begins
	tasks.step <- struct{}{}       // the slot running ends
	drain, cancel := context.WithTimeout(ctx, 5*time.Second)
	b.r.WaitIdle(drain, second)
	cancel()
	if calls := tasks.called(); len(calls) != 1 {
		t.Errorf("the draining term started %d slots, want only the one running when firing stopped", len(calls))
	}

	third := handOverNow(t, b, second, stopped)
	close(tasks.step)
	waitUntil(t, "every missed slot decided", func() bool {
		got := decidedSlots(t, b, j.ID)
		return !slices.ContainsFunc(missed, func(s time.Time) bool { _, ok := got[s]; return !ok })
	})
	got := decidedSlots(t, b, j.ID)
	for i, s := range missed {
		rec, token := got[s], third.Token
		if i == 0 {
			token = second.Token
		}
		if rec.State != observability.OutcomeSuccess || rec.FencingToken != token {
			t.Errorf("slot %s: %s %s %q under token %d; want run, under token %d", s.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error,
				rec.FencingToken, token)
		}
	}
	var ran []time.Time
	for _, c := range tasks.called() {
		ran = append(ran, c.Info.ScheduledTime.UTC())
	}
	if !slices.Equal(ran, missed) {
		t.Errorf("ran %v, want each missed slot once, in slot order: %v", ran, missed)
	}
}

// Attack 25, W13 (its repro B): a forbid job's slot left to the next
// leader while its retry waited (a hand-over or stop began), and a later
// slot queued behind it, by the catch-up (missed) or as re-delivered too
// (left open by the same dead leader): the later slot started in the
// drain, so the job's slots ran out of order (the later one between
// attempts of the earlier one). It now stays claimed, and the next leader
// runs it after the earlier slot's retry.
func TestStopDuringARetryStartsNoSlotBehindIt(t *testing.T) {
	for _, redelivered := range []bool{false, true} {
		name := "missed"
		if redelivered {
			name = "redelivered"
		}
		t.Run(name, func(t *testing.T) { stopDuringARetry(t, redelivered) })
	}
}

func stopDuringARetry(t *testing.T, redelivered bool) {
	b, tasks := setupScripted(t, "boom")
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	early, late := now.Add(-5*time.Second), now.Add(-2*time.Second)
	const backoff = 3 * time.Second
	j := &runner.Job{ID: "alo", Plugin: "p", Task: "t", Schedule: slotList{early, late}, Spec: "test: two slots", Timeout: time.Minute,
		Overlap: runner.OverlapForbid, Delivery: runner.DeliveryAtLeastOnce,
		Retries: runner.Retries{Max: 3, InitialBackoff: backoff, MaxBackoff: backoff},
		Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	// The first term started the early slot (and the late one, if
	// redelivered) and died; else the late one came due meanwhile.
	open := []time.Time{early}
	if redelivered {
		open = append(open, late)
	}
	for _, s := range open {
		c, _ := json.Marshal(runner.Record{Job: j.ID, ScheduledTime: s, RunID: "r-" + s.Format(time.TimeOnly), CorrelationID: "corr-" + s.Format(time.TimeOnly),
			Node: "n1", FencingToken: first.Token, Attempt: 1, State: "running", Start: s})
		if err := b.coord.Claim(ctx, first, j.ID, s, c); err != nil {
			t.Fatal(err)
		}
	}
	second := failover(t, b, first) // runs the early slot again (attempt 2: fails), the late one behind it
	waitUntil(t, "the early slot's attempt 2 recorded", func() bool {
		return slices.ContainsFunc(records(t, b, j.ID), func(r runner.Record) bool { return r.Attempt == 2 })
	})
	stopped := second.StopFiring() // while attempt 3 waits out its backoff
	drain, cancel := context.WithTimeout(ctx, 5*time.Second)
	b.r.WaitIdle(drain, second)
	cancel()
	if calls := tasks.called(); len(calls) != 1 {
		t.Errorf("%d calls by the term that stopped firing, want 1 (the early slot's attempt 2): the late slot started in the drain", len(calls))
	}

	handOverNow(t, b, second, stopped)
	waitUntil(t, "both slots run", func() bool {
		n := 0
		for _, r := range records(t, b, j.ID) {
			if r.State == observability.OutcomeSuccess {
				n++
			}
		}
		return n == 2
	})
	type attempt struct {
		slot string
		n    int
	}
	var got []attempt
	for _, c := range tasks.called() {
		got = append(got, attempt{c.Info.ScheduledTime.UTC().Format(time.TimeOnly), c.Info.Attempt})
	}
	lateAttempt := 1
	if redelivered {
		lateAttempt = 2
	}
	want := []attempt{{early.Format(time.TimeOnly), 2}, {early.Format(time.TimeOnly), 3}, {late.Format(time.TimeOnly), lateAttempt}}
	if !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v: the job's slots in slot order", got, want)
	}
}

// Attack 25, W13, the late runs of a hand-over: a term that stops firing
// while the slots a hand-over held back run late, and a slot its scheduler
// fired waits behind them, starts neither the held-back slots not started
// nor that slot. The next leader runs the held-back ones late, in slot
// order, and decides the fired one as held back with the drain's (the mark
// holds the shard's slots back from it, as for a slot given up while it
// waited out its jitter): a late run of the previous term was running at
// its time, so under forbid it is recorded overlap, not run, and not
// recorded misfire.
func TestStopDuringLateRunsStartsNoneOfTheRest(t *testing.T) {
	b, tasks, _ := setupSlow(t)
	j, held, onTime, second := heldBackSixSlots(t, b) // 5.4 s of late runs
	ctx := context.Background()
	b.r.Fire(runner.Slot{Job: j, Time: onTime})
	second.StopFiring()
	begun := len(tasks.called())
	if begun >= len(held)-1 {
		t.Fatalf("the held-back slots' %d late runs were nearly over (%d calls) when firing stopped: nothing to test", len(held), begun)
	}
	drain, cancel := context.WithTimeout(ctx, 15*time.Second)
	b.r.WaitIdle(drain, second)
	cancel()
	// One call may come after: a slot whose claim was marked started
	// before firing stopped.
	if n := len(tasks.called()); n > begun+1 {
		t.Errorf("%d slots started after firing stopped, want none", n-begun)
	}

	// The mark a real hand-over writes holds the shard's slots back from
	// the slot fired and given up (runLate's Term.HoldBack, then coord's
	// heldFrom), not from when firing stopped: written so here.
	third := handOverNow(t, b, second, onTime)
	want := append(slices.Clone([]time.Time(held)), onTime)
	waitUntil(t, "every slot decided", func() bool {
		got := decidedSlots(t, b, j.ID)
		return !slices.ContainsFunc(want, func(s time.Time) bool { _, ok := got[s]; return !ok })
	})
	got := decidedSlots(t, b, j.ID)
	for _, s := range held {
		if rec := got[s]; rec.State != observability.OutcomeSuccess {
			t.Errorf("held-back slot %s: %s %s %q; want run late", s.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error)
		}
	}
	if rec := got[onTime]; rec.FencingToken != third.Token || rec.State != "skipped" || rec.Reason != runner.SkipOverlap {
		t.Errorf("slot %s, fired while the late runs went: %s %s %q under token %d; want decided by the next leader (token %d) as held back: skipped overlap",
			onTime.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error, rec.FencingToken, third.Token)
	}
	var ran []time.Time
	for _, c := range tasks.called() {
		ran = append(ran, c.Info.ScheduledTime.UTC())
	}
	if !slices.Equal(ran, []time.Time(held)) {
		t.Errorf("ran %v, want each held-back slot once, in slot order: %v", ran, held)
	}
}

// Attack 28, F2: after two graceful hand-overs in a row, the third leader
// ran the late slots the second had claimed queued and not started, and
// a slot its scheduler fired meanwhile was skipped as an overlap,
// "previous run still running": lost, where slots held back by a single
// hand-over run after the late runs. Queued slots a hand-over left are late
// slots too: a slot fired while they run runs after them.
func TestSlotFiredWhileHandedOverQueuedSlotsRunRunsAfterThem(t *testing.T) {
	b, tasks, j, slots, first := missedSixSlots(t)
	ctx := context.Background()
	missed := slots[1:] // claimed by the second term's catch-up, all but the first queued
	second := failover(t, b, first)
	<-tasks.started
	stopped := second.StopFiring() // the second term hands the shard over
	tasks.step <- struct{}{}
	drain, cancel := context.WithTimeout(ctx, 5*time.Second)
	b.r.WaitIdle(drain, second)
	cancel()

	third := handOverNow(t, b, second, stopped)
	if s := <-tasks.started; !s.Equal(missed[1]) {
		t.Fatalf("the third term started slot %s first, want the first queued one, %s", s.Format(time.TimeOnly), missed[1].Format(time.TimeOnly))
	}
	fired := time.Now().UTC().Truncate(time.Millisecond) // due in the third term, while the queued slots run
	if !fired.After(third.Since) {
		t.Fatalf("slot %v not after the third term's start %v", fired, third.Since)
	}
	b.r.Fire(runner.Slot{Job: j, Time: fired})
	close(tasks.step)
	waitUntil(t, "the fired slot decided", func() bool { _, ok := decidedSlots(t, b, j.ID)[fired]; return ok })
	if rec := decidedSlots(t, b, j.ID)[fired]; rec.State != observability.OutcomeSuccess {
		t.Fatalf("the slot fired while the queued slots ran: %s %s %q; want run after them", rec.State, rec.Reason, rec.Error)
	}
	var ran []time.Time
	for _, c := range tasks.called() {
		ran = append(ran, c.Info.ScheduledTime.UTC())
	}
	if want := append(slices.Clone(missed), fired); !slices.Equal(ran, want) {
		t.Errorf("ran %v, want the missed slots in slot order, then the fired one: %v", ran, want)
	}
}
