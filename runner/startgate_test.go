package runner_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/schedule"
)

// The record that finishes a run lets the claims of slots fired meanwhile
// go first (a burst's starts before its ends: issue 16's start lag), but
// never holds a run into its job's next slot, where it would still count
// as running and make that slot an overlap.
func TestFinishingRecordLetsPendingClaimsGoFirst(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	close(b.tasks.release)
	runner.SetClaimGateWait(b.r, time.Minute)
	release := runner.HoldClaims(b.r) // a slot fired whose claim is not in yet
	defer release()
	// Its next slot a day away, whatever the time of day (an hourly job's
	// is near two minutes before each hour: its record would not wait).
	hourly := job("hourly", runner.OverlapForbid)
	hourly.Schedule = slotList{time.Now().Add(24 * time.Hour)}
	secondly := &runner.Job{ID: "secondly", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second),
		Timeout: time.Minute, Overlap: runner.OverlapForbid}
	slot := slotAhead()
	b.r.Fire(runner.Slot{Job: hourly, Time: slot})
	b.r.Fire(runner.Slot{Job: secondly, Time: slot})

	waitRecords(t, b, "secondly", 1) // its next slot is near: not held
	waitCount(t, "hourly's successes", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("hourly", "p", observability.OutcomeSuccess))
	}, 1)
	if n := countRecords(t, b, "hourly"); n != 0 {
		t.Fatalf("hourly's record written while a claim was pending: %d records", n)
	}
	release()
	waitRecords(t, b, "hourly", 1)
}

func countRecords(t *testing.T, b *bundle, job string) int {
	t.Helper()
	recs, err := b.coord.Runs(context.Background(), job, 10)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

func waitRecords(t *testing.T, b *bundle, job string, want int) {
	t.Helper()
	waitCount(t, job+"'s records", func() float64 { return float64(countRecords(t, b, job)) }, float64(want))
}
