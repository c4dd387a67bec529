package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// session is this replica's etcd session: one lease, kept alive by the
// concurrency session's keepalive stream and guarded by the fence
// (fence.go). Every election key of the replica lives on it, so all its
// shards are lost together, and self-fencing stops all of them.
type session struct {
	s     *concurrency.Session
	lease clientv3.LeaseID
	// granted: the lease cannot expire before granted + TTL.
	granted time.Time
	// deadline is when the session fences itself unless a keepalive is
	// acknowledged meanwhile (monotonic; set at the grant, moved by guard).
	deadline atomic.Pointer[time.Time]
	// ctx is cancelled, with the reason, when the session ends: the fence
	// fired, the lease was lost, or the replica stops.
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// ErrSessionLost ends every term of a session whose lease etcd no longer
// keeps (expired, or revoked).
var ErrSessionLost = errors.New("lease lost: keepalive failed or lease expired")

// Run keeps a session and leads the shards assigned to this replica until
// ctx is done, then hands them over (drain, resign) and revokes the lease.
// It returns nil after a clean stop.
func (c *Coordinator) Run(ctx context.Context) error {
	const minBackoff = 200 * time.Millisecond
	backoff := minBackoff
	revoking := make(chan struct{})
	go func() {
		defer close(revoking)
		c.revokeStale(ctx)
	}()
	defer func() { <-revoking }()
	for {
		led, err := c.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if led {
			backoff = minBackoff
		}
		// A session that ended (self-fenced) says why the TLS handshake
		// fails too, if it does, as the tries after it do (grant lease).
		err = c.WithTLSProblem(ctx, err)
		c.log.Warn("no etcd session (it ended, or could not be opened); trying again", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.opts.LeaseTTL)
	}
}

// runSession opens a session and manages the shards on it until it ends or
// ctx does. It reports whether the session led any shard.
func (c *Coordinator) runSession(ctx context.Context) (bool, error) {
	ss, err := c.openSession(ctx)
	if err != nil {
		return false, err
	}
	var published sync.WaitGroup
	if c.opts.Members != nil {
		published.Go(func() { c.opts.Members.Publish(ss.ctx, ss.lease) })
	}
	c.mu.Lock()
	c.session = ss
	c.mu.Unlock()
	guarded := make(chan struct{})
	go func() {
		defer close(guarded)
		c.guard(ss)
	}()
	go func() {
		select {
		case <-ss.s.Done():
			if ss.ctx.Err() == nil { // not ended by us: etcd let the lease go
				c.keepalive("lost")
			}
			c.endSession(ss, ErrSessionLost)
		case <-ss.ctx.Done():
		}
	}()
	led, err := c.manage(ctx, ss)
	c.endSession(ss, err)
	<-guarded
	published.Wait()
	c.mu.Lock()
	c.session = nil
	c.mu.Unlock()
	c.closeSession(ss)
	return led, err
}

// openSession grants a lease (bounded by RequestTimeout: NewSession alone
// can hang on Grant) and opens a concurrency session on it.
func (c *Coordinator) openSession(ctx context.Context) (*session, error) {
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	granted := time.Now()
	lease, err := c.cli.Grant(gctx, int64(c.opts.LeaseTTL/time.Second))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", c.WithTLSProblem(ctx, err))
	}
	// The session's keepalive stream lives as long as the session, not as
	// long as ctx: a stop hands the shards over (drain, resign) before the
	// lease is revoked.
	sctx, scancel := context.WithCancelCause(context.Background())
	s, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(sctx))
	if err != nil {
		scancel(err)
		rctx, rcancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		_, _ = c.cli.Revoke(rctx, lease.ID)
		rcancel()
		return nil, fmt.Errorf("open session: %w", err)
	}
	ss := &session{s: s, lease: lease.ID, granted: granted, ctx: sctx, cancel: scancel}
	first := granted.Add(c.opts.LeaseTTL - c.fenceMargin())
	ss.deadline.Store(&first)
	c.lastAck.Store(granted.UnixNano())
	c.heard(granted)
	c.log.Debug("etcd session opened", "lease_id", fmt.Sprintf("%x", lease.ID))
	return ss, nil
}

// endSession ends ss and every term on it. Safe to call more than once;
// the first cause counts.
func (c *Coordinator) endSession(ss *session, cause error) {
	if cause == nil {
		cause = ErrStopping
	}
	ss.cancel(cause)
	cause = context.Cause(ss.ctx)
	for _, t := range c.Terms() {
		if t.session == ss {
			c.endTerm(t, cause)
		}
	}
}

// closeSession revokes the lease so that other replicas need not wait for
// the TTL: every election key of this replica goes with it at once. A
// lease that cannot be revoked now (etcd down or restarting) is revoked as
// soon as etcd answers (revokeStale): otherwise its election keys, still
// there after etcd comes back, would hold up every campaign for those
// shards, this replica's own included, until the lease expires.
func (c *Coordinator) closeSession(ss *session) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	if _, err := c.cli.Revoke(ctx, ss.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		c.log.Debug("revoke lease; trying again until etcd answers", "error", err)
		c.smu.Lock()
		c.stale = append(c.stale, ss.lease)
		c.smu.Unlock()
	}
	ss.s.Orphan()
}

// fenced reports whether the session's fence deadline has passed. Its guard
// ends it then, but a replica that wakes from a freeze (SIGSTOP, a
// debugger) runs every goroutine at once, and a write may be on its way
// before the guard's timer has fired; and an embedded etcd member frozen
// with the replica has not expired the lease, so the fencing guard in etcd
// would still pass. Writes check this first (answerFenced).
func (ss *session) fenced() bool {
	d := ss.deadline.Load()
	return d != nil && time.Now().After(*d)
}
