package coord_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
)

// Fault scenario 5 (docs/chaos-results.md): a leader cut off from etcd fences itself before
// the server expires its lease, so the next leader starts after the old one
// stopped; and the old leader's writes are refused once the link is back.
func TestCutOffLeaderSelfFencesBeforeSuccessorLeads(t *testing.T) {
	b := setup(t)
	hole, cliA := b.throughHole(t)

	const ttl = 2 * time.Second
	var mu sync.Mutex
	var aEnded, bStarted time.Time
	var aCause error
	metrics, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	a := coord.New(coord.Options{Client: cliA, Cluster: "test", Node: "a", LeaseTTL: ttl, RequestTimeout: time.Second, Metrics: metrics,
		OnTransition: func(leading bool, term *coord.Term) {
			if !leading {
				mu.Lock()
				aEnded, aCause = time.Now(), context.Cause(term.Context())
				mu.Unlock()
			}
		}})
	actx, astop := context.WithCancel(context.Background())
	adone := make(chan struct{})
	go func() { defer close(adone); _ = a.Run(actx) }()
	t.Cleanup(func() { astop(); <-adone })
	waitFor(t, "a leads", 10*time.Second, func() bool { return a.Term() != nil })
	stale := a.Term()
	// The fence deadline plugins are told (FenceDeadline) lies within a
	// TTL from now while a is in touch.
	if d, ok := a.FenceDeadline(); !ok || !d.After(time.Now()) || d.After(time.Now().Add(ttl)) {
		t.Fatalf("a's fence deadline %v (%v): want within the TTL from now", d, ok)
	}

	bc := coord.New(coord.Options{Client: b.client(t), Cluster: "test", Node: "b", LeaseTTL: ttl, RequestTimeout: time.Second,
		OnTransition: func(leading bool, _ *coord.Term) {
			if leading {
				mu.Lock()
				bStarted = time.Now()
				mu.Unlock()
			}
		}})
	bctx, bstop := context.WithCancel(context.Background())
	bdone := make(chan struct{})
	go func() { defer close(bdone); _ = bc.Run(bctx) }()
	t.Cleanup(func() { bstop(); <-bdone })

	cut := time.Now()
	hole.SetCut(true)
	waitFor(t, "b leads", 15*time.Second, func() bool { return bc.Term() != nil })

	mu.Lock()
	defer mu.Unlock()
	if aEnded.IsZero() || !errors.Is(aCause, coord.ErrSelfFenced) {
		t.Fatalf("a's term ended at %v with %v; want self-fencing", aEnded, aCause)
	}
	if !aEnded.Before(bStarted) {
		t.Fatalf("b started leading %s before a stopped", aEnded.Sub(bStarted))
	}
	// ... and it is the instant a fenced itself: a plugin that ends its
	// runs then ends them before b leads.
	if d, _ := a.FenceDeadline(); aEnded.Before(d) || !d.Before(bStarted) {
		t.Fatalf("a's fence deadline %v: a stopped at %v, b led at %v; want a deadline at or before a stopped, before b led", d, aEnded, bStarted)
	}
	// Counted, so that a replica that keeps fencing itself raises
	// PacerLeaseKeepaliveFailing (attack 16, G2: before, no result but ok
	// was ever counted for it).
	if n := testutil.ToFloat64(metrics.Keepalives.WithLabelValues("fenced")); n != 1 {
		t.Errorf(`pacer_lease_keepalives_total{result="fenced"} = %v after one self-fence, want 1`, n)
	}
	t.Logf("cut → a self-fenced %s; a stopped %s before b led (TTL %s)",
		aEnded.Sub(cut).Round(time.Millisecond), bStarted.Sub(aEnded).Round(time.Millisecond), ttl)

	// With the link back, a's writes under its old term are refused.
	hole.SetCut(false)
	if err := a.Claim(context.Background(), stale, "job", time.Now(), []byte(`"late"`)); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("stale claim after the partition: %v, want ErrNotLeader", err)
	}
}
