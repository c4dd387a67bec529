package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
)

// notInJobSet returns the slots of job's records with reason
// not_in_job_set, counting how many records each has.
func notInJobSet(t *testing.T, b *bundle, job string) map[time.Time]int {
	t.Helper()
	out := map[time.Time]int{}
	for _, rec := range records(t, b, job) {
		if rec.State == "skipped" && rec.Reason == runner.SkipNotInJobSet {
			out[rec.ScheduledTime.UTC()]++
		}
	}
	return out
}

// checkNotInJobSet checks that job's slots in want each have one
// not_in_job_set record, and that no other slot before until has one (it
// ran, was decided otherwise, or came before the look's window).
func checkNotInJobSet(t *testing.T, b *bundle, job, when string, base, until time.Time, want []time.Time) {
	t.Helper()
	got := notInJobSet(t, b, job)
	for _, rec := range records(t, b, job) { // attack 31, M1: they had none
		if rec.State == "skipped" && rec.CorrelationID == "" {
			t.Errorf("%s: the %s record of slot +%s has no correlation ID", when, rec.Reason, rec.ScheduledTime.Sub(base))
		}
	}
	for _, s := range want {
		if got[s] != 1 {
			t.Errorf("%s: slot +%s has %d not_in_job_set records, want 1", when, s.Sub(base), got[s])
		}
	}
	for s, n := range got {
		if !slices.ContainsFunc(want, s.Equal) && s.Before(until) {
			t.Errorf("%s: slot +%s has %d not_in_job_set records, want none (it ran, was decided, or is not %s's to record)", when, s.Sub(base), n, job)
		}
	}
}

// A leader that had a job defined otherwise for a while (a rolling update's
// first step, an edit undone within job_set_settle) fired the job's slots
// as it defined them, and later slots were claimed after: the slots of the
// job as this replica defines it that came due meanwhile lie before the
// job's last claim. The next leader's catch-up records each of them as
// not_in_job_set, marked decided (a second catch-up records none again),
// and not the slots that were run. Before, it looked only after the last
// claim, and they had neither a run nor a record.
func TestCatchUpRecordsSlotsADivergedLeaderLeftBeforeItsLaterClaims(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	x := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(2 * time.Second), Spec: "@every 2s",
		Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{x})
	other := *x
	other.Spec, other.Schedule = "@every 3s", schedule.Every(3*time.Second)
	with := runner.JobSetOf([]*runner.Job{x}, 1)
	differently := runner.JobSetOf([]*runner.Job{&other}, 1)

	// base is 6-second aligned: both schedules have a slot there.
	base := time.Unix(time.Now().Add(-90*time.Second).Unix()/6*6, 0).UTC()
	for _, e := range []struct {
		set coord.JobSet
		at  time.Duration
	}{{with, 0}, {differently, 20 * time.Second}, {with, 32 * time.Second}} {
		if err := b.coord.RecordEpoch(ctx, term, e.set, base.Add(e.at)); err != nil {
			t.Fatal(err)
		}
	}
	// What the leaders of the time claimed and finished: x as defined here
	// until +20 s, every 3 s until +32 s, every 2 s again until +36 s.
	var claimed []time.Time
	for s := base; s.Before(base.Add(20 * time.Second)); s = s.Add(2 * time.Second) {
		claimed = append(claimed, s)
	}
	for s := base.Add(21 * time.Second); s.Before(base.Add(32 * time.Second)); s = s.Add(3 * time.Second) {
		claimed = append(claimed, s)
	}
	for s := base.Add(32 * time.Second); !s.After(base.Add(36 * time.Second)); s = s.Add(2 * time.Second) {
		claimed = append(claimed, s)
	}
	for _, s := range claimed {
		if err := b.coord.Claim(ctx, term, "x", s, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := b.coord.CloseSlot(ctx, term, "x", s); err != nil {
			t.Fatal(err)
		}
	}
	b.r.CatchUp(term)

	// x's slots from +20 s to +32 s that the 3-second leader did not run.
	want := []time.Time{base.Add(20 * time.Second), base.Add(22 * time.Second), base.Add(26 * time.Second), base.Add(28 * time.Second)}
	check := func(when string) {
		t.Helper()
		checkNotInJobSet(t, b, "x", when, base, base.Add(36*time.Second), want)
	}
	check("after the catch-up")
	jc, err := b.coord.JobClaims(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range want {
		if !slices.ContainsFunc(jc.Slots, s.Equal) && !s.Before(jc.Floor) && !s.Equal(jc.Floor) {
			t.Errorf("slot +%s recorded but not decided in the claim key (floor +%s, slots %v)", s.Sub(base), jc.Floor.Sub(base), jc.Slots)
		}
	}
	b.r.CatchUp(term) // a later leader's look: the slots are decided
	check("after a second catch-up")
	if n := len(tasks.called()); n != 0 {
		t.Errorf("%d slots ran, want none (misfire skip; the others not in the job set)", n)
	}
}

// A slot of a job added by a rolling reload, due as the shard passed from
// a leader that had the job (a step-down hand-over's gap, a failover's
// TTL) to one that got the job only later: the leader that took the shard
// had no catch-up for the job, and once it got the job and claimed later
// slots, no catch-up looked after the job's last claim at it. The next
// catch-up records it misfire (not run late, though the policy is all:
// later slots have run), once, marked decided, and the slots the leader
// without the job led not_in_job_set. Slots before a later decided one
// (here 6 and 8, coalesced into the record whose latest slot, 10, is
// marked) were decided: they get nothing. Attack 30, F1: before, the gap's
// slots had no run and no record.
func TestSlotDueAsTheShardPassedToALeaderWithoutTheJobIsRecorded(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	x := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(2 * time.Second), Spec: "@every 2s",
		Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	keep := &runner.Job{ID: "keep", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Spec: "@every 1h", Timeout: time.Minute}
	b.r.SetJobs([]*runner.Job{x, keep})
	with, without := runner.JobSetOf([]*runner.Job{x, keep}, 1), runner.JobSetOf([]*runner.Job{keep}, 1)

	// A leader with x from +0; the shard passed at +15 s to one without
	// it, which got x at +21 s and claimed its slots from +22 s to +40 s.
	base := time.Unix(time.Now().Add(-43*time.Second).Unix()/2*2, 0).UTC()
	for _, e := range []struct {
		set coord.JobSet
		at  time.Duration
	}{{with, 0}, {without, 15 * time.Second}, {with, 21 * time.Second}} {
		if err := b.coord.RecordEpoch(ctx, term, e.set, base.Add(e.at)); err != nil {
			t.Fatal(err)
		}
	}
	claimed := []time.Duration{0, 2 * time.Second, 4 * time.Second, 10 * time.Second}
	for at := 22 * time.Second; at <= 40*time.Second; at += 2 * time.Second {
		claimed = append(claimed, at)
	}
	for _, at := range claimed {
		if err := b.coord.Claim(ctx, term, "x", base.Add(at), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := b.coord.CloseSlot(ctx, term, "x", base.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	until := base.Add(40 * time.Second)
	gap := []time.Time{base.Add(12 * time.Second), base.Add(14 * time.Second)}
	check := func(when string) {
		t.Helper()
		checkNotInJobSet(t, b, "x", when, base, until,
			[]time.Time{base.Add(16 * time.Second), base.Add(18 * time.Second), base.Add(20 * time.Second)})
		misfire := map[time.Time]int{}
		for _, rec := range records(t, b, "x") {
			if rec.State == "skipped" && rec.Reason == runner.SkipMisfire && rec.ScheduledTime.Before(until) {
				misfire[rec.ScheduledTime.UTC()]++
			}
		}
		for _, s := range gap {
			if misfire[s] != 1 {
				t.Errorf("%s: slot +%s, due as the shard passed to a leader without x, has %d misfire records, want 1",
					when, s.Sub(base), misfire[s])
			}
		}
		for s, n := range misfire {
			if !slices.ContainsFunc(gap, s.Equal) {
				t.Errorf("%s: slot +%s has %d misfire records, want none (a later slot was decided)", when, s.Sub(base), n)
			}
		}
	}
	b.r.CatchUp(term)
	check("after the catch-up")
	jc, err := b.coord.JobClaims(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range gap {
		if !slices.ContainsFunc(jc.Slots, s.Equal) && s.After(jc.Floor) {
			t.Errorf("slot +%s recorded but not decided in the claim key (floor +%s, slots %v)", s.Sub(base), jc.Floor.Sub(base), jc.Slots)
		}
	}
	b.r.CatchUp(term) // a later leader's look: the slots are decided
	check("after a second catch-up")
	for _, c := range tasks.called() {
		if s := c.Info.ScheduledTime; s.Before(until) {
			t.Errorf("slot +%s ran, want no slot before the last claim run late", s.Sub(base))
		}
	}
}

// A job removed on the leader and given back within job_set_settle: the
// leader keeps its shard, and its slots that came due while the leader did
// not have the job are recorded as not_in_job_set when it comes back,
// each once, when the set given back is the cluster's (the other replicas
// kept the job). Before, they had neither a run nor a record. When the
// set given back is not the cluster's (this replica alone changes the job
// back and forth), its slots were not the cluster's: nothing is recorded.
func TestReloadGivingBackAJobRecordsTheSlotsItMissed(t *testing.T) {
	for _, clusters := range []bool{true, false} {
		t.Run(fmt.Sprintf("cluster's=%v", clusters), func(t *testing.T) { givingBack(t, clusters) })
	}
}

func givingBack(t *testing.T, clusters bool) {
	b := setup(t)
	tasks := &scripted{}
	x := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Spec: "@every 1s",
		Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	keep := &runner.Job{ID: "keep", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Spec: "@every 1h", Timeout: time.Minute}
	with := runner.JobSetOf([]*runner.Job{x, keep}, 1)
	cluster := with.Fingerprint // the others kept x
	if !clusters {
		cluster = "another"
	}
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord,
		ClusterJobSet: func() string { return cluster }})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	b.waitLeader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.r.Start(ctx)
	b.r.SetJobs([]*runner.Job{x, keep})
	ran := func() []time.Time {
		var out []time.Time
		for _, c := range tasks.called() {
			if c.Info.JobID == "x" {
				out = append(out, c.Info.ScheduledTime.UTC())
			}
		}
		return out
	}
	waitUntil(t, "x's first run", func() bool { return len(ran()) > 0 })

	without := runner.JobSetOf([]*runner.Job{keep}, 1)
	b.r.SetJobs([]*runner.Job{keep})
	waitUntil(t, "the leader's epoch without x", func() bool {
		es, err := b.coord.Epochs(ctx, 0)
		return err == nil && len(es) > 0 && es[len(es)-1].JobSet == without.Fingerprint
	})
	gone := len(ran())
	time.Sleep(2500 * time.Millisecond) // the scenario: two or more of x's slots come due while it is gone
	b.r.SetJobs([]*runner.Job{x, keep})
	waitUntil(t, "x's run after it came back", func() bool { return len(ran()) > gone })
	if !clusters {
		// The records, when made, are written before the first run
		// after the reload would start: none came.
		if got := notInJobSet(t, b, "x"); len(got) != 0 {
			t.Fatalf("%d not_in_job_set records of a definition the cluster did not have: %v", len(got), got)
		}
		return
	}
	waitUntil(t, "the records of the slots x missed", func() bool { return len(notInJobSet(t, b, "x")) >= 2 })

	runs := ran()
	slices.SortFunc(runs, time.Time.Compare)
	first, last := runs[0], runs[len(runs)-1]
	skipped := notInJobSet(t, b, "x")
	for s := first; !s.After(last); s = s.Add(time.Second) {
		n := skipped[s]
		if slices.ContainsFunc(runs, s.Equal) {
			n++
		}
		if n != 1 {
			t.Errorf("slot %s: ran %v and has %d not_in_job_set records; want one of the two, once",
				s.Format(time.TimeOnly), slices.ContainsFunc(runs, s.Equal), skipped[s])
		}
	}
}

// Attack 31, F1: the last replica of a rolling reload that adds job x,
// reloaded within job_set_settle of the cluster's switch to the set with
// x, keeps leading its shard and its term: no catch-up looks at x's slots
// due between the switch and its reload, which it did not have. The
// reload records each of them not_in_job_set, once, naming this replica;
// none from before the switch (x was not the cluster's then), and x runs
// from the reload on. Before, they had no run and no record.
func TestReloadAfterTheSwitchRecordsTheSlotsOfTheNewJob(t *testing.T) {
	b := setup(t)
	tasks := &scripted{}
	x := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Spec: "@every 1s",
		Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	keep := &runner.Job{ID: "keep", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Spec: "@every 1h", Timeout: time.Minute}
	with, without := runner.JobSetOf([]*runner.Job{x, keep}, 1), runner.JobSetOf([]*runner.Job{keep}, 1)
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord,
		ClusterJobSet: func() string { return with.Fingerprint }}) // the others have x
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	b.r.SetJobs([]*runner.Job{keep})
	term := b.waitLeader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.r.Start(ctx)

	// This leader ran the set without x from 30 s ago; the cluster
	// switched to the set with x 20 s ago.
	now := time.Now().UTC().Truncate(time.Second)
	if err := b.coord.RecordEpoch(ctx, term, without, now.Add(-30*time.Second)); err != nil {
		t.Fatal(err)
	}
	switched := now.Add(-20 * time.Second)
	if err := b.coord.NoteAgreed(ctx, coord.Agreed{JobSet: with.Fingerprint, Since: switched, Node: "b"}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	b.r.SetJobs([]*runner.Job{x, keep})
	after := time.Now()
	var want []time.Time
	for s := switched; s.Before(before); s = s.Add(time.Second) {
		want = append(want, s)
	}
	waitUntil(t, "the records of x's slots since the switch", func() bool { return len(notInJobSet(t, b, "x")) >= len(want) })
	checkNotInJobSet(t, b, "x", "after the reload", now.Add(-30*time.Second), after, want)
	waitUntil(t, "x's first run after the reload", func() bool { return len(tasks.called()) > 0 })
	for _, c := range tasks.called() {
		if s := c.Info.ScheduledTime; s.Before(before.Truncate(time.Second)) {
			t.Errorf("slot %s ran, from before the reload", s.Sub(now))
		}
	}
	for _, rec := range records(t, b, "x") {
		if rec.Reason == runner.SkipNotInJobSet && !strings.Contains(rec.Error, "n1") {
			t.Errorf("record of slot %s: %q, want it to name n1, the leader without x", rec.ScheduledTime.Sub(now), rec.Error)
		}
	}
}

// Attack 22, T4: a rolling update by restart changed job x (every 3 s to
// every 2 s). The cluster switched to the new set when the second replica
// came back with it, but the old set's leader ran x every 3 s until it
// stepped down, job_set_settle later; no leader had ever run x as the new
// set defines it, so the next leader's catch-up (which counted from when
// a leader first did) found nothing, and the slots of the new definition
// due meanwhile had neither a run nor a record. They are recorded
// not_in_job_set now, from the switch the membership recorded (Agreed),
// each once, and none before the switch.
func TestCatchUpRecordsSlotsOfANewDefinitionDueAfterTheSwitch(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	x := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(2 * time.Second), Spec: "@every 2s",
		Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	y := &runner.Job{ID: "y", Plugin: "p", Task: "t", Schedule: schedule.Every(2 * time.Second), Spec: "@every 2s",
		Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireSkip}} // unchanged: nothing to record
	b.r.SetJobs([]*runner.Job{x, y})
	old := *x
	old.Spec, old.Schedule = "@every 3s", schedule.Every(3*time.Second)
	next := runner.JobSetOf([]*runner.Job{x, y}, 1)
	before := runner.JobSetOf([]*runner.Job{&old, y}, 1)

	// base is 6-second aligned. The old set's leader led from base; the
	// cluster switched to the new set at +20 s; the old leader claimed x
	// every 3 s (and y every 2 s) through +36 s.
	base := time.Unix(time.Now().Add(-42*time.Second).Unix()/6*6, 0).UTC() // few slots after +36 s: records reads the latest
	if err := b.coord.RecordEpoch(ctx, term, before, base); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.NoteAgreed(ctx, coord.Agreed{JobSet: next.Fingerprint, Since: base.Add(20 * time.Second), Node: "b"}); err != nil {
		t.Fatal(err)
	}
	claim := func(job string, every time.Duration) {
		for s := base; !s.After(base.Add(36 * time.Second)); s = s.Add(every) {
			if err := b.coord.Claim(ctx, term, job, s, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if err := b.coord.CloseSlot(ctx, term, job, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	claim("x", 3*time.Second)
	claim("y", 2*time.Second)
	b.r.CatchUp(term)

	// x every 2 s from +20 s, less those the old leader's claims decided
	// (+24, +30, +36).
	want := []time.Time{base.Add(20 * time.Second), base.Add(22 * time.Second), base.Add(26 * time.Second),
		base.Add(28 * time.Second), base.Add(32 * time.Second), base.Add(34 * time.Second)}
	check := func(when string) {
		t.Helper()
		checkNotInJobSet(t, b, "x", when, base, base.Add(36*time.Second), want)
		if got := notInJobSet(t, b, "y"); len(got) != 0 {
			t.Errorf("%s: unchanged job y has not_in_job_set records %v", when, got)
		}
	}
	check("after the catch-up")
	b.r.CatchUp(term) // a later leader's look: the slots are decided
	check("after a second catch-up")
	if n := len(tasks.called()); n != 0 {
		t.Errorf("%d slots ran, want none", n)
	}
}
