package runner

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/schedule"
)

func TestSchedulerFiresDueSlotsInOrderAndReportsMisses(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	now := t0
	var fired []string
	misses := map[string]int{}
	s := NewScheduler(func(sl Slot) { fired = append(fired, sl.Job.ID+"@"+sl.Time.Format("05")) },
		func(m Missed) { misses[m.Job.ID] += m.N })
	s.now = func() time.Time { return now }
	s.Set([]*Job{
		{ID: "a", Schedule: schedule.Every(time.Second)},
		{ID: "b", Schedule: schedule.Every(2 * time.Second)},
		{ID: "once", Schedule: schedule.At(t0.Add(3 * time.Second))},
	})

	// tick advances the clock and returns what fired, sorted: slots due at
	// the same instant may fire in any order.
	tick := func(at time.Duration) []string {
		fired = nil
		now = t0.Add(at)
		s.fireDue()
		slices.Sort(fired)
		return fired
	}
	for _, tc := range []struct {
		at   time.Duration
		want []string
	}{
		{time.Second, []string{"a@01"}},
		{1500 * time.Millisecond, nil},
		{2 * time.Second, []string{"a@02", "b@02"}},
		{3 * time.Second, []string{"a@03", "once@03"}},
	} {
		if got := tick(tc.at); !slices.Equal(got, tc.want) {
			t.Fatalf("at +%v fired %v, want %v", tc.at, got, tc.want)
		}
	}

	// A stall of 10s: each job's first due slot fires, the rest are
	// reported missed.
	if got := tick(13 * time.Second); !slices.Equal(got, []string{"a@04", "b@04"}) || misses["a"] != 9 || misses["b"] != 4 {
		t.Fatalf("after a stall: fired %v, misses %v", fired, misses)
	}
	if len(s.jobs) != 2 {
		t.Fatalf("one-off job not removed after firing: %d jobs", len(s.jobs))
	}
}

// A wall clock stepped back (its monotonic clock did not) makes the
// scheduler compute next slots from the corrected time, instead of waiting
// out the step; a step within the tolerance changes nothing.
func TestSchedulerFollowsWallClockSteppedBack(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	wall, mono := t0, t0
	var fired []string
	var steps []time.Duration
	s := NewScheduler(func(sl Slot) { fired = append(fired, sl.Time.Format("15:04:05")) }, nil)
	s.now = func() time.Time { return wall }
	s.mono = func() time.Time { return mono }
	s.onStepBack = func(d time.Duration) { steps = append(steps, d) }
	s.Set([]*Job{{ID: "a", Schedule: schedule.Every(time.Second)}})

	// advance moves both clocks by d, and the wall clock by step more.
	advance := func(d, step time.Duration) time.Duration {
		fired = nil
		wall, mono = wall.Add(d+step), mono.Add(d)
		return s.fireDue()
	}
	// The clock jumps an hour ahead: the first due slot fires, the rest
	// are skipped (reported as missed when onMiss is set), and the next
	// slot is an hour on.
	advance(time.Second, time.Hour)
	if !slices.Equal(fired, []string{"12:00:01"}) || s.jobs[0].next.Format("15:04:05") != "13:00:02" {
		t.Fatalf("after the jump ahead fired %v, next %v", fired, s.jobs[0].next)
	}
	// Corrected: back by an hour. The next slot is a second after the
	// corrected time, not an hour away.
	if wait := advance(0, -time.Hour); wait > time.Second {
		t.Fatalf("after the step back the scheduler waits %s", wait)
	}
	if len(steps) != 1 || steps[0] != time.Hour {
		t.Fatalf("steps heard: %v, want [1h]", steps)
	}
	if advance(time.Second, 0); !slices.Equal(fired, []string{"12:00:02"}) {
		t.Fatalf("after the correction fired %v, want the slot at 12:00:02", fired)
	}
	// Jitter below the tolerance is no step.
	advance(time.Second, -500*time.Millisecond)
	if len(steps) != 1 {
		t.Fatalf("a 500ms slew counted as a step: %v", steps)
	}
}

// A job whose schedule has no fire time is reported, not dropped in silence:
// at Set (30 February, a one-off time that passed), and when its last slot
// fires (a one-off job).
func TestSchedulerReportsJobsThatNeverFire(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	now := t0
	feb30, err := schedule.Parse("0 0 30 2 *", nil)
	if err != nil {
		t.Fatal(err)
	}
	var reported []string
	s := NewScheduler(func(Slot) {}, nil)
	s.now = func() time.Time { return now }
	s.onNever = func(j *Job, after time.Time, fired bool) {
		reported = append(reported, fmt.Sprintf("%s@%s fired=%v", j.ID, after.Sub(t0), fired))
	}
	s.Set([]*Job{
		{ID: "feb30", Schedule: feb30},
		{ID: "past", Schedule: schedule.At(t0.Add(-time.Hour))},
		{ID: "soon", Schedule: schedule.At(t0.Add(time.Second))},
		{ID: "tick", Schedule: schedule.Every(time.Second)},
	})
	if want := []string{"feb30@0s fired=false", "past@0s fired=false"}; !slices.Equal(reported, want) {
		t.Fatalf("at Set: reported %v, want %v", reported, want)
	}
	reported = nil
	now = t0.Add(time.Second)
	s.fireDue()
	if want := []string{"soon@1s fired=true"}; !slices.Equal(reported, want) {
		t.Fatalf("after the one-off fired: reported %v, want %v", reported, want)
	}
}

// The runner logs a WARN line for each such job (INFO for a one-off job
// that fired), and the API lists it with next: never.
func TestJobThatNeverFiresIsWarnedAndListed(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer // SetJobs logs before it returns, on this goroutine
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{Node: "n1", Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Metrics: m})
	feb30, err := schedule.Parse("0 0 30 2 *", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.SetJobs([]*Job{
		{ID: "feb30", Spec: "0 0 30 2 *", Schedule: feb30},
		{ID: "past", Spec: "at: 2001-01-01T00:00:00Z", Schedule: schedule.At(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))},
		{ID: "tick", Spec: "@every 1s", Schedule: schedule.Every(time.Second)},
	})
	lines := buf.String()
	for _, want := range []string{
		`"level":"WARN","msg":"job will never fire: no date matches its schedule (next: never); fix the schedule","job":"feb30"`,
		`"level":"WARN","msg":"job will never fire: its one-off time has passed (next: never)","job":"past"`,
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("log lacks %s:\n%s", want, lines)
		}
	}
	if strings.Contains(lines, `"job":"tick"`) {
		t.Errorf("a job that fires was reported:\n%s", lines)
	}
	c := &Control{Runner: r}
	next := map[string]string{}
	for _, j := range c.Jobs() {
		next[j.ID] = j.Next
	}
	if next["feb30"] != "never" || next["past"] != "never" || next["tick"] == "never" || len(next) != 3 {
		t.Fatalf("next per job: %v", next)
	}

	// A reload that leaves them as they are does not log them again; one
	// that changes a job logs that job.
	buf.Reset()
	r.SetJobs([]*Job{
		{ID: "feb30", Spec: "0 0 30 2 *", Schedule: feb30},
		{ID: "past", Spec: "at: 2001-01-01T00:00:00Z", Schedule: schedule.At(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))},
		{ID: "tick", Spec: "@every 1s", Schedule: schedule.Every(time.Second)},
	})
	if lines := buf.String(); strings.Contains(lines, "will never fire") {
		t.Errorf("an unchanged reload logged the never-firing jobs again:\n%s", lines)
	}
	buf.Reset()
	r.SetJobs([]*Job{
		{ID: "feb30", Spec: "0 0 30 2 *", Schedule: feb30},
		{ID: "past", Spec: "at: 2002-01-01T00:00:00Z", Schedule: schedule.At(time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC))},
		{ID: "tick", Spec: "@every 1s", Schedule: schedule.Every(time.Second)},
	})
	if lines := buf.String(); strings.Contains(lines, `"job":"feb30"`) ||
		!strings.Contains(lines, `"msg":"job will never fire: its one-off time has passed (next: never)","job":"past"`) {
		t.Errorf("a reload that changed past only: want its line alone, got:\n%s", lines)
	}
}

// Add schedules jobs from an instant that may be past (the slot there is
// due at once), replacing a job of the same ID; Remove drops jobs; the
// others keep their next slots.
func TestSchedulerAddAndRemove(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	now := t0
	var fired []string
	s := NewScheduler(func(sl Slot) { fired = append(fired, sl.Job.ID+"@"+sl.Time.Format("05.000")) }, nil)
	s.now = func() time.Time { return now }
	a := &Job{ID: "a", Schedule: schedule.Every(time.Second)}
	s.Set([]*Job{a})
	tick := func(at time.Duration) []string {
		fired = nil
		now = t0.Add(at)
		s.fireDue()
		slices.Sort(fired)
		return fired
	}
	if got := tick(1500 * time.Millisecond); !slices.Equal(got, []string{"a@01.000"}) {
		t.Fatalf("fired %v", got)
	}
	// b from +1s (in the past): its slot at +1s is due at once, exactly
	// at from; c from +1.2s starts at +2s.
	b := &Job{ID: "b", Schedule: schedule.Every(time.Second)}
	c := &Job{ID: "c", Schedule: schedule.Every(time.Second)}
	s.Add([]*Job{b}, t0.Add(time.Second))
	s.Add([]*Job{c}, t0.Add(1200*time.Millisecond))
	if got := tick(1600 * time.Millisecond); !slices.Equal(got, []string{"b@01.000"}) {
		t.Fatalf("after Add: fired %v", got)
	}
	if got := tick(2 * time.Second); !slices.Equal(got, []string{"a@02.000", "b@02.000", "c@02.000"}) {
		t.Fatalf("fired %v", got)
	}
	// Adding b again replaces it (one entry, not two).
	s.Add([]*Job{b}, now)
	if s.Len() != 3 {
		t.Fatalf("%d jobs scheduled, want 3", s.Len())
	}
	s.Remove(func(j *Job) bool { return j.ID != "a" })
	if got := tick(3 * time.Second); !slices.Equal(got, []string{"a@03.000"}) || s.Len() != 1 {
		t.Fatalf("after Remove: fired %v, %d scheduled", got, s.Len())
	}
	// A job with no slot at or after from is not scheduled.
	var never []string
	s.onNever = func(j *Job, _ time.Time, _ bool) { never = append(never, j.ID) }
	s.Add([]*Job{{ID: "past", Schedule: schedule.At(t0)}}, now)
	if s.Len() != 1 || !slices.Equal(never, []string{"past"}) {
		t.Fatalf("a one-off job whose time passed: %d scheduled, never %v", s.Len(), never)
	}
}

// The slots dropped after a late fire are reported with their times, and
// whether the wall clock was stepped ahead (they are not due in true time)
// or the scheduler could not run (both clocks moved: a stall).
func TestSchedulerReportsDroppedSlotsOfAStallAndAJump(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	wall, mono := t0, t0
	var got []Missed
	s := NewScheduler(func(Slot) {}, func(m Missed) { got = append(got, m) })
	s.now = func() time.Time { return wall }
	s.mono = func() time.Time { return mono }
	s.Set([]*Job{{ID: "a", Schedule: schedule.Every(time.Second)}})
	s.fireDue()
	// A stall of 3.5 s: 12:00:01 fires late, 12:00:02 and :03 are dropped.
	wall, mono = wall.Add(3500*time.Millisecond), mono.Add(3500*time.Millisecond)
	s.fireDue()
	if len(got) != 1 || got[0].ClockJumped || got[0].N != 2 || len(got[0].Slots) != 2 ||
		!got[0].Slots[0].Equal(t0.Add(2*time.Second)) || !got[0].Slots[1].Equal(t0.Add(3*time.Second)) {
		t.Fatalf("after a stall: %+v, want slots 12:00:02 and 12:00:03, not a clock jump", got)
	}
	// The wall clock steps an hour ahead: the dropped slots are a jump's.
	got = nil
	wall, mono = wall.Add(time.Hour+time.Second), mono.Add(time.Second)
	s.fireDue()
	if len(got) != 1 || !got[0].ClockJumped || got[0].N < 3000 {
		t.Fatalf("after a jump ahead: %+v, want a clock jump of about 3,600 slots", got)
	}
}

// A one-off whose time has passed but whose slot a leader's catch-up may
// still run late (misfire not skip, within grace) is not said never to
// fire: it is told at INFO what decides it. One that no catch-up runs
// (skip, or beyond grace) keeps the WARN. Before, each got the WARN, and
// then the first ran (attack 25, W4).
func TestPassedOneOffIsNotSaidNeverToFireWhileACatchUpMayRunIt(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer // SetJobs logs before it returns, on this goroutine
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{Node: "n1", Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Metrics: m})
	at := time.Now().Add(-10 * time.Second).UTC()
	oneOff := func(id, policy string, grace time.Duration) *Job {
		return &Job{ID: id, Spec: "at: " + at.Format(time.RFC3339), Schedule: schedule.At(at), Misfire: Misfire{Policy: policy, Grace: grace}}
	}
	r.SetJobs([]*Job{
		oneOff("late-once", MisfireOnce, time.Minute),
		oneOff("late-all", MisfireAll, time.Minute),
		oneOff("late-skip", MisfireSkip, time.Minute),
		oneOff("beyond-grace", MisfireOnce, time.Second),
	})
	lines := buf.String()
	for _, id := range []string{"late-once", "late-all"} {
		want := `"level":"INFO","msg":"one-off job's time has passed; unless it ran already, a leader's catch-up decides it under the misfire policy (next: never)","job":"` + id + `"`
		if !strings.Contains(lines, want) {
			t.Errorf("log lacks %s:\n%s", want, lines)
		}
		if strings.Contains(lines, `"msg":"job will never fire: its one-off time has passed (next: never)","job":"`+id+`"`) {
			t.Errorf("%s, which a catch-up may run, was said never to fire:\n%s", id, lines)
		}
	}
	for _, id := range []string{"late-skip", "beyond-grace"} {
		want := `"level":"WARN","msg":"job will never fire: its one-off time has passed (next: never)","job":"` + id + `"`
		if !strings.Contains(lines, want) {
			t.Errorf("log lacks %s:\n%s", want, lines)
		}
	}
}
