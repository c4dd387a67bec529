package coord_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
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

// Every record a job writes counts toward its pruning, whichever call
// writes it: a job whose slots are all skipped (paused, or overlap behind
// one long attempt) writes its records with each slot's mark in the claim
// key (SkipSlot), a catch-up its skip records with its claims
// (ClaimRecording), and neither writes a run record that would prune them.
// Before the fix such a job kept one record per slot until history.max_age.
func TestRecordsWrittenWithClaimsArePruned(t *testing.T) {
	r := setup(t).replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	ctx := context.Background()
	slot0 := time.Now().Truncate(time.Second).Add(time.Hour)
	for _, tc := range []struct {
		name  string
		write func(job string, slot time.Time, id string, keep int) error
	}{
		{"SkipSlot", func(job string, slot time.Time, id string, keep int) error {
			return r.c.SkipSlot(ctx, term, job, slot, id, []byte(id), keep, time.Hour)
		}},
		{"ClaimRecording", func(job string, slot time.Time, id string, keep int) error {
			if err := r.c.ClaimRecording(ctx, term, job, slot, []byte(`{}`), id, []byte(id), keep, time.Hour); err != nil {
				return err
			}
			return r.c.CloseSlot(ctx, term, job, slot) // as the slot's run ends
		}},
	} {
		for _, keep := range []int{5, 30} { // pruned at every write; at every third
			t.Run(fmt.Sprintf("%s/keep=%d", tc.name, keep), func(t *testing.T) {
				job := fmt.Sprintf("%s-%d", tc.name, keep)
				bound := keep + keep/10
				var ids []string
				for i := range 3 * keep {
					id := runID(time.Now(), i)
					ids = append(ids, id)
					if err := tc.write(job, slot0.Add(time.Duration(i)*time.Second), id, keep); err != nil {
						t.Fatal(err)
					}
					if got := records(t, r.c, job); len(got) > bound {
						t.Fatalf("%d records after write %d, want at most keep + keep/10 (%d)", len(got), i+1, bound)
					}
				}
				got := records(t, r.c, job)
				if len(got) < keep || !slices.Equal(got, ids[len(ids)-len(got):]) {
					t.Errorf("records %v: want the newest %d to %d of those written", got, keep, bound)
				}
			})
		}
	}
}

// Records written at once are batched within etcd's request limit (1.5 MiB
// by default), whatever their size: sixty of 100 KiB all land, and one too
// large for any request is refused alone (IsRefused), not with the small
// records batched beside it.
func TestRecordBatchesStayWithinEtcdsRequestLimit(t *testing.T) {
	r := setup(t).replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	now := time.Now()
	write := func(i, size int) error {
		return r.c.RecordRun(context.Background(), term, "job", runID(now, i), bytes.Repeat([]byte("r"), size), 0, 0)
	}
	errs := make([]error, 61)
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() { errs[i] = write(i, 100<<10) })
	}
	wg.Go(func() { errs[60] = write(60, 1600<<10) })
	wg.Wait()
	for i, err := range errs[:60] {
		if err != nil {
			t.Errorf("record %d of 100 KiB: %v", i, err)
		}
	}
	if !coord.IsRefused(errs[60]) {
		t.Errorf("the record of 1.6 MiB: %v, want refused as too large", errs[60])
	}
	if got := records(t, r.c, "job"); len(got) != 60 {
		t.Errorf("%d records stored, want 60", len(got))
	}
}

// HasRun finds a job's record by its run ID, and only that job's: a
// leader that takes over an attempt an older term left running records it
// only if no record of it is there.
func TestHasRunFindsARecordByItsRunID(t *testing.T) {
	r := setup(t).replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	id := runID(time.Now(), 1)
	if err := r.c.RecordRun(context.Background(), r.c.Term(), "job", id, []byte(id), 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		job, id string
		want    bool
	}{{"job", id, true}, {"job", runID(time.Now(), 2), false}, {"other", id, false}, {"job", id[:8], false}} {
		if got, err := r.c.HasRun(context.Background(), tc.job, tc.id); err != nil || got != tc.want {
			t.Errorf("HasRun(%s, %s) = %v, %v; want %v", tc.job, tc.id, got, err, tc.want)
		}
	}
}
