package runner

import (
	"slices"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/schedule"
)

func TestSchedulerFiresDueSlotsInOrderAndReportsMisses(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	now := t0
	var fired []string
	misses := map[string]int{}
	s := NewScheduler(func(sl Slot) { fired = append(fired, sl.Job.ID+"@"+sl.Time.Format("05")) },
		func(j *Job, n int) { misses[j.ID] += n })
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
