package coord_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/coord"
)

// blackhole is a TCP proxy that can stop forwarding, as in a network
// partition: connections stay open and bytes wait (TCP would retransmit
// them), then flow again when the cut is healed.
type blackhole struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	heal   chan struct{} // closed and replaced on every heal
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
	closed chan struct{}
}

func (b *blackhole) setCut(cut bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cut.Store(cut)
	if !cut {
		close(b.heal)
		b.heal = make(chan struct{})
	}
}

// wait blocks while the link is cut; false when the proxy is closing.
func (b *blackhole) wait() bool {
	for b.cut.Load() {
		b.mu.Lock()
		heal := b.heal
		b.mu.Unlock()
		if !b.cut.Load() {
			return true
		}
		select {
		case <-heal:
		case <-b.closed:
			return false
		}
	}
	return true
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target, heal: make(chan struct{}), closed: make(chan struct{})}
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, up)
		b.mu.Unlock()
		b.wg.Go(func() { b.pipe(up, c) })
		b.wg.Go(func() { b.pipe(c, up) })
	}
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !b.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *blackhole) close() {
	close(b.closed)
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// RELIABILITY.md scenario 5: a leader cut off from etcd fences itself before
// the server expires its lease, so the next leader starts after the old one
// stopped; and the old leader's writes are refused once the link is back.
func TestCutOffLeaderSelfFencesBeforeSuccessorLeads(t *testing.T) {
	b := setup(t)
	hole := newBlackhole(t, b.endpoint)
	cliA, err := clientv3.New(clientv3.Config{Endpoints: []string{hole.addr()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cliA.Close() })

	const ttl = 2 * time.Second
	var mu sync.Mutex
	var aEnded, bStarted time.Time
	var aCause error
	a := coord.New(coord.Options{Client: cliA, Cluster: "test", Node: "a", LeaseTTL: ttl, RequestTimeout: time.Second,
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
	hole.setCut(true)
	waitFor(t, "b leads", 15*time.Second, func() bool { return bc.Term() != nil })

	mu.Lock()
	defer mu.Unlock()
	if aEnded.IsZero() || !errors.Is(aCause, coord.ErrSelfFenced) {
		t.Fatalf("a's term ended at %v with %v; want self-fencing", aEnded, aCause)
	}
	if !aEnded.Before(bStarted) {
		t.Fatalf("b started leading %s before a stopped", aEnded.Sub(bStarted))
	}
	t.Logf("cut → a self-fenced %s; a stopped %s before b led (TTL %s)",
		aEnded.Sub(cut).Round(time.Millisecond), bStarted.Sub(aEnded).Round(time.Millisecond), ttl)

	// With the link back, a's writes under its old term are refused.
	hole.setCut(false)
	if err := a.Claim(context.Background(), stale, "job", time.Now(), []byte("late")); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("stale claim after the partition: %v, want ErrNotLeader", err)
	}
}
