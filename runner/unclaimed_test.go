package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
)

// slotList is a schedule of the given slots only, ascending.
type slotList []time.Time

func (l slotList) Next(t time.Time) time.Time {
	for _, s := range l {
		if s.After(t) {
			return s
		}
	}
	return time.Time{}
}

// secondsUntil is a slot every second from now+from (from < 0) until
// before now.
func secondsUntil(now time.Time, from time.Duration) slotList {
	var slots slotList
	for s := now.Add(from); s.Before(now); s = s.Add(time.Second) {
		slots = append(slots, s)
	}
	return slots
}

// putHandOver writes the mark a hand-over of shard 0 by the term first
// leaves: it stopped firing at stopped and resigned at resigned.
func (b *bundle) putHandOver(t *testing.T, first *coord.Term, stopped, resigned time.Time) {
	t.Helper()
	mark, _ := json.Marshal(coord.HandOver{Shard: 0, Node: "n1", FencingToken: first.Token, FiringStopped: stopped, Resigned: resigned})
	if _, err := b.admin.Put(context.Background(), "/pacer/t/handovers/0", string(mark)); err != nil {
		t.Fatal(err)
	}
}

// ranSlots is the set of slots the calls ran.
func ranSlots(calls []pluginhost.Call) map[time.Time]bool {
	ran := map[time.Time]bool{}
	for _, c := range calls {
		ran[c.Info.ScheduledTime.UTC()] = true
	}
	return ran
}

// failover ends the bundle's term as when its replica stops answering
// past the TTL (its lease goes); the coordinator leads again under a new
// token, and the runner catches up. It returns the new term.
func failover(t *testing.T, b *bundle, first *coord.Term) *coord.Term {
	t.Helper()
	ctx := context.Background()
	resp, err := b.admin.Get(ctx, "/pacer/t/leader/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("election keys: %v, %v", resp, err)
	}
	if _, err := b.admin.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	<-first.Context().Done()
	var second *coord.Term
	waitUntil(t, "a new term", func() bool { second = b.coord.Term(); return second != nil && second.Token != first.Token })
	return b.waitLeader(t) // and its catch-up done
}

// Attack 9, finding 1: a job never claimed (a one-off, or a job whose
// first slot is due) whose slot came due while no replica ran it, since a
// leader first had it, gets its misfire policy like any other job: run
// late within grace, else a skip record naming who did not claim it. Before,
// a catch-up counted missed slots only from a job's last claim, and such a
// slot was lost without a run or a record. A job no earlier leader had
// catches up nothing: none of its slots came due for a leader.
func TestCatchUpDecidesTheSlotOfAJobNeverClaimed(t *testing.T) {
	b, tasks := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	at := now.Add(-5 * time.Second)
	oneOff := func(id, policy string) *runner.Job {
		spec := "at: " + at.Format(time.RFC3339)
		s, err := schedule.Parse(spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &runner.Job{ID: id, Plugin: "p", Task: "t", Schedule: s, Spec: spec, Timeout: time.Minute,
			Misfire: runner.Misfire{Policy: policy, Grace: time.Hour}}
	}
	run, skip, added := oneOff("once-run", runner.MisfireOnce), oneOff("once-skip", runner.MisfireSkip), oneOff("added", runner.MisfireAll)
	// The first term had the two one-offs since 10 s ago, and was gone
	// (killed) before their time; "added" comes with the new term only.
	if err := b.coord.RecordEpoch(ctx, first, runner.JobSetOf([]*runner.Job{run, skip}, 1), now.Add(-10*time.Second)); err != nil {
		t.Fatal(err)
	}
	b.r.SetJobs([]*runner.Job{run, skip, added})
	failover(t, b, first)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b.r.Stop(stop)

	if calls := tasks.called(); len(calls) != 1 || calls[0].Info.JobID != "once-run" || !calls[0].Info.ScheduledTime.Equal(at) {
		t.Errorf("runs %+v, want one: once-run's slot %s, late", calls, at.Format(time.TimeOnly))
	}
	recs := records(t, b, "once-skip")
	want := "not claimed: n1 (fencing token " + fmt.Sprint(first.Token) + ")"
	if len(recs) != 1 || recs[0].State != "skipped" || recs[0].Reason != runner.SkipMisfire ||
		!recs[0].ScheduledTime.Equal(at) || !strings.Contains(recs[0].Error, want) {
		t.Errorf("once-skip's records %+v, want one misfire skip of %s saying %q", recs, at.Format(time.TimeOnly), want)
	}
	if recs := records(t, b, "added"); len(recs) != 0 {
		t.Errorf("a job added after its one-off time has records %+v: it caught up a slot from before it existed", recs)
	}
	// Each decision is marked in the job's claims: the next leader does
	// not decide it again.
	for _, id := range []string{"once-run", "once-skip"} {
		jc, err := b.coord.JobClaims(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := jc.Last(time.Time{}); !got.Equal(at) {
			t.Errorf("%s's claims are decided through %s, want its slot %s", id, got, at)
		}
	}
}

// Attack 9, finding 2: a lone replica stopped gracefully has no successor
// within a lease TTL; it takes its own hand-over mark when it leads again,
// later. The slots its drain held back (from when it stopped firing to its
// resignation) run late whatever the misfire policy; those after it came
// due while nobody led, and get the policy. Before, the mark was ignored
// as too old, and the drain's slots were skipped under "skip".
func TestLateTakenHandOverHoldsBackTheDrainsSlots(t *testing.T) {
	b, tasks := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots := secondsUntil(now, -29*time.Second)
	j := &runner.Job{ID: "drained", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: every second until now", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	if err := b.coord.Claim(ctx, first, j.ID, now.Add(-30*time.Second), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// The mark the first term's hand-over left: it stopped firing 25 s ago
	// and resigned 20 s ago, longer than a lease TTL (and the request
	// timeout) before the next term.
	stopped, resigned := now.Add(-25*time.Second), now.Add(-20*time.Second)
	b.putHandOver(t, first, stopped, resigned)
	failover(t, b, first)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, b.coord.Term())

	ran := ranSlots(tasks.called())
	for _, s := range slots {
		if held := !s.Before(stopped) && !s.After(resigned); held != ran[s] {
			t.Errorf("slot %s (held back by the drain: %v) ran: %v", s.Format(time.TimeOnly), held, ran[s])
		}
	}
	skipped := 0
	for _, rec := range records(t, b, j.ID) {
		if rec.State == "skipped" && rec.Reason == runner.SkipMisfire {
			skipped += max(rec.Slots, 1)
		}
	}
	if want := len(slots) - 6; skipped != want {
		t.Errorf("%d slots recorded skipped as misfires, want %d (those before the drain and after it)", skipped, want)
	}
}

// slowTasks is scripted whose every task takes d.
type slowTasks struct {
	*scripted
	d time.Duration
}

func (s slowTasks) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
	}
	return s.scripted.Run(ctx, c)
}

// Attack 10, F7: after a graceful hand-over, the slots held back of an
// overlap-forbid job are decided as one leader would have: those due while
// the attempt the hand-over drained was running are recorded as overlaps,
// and of the others, run late one after the other, a slot that the late
// run of an earlier one would still have overlapped (had it started at
// that one's time) is recorded as an overlap too. Before, every held-back
// slot ran late, back to back.
func TestHeldBackSlotsOfAForbidJobKeepTheOverlapPolicy(t *testing.T) {
	b, tasks, took := setupSlow(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots := secondsUntil(now, -20*time.Second)
	j := &runner.Job{ID: "long", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: every second until now", Timeout: time.Minute,
		Overlap: runner.OverlapForbid, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	// The first term ran slot -20 s until -4.5 s: it stopped firing at
	// -19.5 s and drained that attempt, wrote its record, then its mark.
	drained := runner.Record{Job: j.ID, ScheduledTime: slots[0], RunID: "drained", Node: "n1", FencingToken: first.Token,
		State: "success", Start: slots[0], End: now.Add(-4500 * time.Millisecond)}
	rec, _ := json.Marshal(drained)
	if err := b.coord.Claim(ctx, first, j.ID, slots[0], []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, first, j.ID, slots[0], drained.RunID, rec, time.Time{}, 100, 0); err != nil {
		t.Fatal(err)
	}
	stopped := now.Add(-19500 * time.Millisecond)
	b.putHandOver(t, first, stopped, time.Now())
	failover(t, b, first)

	decided := func() map[time.Time]runner.Record { return decidedSlots(t, b, j.ID) }
	waitUntil(t, "every held-back slot decided", func() bool { return len(decided()) == len(slots) })
	got := decided()
	var ran []time.Time
	for _, s := range slots[1:] {
		rec := got[s]
		switch {
		case s.Before(drained.End):
			if rec.State != "skipped" || rec.Reason != runner.SkipOverlap || !strings.Contains(rec.Error, "hand-over") {
				t.Errorf("slot %s, due while the drained attempt ran: %s %s %q, want skipped overlap naming the hand-over",
					s.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error)
			}
		case rec.State == "skipped":
			if rec.Reason != runner.SkipOverlap || len(ran) == 0 || !s.Before(ran[len(ran)-1].Add(took)) {
				t.Errorf("slot %s: skipped %s %q, though no late run would have overlapped it", s.Format(time.TimeOnly), rec.Reason, rec.Error)
			}
		default:
			if len(ran) > 0 && s.Before(ran[len(ran)-1].Add(took)) {
				t.Errorf("slot %s ran late, though the late run of %s would still have been running at its time",
					s.Format(time.TimeOnly), ran[len(ran)-1].Format(time.TimeOnly))
			}
			ran = append(ran, s)
		}
	}
	if len(ran) == 0 || !ran[0].Equal(now.Add(-4*time.Second)) {
		t.Errorf("ran late %v, want the first slot after the drained attempt (%s) first", ran, now.Add(-4*time.Second).Format(time.TimeOnly))
	}
	if calls := tasks.called(); len(calls) != len(ran) {
		t.Errorf("%d task calls, want %d", len(calls), len(ran))
	}
}

// Attack 10, F7: a slot claimed to run late behind earlier ones, that its
// leader never started before losing leadership, is recorded as never
// started; one cut off while it ran, as lost before finishing.
func TestUnstartedQueuedClaimIsRecordedAsNotStarted(t *testing.T) {
	b, tasks := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots := slotList{now.Add(-3 * time.Second), now.Add(-2 * time.Second)}
	j := &runner.Job{ID: "q", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: two slots", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	for i, s := range slots {
		c, _ := json.Marshal(runner.Record{Job: j.ID, ScheduledTime: s, RunID: fmt.Sprint("r", i), Node: "n1", FencingToken: first.Token,
			Attempt: 1, State: "running", Start: s, Queued: i == 1})
		if err := b.coord.Claim(ctx, first, j.ID, s, c); err != nil {
			t.Fatal(err)
		}
	}
	failover(t, b, first)
	waitUntil(t, "both claims decided", func() bool { return len(records(t, b, j.ID)) == 2 })
	for _, rec := range records(t, b, j.ID) {
		want := "lost leadership before finishing"
		if rec.ScheduledTime.Equal(slots[1]) {
			want = "not started before it lost leadership"
		}
		if rec.State != "skipped" || rec.Reason != runner.SkipLockLost || !strings.Contains(rec.Error, want) {
			t.Errorf("slot %s: %s %s %q, want skipped lock_lost saying %q", rec.ScheduledTime.Format(time.TimeOnly), rec.State, rec.Reason, rec.Error, want)
		}
	}
	if calls := tasks.called(); len(calls) != 0 {
		t.Errorf("ran %d slots, want none (at-most-once)", len(calls))
	}
}

// Attack 28, F5: an at-most-once slot whose leader died while a retry
// waited out its backoff: the claim names the attempt that failed, whose
// record is stored. The next leader records the retry as lost (attempt 2,
// "retry … not run"), not the failed attempt as cut ("lost leadership
// before finishing"), which it records only for a claim whose attempt has
// no record. Neither runs.
func TestRetryLostWithItsLeaderIsRecordedAsTheRetry(t *testing.T) {
	b, tasks := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots := slotList{now.Add(-3 * time.Second), now.Add(-2 * time.Second)}
	j := &runner.Job{ID: "r", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: two slots", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireSkip}, Retries: runner.Retries{Max: 3, InitialBackoff: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	for i, s := range slots {
		run := fmt.Sprint("r", i)
		c, _ := json.Marshal(runner.Record{Job: j.ID, ScheduledTime: s, RunID: run, Node: "n1", FencingToken: first.Token,
			Attempt: 1, State: "running", Start: s})
		if err := b.coord.Claim(ctx, first, j.ID, s, c); err != nil {
			t.Fatal(err)
		}
		if i == 0 { // its attempt failed, and its retry waited
			failed, _ := json.Marshal(runner.Record{Job: j.ID, ScheduledTime: s, RunID: run, Node: "n1", FencingToken: first.Token,
				Attempt: 1, State: "failure", Start: s, End: s.Add(time.Millisecond), Error: "boom"})
			if err := b.coord.RecordRun(ctx, first, j.ID, run, failed, 100, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
	}
	failover(t, b, first)
	lost := func() []runner.Record {
		var out []runner.Record
		for _, rec := range records(t, b, j.ID) {
			if rec.Reason == runner.SkipLockLost {
				out = append(out, rec)
			}
		}
		return out
	}
	waitUntil(t, "both claims decided", func() bool { return len(lost()) == 2 })
	for _, rec := range lost() {
		want, attempt := "retry (attempt 2) of a failed attempt", 2
		if rec.ScheduledTime.Equal(slots[1]) {
			want, attempt = "lost leadership before finishing", 1
		}
		if cut := rec.ScheduledTime.Equal(slots[1]); cut && rec.RunID != "r1" || !cut && rec.RunID == "r0" {
			// attack 31, M2: the cut attempt's record is under its run ID
			t.Errorf("slot %s: run ID %s; want the cut attempt's (r1), or a new one for the retry not run", rec.ScheduledTime.Format(time.TimeOnly), rec.RunID)
		}
		if rec.State != "skipped" || !strings.Contains(rec.Error, want) || rec.Attempt != attempt {
			t.Errorf("slot %s: %s %s attempt %d %q, want skipped lock_lost, attempt %d, saying %q", rec.ScheduledTime.Format(time.TimeOnly),
				rec.State, rec.Reason, rec.Attempt, rec.Error, attempt, want)
		}
	}
	if calls := tasks.called(); len(calls) != 0 {
		t.Errorf("ran %d slots, want none (at-most-once)", len(calls))
	}
}

// Attack 20, Q2: the slots a hand-over held back run late, one after the
// other; a slot the scheduler fired while they ran was skipped as an
// overlap, "previous run still running", though on one leader the job
// never overlapped (each run is shorter than the interval). It now runs
// after them, unless the late run of an earlier slot, taken from its own
// time, would have covered it.
//
// (Under overlap allow the held-back slots no longer run one after the
// other, and a slot fired meanwhile is decided by max_concurrency, as on one
// leader: TestLateSlotsOfAnAllowJobRunAtOnceUpToMaxConcurrency. Attack 21's
// S2, the allow variant of this test, queued it behind them.)
func TestSlotFiredWhileHeldBackSlotsRunLateRunsAfterThem(t *testing.T) {
	// Runs of 0.75 s: a late run measured over a second (0.9 s of task
	// and the machine's load) covered the next held-back slot, which was
	// then rightly skipped (once, in the whole suite at load 8).
	b, tasks, took := setupSlowFor(t, 750*time.Millisecond)
	j, held, onTime, _ := heldBackSixSlots(t, b)
	if n := len(tasks.called()); n >= len(held) {
		t.Fatalf("the held-back slots' %d late runs of %s each were over (%d calls) when the slot came due: nothing to test", len(held), took, n)
	}
	b.r.Fire(runner.Slot{Job: j, Time: onTime})
	waitUntil(t, "the slot decided", func() bool {
		return slices.ContainsFunc(records(t, b, j.ID), func(r runner.Record) bool { return r.ScheduledTime.Equal(onTime) })
	})
	for _, r := range records(t, b, j.ID) {
		if r.State != observability.OutcomeSuccess {
			t.Errorf("slot %s: %s %s %q; want every slot run (held back late, then the one fired meanwhile)", r.ScheduledTime.Format(time.TimeOnly), r.State, r.Reason, r.Error)
		}
	}
	if n := len(tasks.called()); n != len(held)+1 {
		t.Errorf("%d task calls, want %d", n, len(held)+1)
	}
}

// heldBackSixSlots sets up a forbid job, misfire skip, whose slots every
// second from -6 s to -1 s a hand-over held back: the first term ran slot
// -7 s, 0.1 s long, stopped firing at -6.5 s and resigned now; the next
// term has started. It returns the job, the held-back slots, a slot due 4 s
// from now (after the new term's start, while their late runs go), and the
// new term, once that slot's time has come (as the scheduler fires it).
func heldBackSixSlots(t *testing.T, b *bundle) (*runner.Job, []time.Time, time.Time, *coord.Term) {
	t.Helper()
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	held := secondsUntil(now, -6*time.Second)
	onTime := now.Add(4 * time.Second)
	j := &runner.Job{ID: "short", Plugin: "p", Task: "t", Schedule: append(slotList{now.Add(-7 * time.Second)}, append(held, onTime, now.Add(time.Hour))...),
		Spec: "test: every second", Timeout: time.Minute, Overlap: runner.OverlapForbid, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	last := now.Add(-7 * time.Second)
	drained := runner.Record{Job: j.ID, ScheduledTime: last, RunID: "drained", Node: "n1", FencingToken: first.Token,
		State: "success", Start: last, End: last.Add(100 * time.Millisecond)}
	rec, _ := json.Marshal(drained)
	if err := b.coord.Claim(ctx, first, j.ID, last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, first, j.ID, last, drained.RunID, rec, time.Time{}, 100, 0); err != nil {
		t.Fatal(err)
	}
	b.putHandOver(t, first, now.Add(-6500*time.Millisecond), time.Now())
	second := failover(t, b, first)
	if !second.Since.Before(onTime) {
		t.Fatalf("the new term started at %s, after the slot meant to come due in it (%s)", second.Since.Format(time.TimeOnly), onTime.Format(time.TimeOnly))
	}
	for time.Now().Before(onTime) {
		time.Sleep(10 * time.Millisecond)
	}
	return j, held, onTime, second
}

// setupSlow is setup with a runner whose tasks each take took (0.9 s,
// shorter than the one-second interval of the tests' slots).
func setupSlow(t *testing.T) (*bundle, slowTasks, time.Duration) {
	t.Helper()
	return setupSlowFor(t, 900*time.Millisecond)
}

// setupSlowFor is setupSlow with tasks that each take took.
func setupSlowFor(t *testing.T, took time.Duration) (*bundle, slowTasks, time.Duration) {
	t.Helper()
	b := setup(t)
	tasks := slowTasks{&scripted{}, took}
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	return b, tasks, took
}
