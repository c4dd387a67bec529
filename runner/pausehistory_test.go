package runner_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
)

// pauseNote is a pause or resume request's note, as Control writes it.
func pauseNote(at time.Time) []byte {
	return fmt.Appendf(nil, `{"by":"test","at":%q}`, at.UTC().Format(time.RFC3339Nano))
}

// pauseBetween pauses job at from and resumes it at until, through etcd
// (the times are the requests' own, as the replica serving them wrote).
func pauseBetween(t *testing.T, b *bundle, job string, from, until time.Time) {
	t.Helper()
	for i, step := range []struct {
		paused bool
		at     time.Time
	}{{true, from}, {false, until}} {
		key := fmt.Sprint(job, "-", i)
		if _, err := b.coord.SetPaused(context.Background(), job, step.paused, pauseNote(step.at),
			coord.Idempotency{Key: key, Receipt: []byte(key)}); err != nil {
			t.Fatal(err)
		}
	}
}

// pausedWhileNobodyLed sets up a job (misfire policy, grace 1 h) due every
// second of the last ten: the first term claimed and ran the first slot,
// then died; the job was paused from -7.5 s until -4.5 s meanwhile, so the
// slots -7 s, -6 s and -5 s came due while it was paused; the next term
// has taken over. It returns the job, its slots and the paused stretch.
func pausedWhileNobodyLed(t *testing.T, b *bundle, policy string) (j *runner.Job, slots slotList, pausedFrom, resumed time.Time) {
	t.Helper()
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots = secondsUntil(now, -10*time.Second)
	j = &runner.Job{ID: "p1", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: every second until now", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: policy, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	if err := b.coord.Claim(ctx, first, j.ID, slots[0], []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, first, j.ID, slots[0], "run-0", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	pausedFrom, resumed = now.Add(-7500*time.Millisecond), now.Add(-4500*time.Millisecond)
	pauseBetween(t, b, j.ID, pausedFrom, resumed)
	failover(t, b, first)
	return j, slots, pausedFrom, resumed
}

// decidedSlots maps each slot of a job's records to its record (a skip
// record of consecutive slots, ScheduledTime to ScheduledUntil a second
// apart, to each of them).
func decidedSlots(t *testing.T, b *bundle, job string) map[time.Time]runner.Record {
	t.Helper()
	out := map[time.Time]runner.Record{}
	for _, rec := range records(t, b, job) {
		for s := rec.ScheduledTime; ; s = s.Add(time.Second) {
			out[s] = rec
			if rec.ScheduledUntil.IsZero() || !s.Before(rec.ScheduledUntil) {
				break
			}
		}
	}
	return out
}

// G4: a job paused and resumed while no replica led. The new leader's
// catch-up decides each missed slot by whether the job was paused at its
// time (its pause history), not by the flag at takeover: the slots due
// while it was paused are recorded skipped, reason paused (their claims
// marked decided, counted), and the others run by the misfire policy
// (all). Before, every missed slot within grace ran late.
func TestCatchUpSkipsSlotsDueWhileTheJobWasPaused(t *testing.T) {
	b, tasks := setupScripted(t)
	ctx := context.Background()
	j, slots, pausedFrom, resumed := pausedWhileNobodyLed(t, b, runner.MisfireAll)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, b.coord.Term())

	ran := ranSlots(tasks.called())
	got := decidedSlots(t, b, j.ID)
	npaused := 0
	for _, s := range slots[1:] {
		paused := !s.Before(pausedFrom) && s.Before(resumed)
		rec := got[s]
		switch {
		case paused:
			npaused++
			if ran[s] || rec.State != "skipped" || rec.Reason != runner.SkipPaused {
				t.Errorf("slot %s, due while the job was paused: ran %v, recorded %s %s; want skipped, reason paused, not run",
					s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
			}
		case !ran[s] || rec.State != "success":
			t.Errorf("slot %s, due while the job was active: ran %v, recorded %s %s; want run late (misfire all)",
				s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
		}
	}
	if npaused != 3 {
		t.Fatalf("%d slots in the pause, want 3", npaused)
	}
	if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(j.ID, runner.SkipPaused)); n != 3 {
		t.Errorf("pacer_job_skipped_total{reason=paused} = %v, want 3", n)
	}
	jc, err := b.coord.JobClaims(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(jc.Open) != 0 || !jc.Last(time.Time{}).Equal(slots[len(slots)-1]) {
		t.Errorf("claims: %d open, decided through %s; want none open, through the last slot %s",
			len(jc.Open), jc.Last(time.Time{}).Format(time.TimeOnly), slots[len(slots)-1].Format(time.TimeOnly))
	}
}

// G4, the hand-over variant: the slots a graceful hand-over held back run
// late whatever the misfire policy, but not those that came due while the
// job was paused, though it was resumed before the takeover: they are
// recorded skipped, reason paused. Before, they ran late.
func TestHeldBackSlotsDueWhileTheJobWasPausedDoNotRun(t *testing.T) {
	b, tasks := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	slots := secondsUntil(now, -20*time.Second)
	j := &runner.Job{ID: "p1", Plugin: "p", Task: "t", Schedule: slots, Spec: "test: every second until now", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	if err := b.coord.Claim(ctx, first, j.ID, now.Add(-21*time.Second), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// The first term stopped firing at -20.5 s and resigned at -10.5 s
	// (its drain); the job was paused from -17.5 s until -13.5 s.
	stopped, resigned := now.Add(-20500*time.Millisecond), now.Add(-10500*time.Millisecond)
	b.putHandOver(t, first, stopped, resigned)
	pausedFrom, resumed := now.Add(-17500*time.Millisecond), now.Add(-13500*time.Millisecond)
	pauseBetween(t, b, j.ID, pausedFrom, resumed)
	failover(t, b, first)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, b.coord.Term())

	ran := ranSlots(tasks.called())
	got := decidedSlots(t, b, j.ID)
	nheld, npaused := 0, 0
	for _, s := range slots {
		held := !s.Before(stopped) && !s.After(resigned)
		paused := !s.Before(pausedFrom) && s.Before(resumed)
		rec := got[s]
		switch {
		case held && paused:
			npaused++
			if ran[s] || rec.State != "skipped" || rec.Reason != runner.SkipPaused {
				t.Errorf("held-back slot %s, due while the job was paused: ran %v, recorded %s %s; want skipped, reason paused",
					s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
			}
		case held:
			nheld++
			if !ran[s] || rec.State != "success" {
				t.Errorf("held-back slot %s, due while the job was active: ran %v, recorded %s %s; want run late",
					s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
			}
		default:
			if ran[s] || rec.State != "skipped" || rec.Reason != runner.SkipMisfire {
				t.Errorf("slot %s, missed after the hand-over: ran %v, recorded %s %s; want skipped as a misfire (policy skip)",
					s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
			}
		}
	}
	if npaused != 4 || nheld != 6 {
		t.Fatalf("%d held-back slots in the pause and %d out of it, want 4 and 6", npaused, nheld)
	}
	if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(j.ID, runner.SkipPaused)); n != 4 {
		t.Errorf("pacer_job_skipped_total{reason=paused} = %v, want 4", n)
	}
}

// Attack 25, W9: under misfire once and skip, the missed slots that came
// due while the job was paused were folded into the misfire record (reason
// misfire) with the others not run; policy all recorded them paused. Every
// policy now records them skipped, reason paused.
func TestCatchUpOnceAndSkipRecordSlotsDueWhileTheJobWasPausedAsPaused(t *testing.T) {
	for _, policy := range []string{runner.MisfireOnce, runner.MisfireSkip} {
		t.Run(policy, func(t *testing.T) {
			b, tasks := setupScripted(t)
			ctx := context.Background()
			j, slots, pausedFrom, resumed := pausedWhileNobodyLed(t, b, policy)
			stop, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			b.r.Stop(stop)

			ran := ranSlots(tasks.called())
			got := decidedSlots(t, b, j.ID)
			latest := slots[len(slots)-1]
			nmisfire := 0
			for _, s := range slots[1:] {
				rec := got[s]
				switch {
				case !s.Before(pausedFrom) && s.Before(resumed):
					if ran[s] || rec.State != "skipped" || rec.Reason != runner.SkipPaused {
						t.Errorf("slot %s, due while the job was paused: ran %v, recorded %s %s; want skipped, reason paused",
							s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
					}
				case policy == runner.MisfireOnce && s.Equal(latest):
					if !ran[s] || rec.State != "success" {
						t.Errorf("latest slot %s: ran %v, recorded %s %s; want run late (misfire once)", s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
					}
				default:
					nmisfire++
					if ran[s] || rec.State != "skipped" || rec.Reason != runner.SkipMisfire {
						t.Errorf("slot %s, due while the job was active: ran %v, recorded %s %s; want skipped, reason misfire",
							s.Format(time.TimeOnly), ran[s], rec.State, rec.Reason)
					}
				}
			}
			if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(j.ID, runner.SkipPaused)); n != 3 {
				t.Errorf("pacer_job_skipped_total{reason=paused} = %v, want 3", n)
			}
			if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(j.ID, runner.SkipMisfire)); n != float64(nmisfire) {
				t.Errorf("pacer_job_skipped_total{reason=misfire} = %v, want %d", n, nmisfire)
			}
			jc, err := b.coord.JobClaims(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(jc.Open) != 0 || !jc.Last(time.Time{}).Equal(latest) {
				t.Errorf("claims: %d open, decided through %s; want none open, through the last slot %s",
					len(jc.Open), jc.Last(time.Time{}).Format(time.TimeOnly), latest.Format(time.TimeOnly))
			}
		})
	}
}
