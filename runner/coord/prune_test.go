package coord_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// runID is a run ID whose UUIDv7 time prefix is at's millisecond, so that
// key order is time order as with real run IDs; n tells apart the IDs of
// one millisecond.
func runID(at time.Time, n int) string {
	ms := at.UnixMilli()
	return fmt.Sprintf("%08x-%04x-7000-8000-%012x", ms>>16, ms&0xffff, n)
}

// records returns the job's records (each one's value is its run ID),
// oldest first.
func records(t *testing.T, c *coord.Coordinator, job string) []string {
	t.Helper()
	vs, err := c.Runs(context.Background(), job, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vs {
		out = append(out, string(v))
	}
	slices.Reverse(out)
	return out
}

// A job keeps its newest keep records: each write that is due to prune
// (every one for keep below 20) removes the oldest beyond keep, whether or
// not a maximum age is set.
func TestRecordsKeepTheNewest(t *testing.T) {
	r := setup(t).replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	now := time.Now()
	for _, maxAge := range []time.Duration{0, time.Hour} {
		job := fmt.Sprintf("job-%d", maxAge/time.Hour)
		var ids []string
		for i := range 12 {
			id := runID(now, i)
			ids = append(ids, id)
			if err := r.c.RecordRun(context.Background(), term, job, id, []byte(id), 5, maxAge); err != nil {
				t.Fatal(err)
			}
			if got := records(t, r.c, job); len(got) > 5 {
				t.Fatalf("max age %s: %d records after write %d, want at most keep (5): %v", maxAge, len(got), i, got)
			}
		}
		if got, want := records(t, r.c, job), ids[len(ids)-5:]; !slices.Equal(got, want) {
			t.Errorf("max age %s: records %v, want the newest five %v", maxAge, got, want)
		}
	}
}

// Records older than the maximum age go at the next prune, before keep is
// counted: the rest are then trimmed to keep, the newest kept.
func TestRecordsOlderThanMaxAgeGo(t *testing.T) {
	r := setup(t).replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	now := time.Now()
	write := func(id string, keep int, maxAge time.Duration) {
		t.Helper()
		if err := r.c.RecordRun(context.Background(), term, "job", id, []byte(id), keep, maxAge); err != nil {
			t.Fatal(err)
		}
	}
	// Written without limits (keep 0 prunes every 100 writes only): four
	// records two hours old and five of now.
	var fresh []string
	for i := range 4 {
		write(runID(now.Add(-2*time.Hour), i), 0, 0)
	}
	for i := range 5 {
		id := runID(now, i)
		fresh = append(fresh, id)
		write(id, 0, 0)
	}
	if got := records(t, r.c, "job"); len(got) != 9 {
		t.Fatalf("%d records before the limits, want 9: %v", len(got), got)
	}
	// A write with a maximum age of an hour and keep 3 (due to prune):
	// the four old ones go by age, then the six left are trimmed to three.
	last := runID(now, 5)
	write(last, 3, time.Hour)
	if got, want := records(t, r.c, "job"), append(fresh[3:], last); !slices.Equal(got, want) {
		t.Errorf("records %v, want the newest three %v", got, want)
	}

	// With only a maximum age: old records go, however few there are.
	write(runID(now.Add(-3*time.Hour), 0), 0, 0) // written, too old
	write(runID(now, 6), 10, time.Hour)          // keep 10: due every write
	if got := records(t, r.c, "job"); !slices.Equal(got, append(append(fresh[3:], last), runID(now, 6))) {
		t.Errorf("records %v: the record three hours old is still there, or a recent one went", got)
	}
}
