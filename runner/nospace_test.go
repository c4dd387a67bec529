package runner_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
)

// Attack 16, G7: while etcd refuses writes (out of space, its NOSPACE alarm
// raised) for longer than a record write is retried, the slots skipped
// meanwhile (overlap, behind a run whose record waits for etcd) lost their
// records, and the run's own record was given up, its slot's claim left
// open for a later leader to run again. Both are now retried while the term
// lives, and a job's skips wait for its earlier one to be written, as one
// record: every slot has its record once etcd takes writes again, and the
// job's skips are one write retrying, not one a slot.
func TestSkipsWaitOutEtcdRefusingWrites(t *testing.T) {
	runner.SetRecordPatience(t, 500*time.Millisecond)
	b := setup(t)
	b.waitLeader(t)
	slot := slotAhead()
	j := job("full", runner.OverlapForbid)
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	<-b.tasks.started

	ctx := context.Background()
	maint := pb.NewMaintenanceClient(b.admin.ActiveConnection())
	st, err := b.admin.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	member := st.Header.MemberId
	if _, err := maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: member, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.Put(ctx, "probe", "x"); err == nil {
		t.Fatal("etcd takes writes with its NOSPACE alarm raised")
	}
	const skipped = 6
	for i := 1; i <= skipped; i++ {
		b.r.Fire(runner.Slot{Job: j, Time: slot.Add(time.Duration(i) * time.Second)})
	}
	// The running slot ends: its record (and the close of its claim)
	// waits for etcd too.
	close(b.tasks.release)
	// The outage: four times as long as a record write is retried.
	time.Sleep(4 * 500 * time.Millisecond)
	if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("full", runner.SkipOverlap)); n != 0 {
		t.Fatalf("%v skips counted while etcd refused every write", n)
	}
	if _, err := b.admin.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: member, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	waitCount(t, "overlap skips", func() float64 {
		return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("full", runner.SkipOverlap))
	}, skipped)
	covered := map[time.Time]bool{}
	var recs []runner.Record
	waitCount(t, "the run's record", func() float64 {
		recs = records(t, b, "full")
		return float64(len(slices.DeleteFunc(slices.Clone(recs), func(r runner.Record) bool { return r.State != observability.OutcomeSuccess })))
	}, 1)
	if jc, err := b.coord.JobClaims(ctx, "full"); err != nil || len(jc.Open) != 0 {
		t.Fatalf("claims %+v (%v): the run's slot is still open", jc, err)
	}
	recs = slices.DeleteFunc(recs, func(r runner.Record) bool { return r.State == observability.OutcomeSuccess })
	for _, r := range recs {
		if r.State != "skipped" || r.Reason != runner.SkipOverlap {
			t.Fatalf("record %+v, want only overlap skips", r)
		}
		until, n := r.ScheduledTime, 1
		if r.Slots > 0 {
			until, n = r.ScheduledUntil, r.Slots
		}
		for s, i := r.ScheduledTime, 0; i < n; s, i = s.Add(time.Second), i+1 {
			if covered[s.UTC()] {
				t.Fatalf("slot %s in two records: %+v", s, recs)
			}
			covered[s.UTC()] = true
		}
		if want := r.ScheduledTime.Add(time.Duration(n-1) * time.Second); !until.Equal(want) {
			t.Fatalf("record %+v: %d slots from %s end at %s", r, n, r.ScheduledTime, until)
		}
	}
	for i := 1; i <= skipped; i++ {
		if s := slot.Add(time.Duration(i) * time.Second); !covered[s.UTC()] {
			t.Fatalf("slot %s has no record (records %+v)", s, recs)
		}
	}
	if len(recs) > 2 {
		t.Fatalf("%d records for %d skips behind one write: want the later ones as one", len(recs), skipped)
	}
}
