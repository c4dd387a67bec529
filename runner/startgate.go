package runner

import (
	"context"
	"sync"
	"time"
)

// startGate counts the slots fired whose claims are not yet in, so that the
// write that finishes a run (its record, which closes its claim) can let a
// burst's claims go first: both are etcd transactions, and the runner, its
// etcd and its plugins share the same cores; a thousand records written
// while a thousand claims wait delay the starts behind them (issue 16:
// the start lag of 1,000 jobs due at one instant). A finishing write waits
// at most max; a run's start never waits for it.
type startGate struct {
	max     time.Duration
	mu      sync.Mutex
	pending int
	idle    chan struct{} // closed while pending is 0
}

// startGateWait bounds how long a finishing write waits for claims.
const startGateWait = 250 * time.Millisecond

func newStartGate(max time.Duration) *startGate {
	g := &startGate{max: max, idle: make(chan struct{})}
	close(g.idle)
	return g
}

// add counts a slot fired; the func it returns counts it claimed (or given
// up), once however often it is called.
func (g *startGate) add() func() {
	g.mu.Lock()
	if g.pending == 0 {
		g.idle = make(chan struct{})
	}
	g.pending++
	g.mu.Unlock()
	return sync.OnceFunc(func() {
		g.mu.Lock()
		if g.pending--; g.pending == 0 {
			close(g.idle)
		}
		g.mu.Unlock()
	})
}

// wait returns once no fired slot's claim is pending, after g.max, or when
// ctx ends.
func (g *startGate) wait(ctx context.Context) {
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return
	default:
	}
	t := time.NewTimer(g.max)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
}

// awaitClaims holds the record that finishes a slot of j while slots fired
// are being claimed (startGate), unless j's next slot is due within twice
// the gate's bound: a run that waits here still counts as running, and
// must not make its job's next slot an overlap.
func (r *Runner) awaitClaims(j *Job) {
	now := wallNow()
	if next := j.Schedule.Next(now); !next.IsZero() && next.Sub(now) < 2*r.claiming.max {
		return
	}
	r.claiming.wait(r.stopCtx)
}
