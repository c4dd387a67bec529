package fxmodule

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeCounter is a membership whose answers the test sets.
type fakeCounter struct {
	mu      sync.Mutex
	cluster int
	ok      bool
	changed chan struct{}
}

func (f *fakeCounter) ClusterShards() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cluster
}

//lint:ignore ST1008 Gate.MayLead's order
func (f *fakeCounter) MayLead() (bool, error, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ok, nil, f.changed
}

func (f *fakeCounter) set(cluster int, ok bool) {
	f.mu.Lock()
	f.cluster, f.ok = cluster, ok
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// A replica whose cluster.shards is not the cluster's exports no
// pacer_shard_leader series (its own count's would fire PacerShardUnled
// for shards the cluster does not have); they come back, at 0, when its
// count is the cluster's again.
func TestShardSeriesOnlyForTheClustersShards(t *testing.T) {
	leader := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pacer_shard_leader"}, []string{"shard"})
	for _, n := range []string{"0", "1", "2", "3"} {
		leader.WithLabelValues(n).Set(0)
	}
	f := &fakeCounter{ok: true, changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); shardSeries(ctx, f, leader, 4, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	series := func() int { return testutil.CollectAndCount(leader) }
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d series)", what, series())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	f.set(8, false) // the cluster runs 8 shards; this replica 4, refused
	waitUntil("no series", func() bool { return series() == 0 })
	leader.WithLabelValues("3").Set(0) // a term that was still ending
	waitUntil("no series again", func() bool { return series() == 0 })
	f.set(0, true) // its count is the cluster's again
	waitUntil("4 series", func() bool { return series() == 4 })
	if v := testutil.ToFloat64(leader.WithLabelValues("2")); v != 0 {
		t.Fatalf("shard 2's series is %v, want 0", v)
	}
}
