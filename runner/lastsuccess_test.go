package runner_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
)

// A shard's new leader exports each job's last success as its term starts,
// from the claims it reads then: a job that last succeeded under the
// previous leader, on another replica (gone as by kill -9), still has its
// pacer_job_last_success_timestamp_seconds there, so that PacerJobStale can
// fire after a shard move.
func TestNewTermExportsTheLastSuccessOfAnotherReplica(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	close(b.tasks.release)
	j := job("j", runner.OverlapAllow)
	b.r.SetJobs([]*runner.Job{j})
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	waitCount(t, "successes on n1", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("j", "p", observability.OutcomeSuccess))
	}, 1)
	var kept time.Time // the success the claim key keeps, written with the slot's record
	deadline := time.Now().Add(10 * time.Second)
	for kept.IsZero() {
		jc, err := b.coord.JobClaims(context.Background(), "j")
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("claims of j %+v, %v: no last success kept", jc, err)
		}
		kept = jc.LastSuccess
		time.Sleep(10 * time.Millisecond)
	}
	onN1 := testutil.ToFloat64(b.metrics.LastSuccess.WithLabelValues("j"))
	if d := onN1 - float64(kept.UnixNano())/1e9; d < 0 || d > 1 {
		t.Fatalf("n1 exports %v, the claim key keeps %v: want the same success", onN1, kept)
	}

	// Replica n2, its own runner and registry, waits in line for the shard.
	m2, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	hook := &termHook{}
	c2 := coord.New(coord.Options{Client: b.admin, Cluster: "t", Node: "n2", LeaseTTL: 2 * time.Second,
		OnTransition: func(leading bool, t *coord.Term) {
			if leading {
				hook.call(t)
			}
		}})
	r2 := runner.New(runner.Options{Node: "n2", Coord: c2, Tasks: b.tasks, Metrics: m2, Tracer: b.tp.Tracer("t"),
		Logger: discardLogger()})
	r2.SetJobs([]*runner.Job{j})
	hook.set(r2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c2.Run(ctx) }()
	t.Cleanup(func() {
		stop, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		r2.Stop(stop)
		cancel()
		<-done
	})
	waitUntil(t, "n2 waiting for the shard", func() bool {
		st, err := b.coord.State(context.Background())
		return err == nil && len(st.Shards) > 0 && slices.Contains(st.Shards[0].Waiting, "n2")
	})

	// n1's lease goes (as when it is killed): n2 leads, and exports j's last
	// success from the claims its term starts with, though j has not run there.
	resp, err := b.admin.Get(context.Background(), "/pacer/t/leader/0/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != "n1" {
		t.Fatalf("election keys %v, %v: want n1's first", resp, err)
	}
	if _, err := b.admin.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "n2 leading and caught up", func() bool {
		hook.mu.Lock()
		term, caught := hook.term, hook.caught
		hook.mu.Unlock()
		if term == nil || term != c2.Term() {
			return false
		}
		select {
		case <-caught:
			return true
		default:
			return false
		}
	})
	if runs := testutil.ToFloat64(m2.JobRuns.WithLabelValues("j", "p", observability.OutcomeSuccess)); runs != 0 {
		t.Fatalf("j ran on n2 (%v successes): the test needs it not to", runs)
	}
	if n := testutil.CollectAndCount(m2.LastSuccess); n != 1 {
		t.Fatalf("n2 exports %d pacer_job_last_success_timestamp_seconds series, want j's", n)
	}
	if got, want := testutil.ToFloat64(m2.LastSuccess.WithLabelValues("j")), float64(kept.UnixNano())/1e9; got != want {
		t.Fatalf("n2 exports j's last success %v, want %v (kept in the claim key by n1)", got, want)
	}
}
