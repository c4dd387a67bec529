package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrSelfFenced ends a session, and every term on it, whose lease can no
// longer be trusted to be alive: no keepalive was acknowledged in time.
var ErrSelfFenced = errors.New("self-fenced: no lease keepalive acknowledged in time")

// guard keeps the session's lease alive on its own schedule and tracks the
// local lease deadline: the send time of the last acknowledged keepalive +
// TTL - margin. The server cannot have expired the lease before that
// instant, because it received that keepalive after it was sent. When the
// deadline passes without a newer acknowledgement, guard ends the session
// and with it every term on it: before the server can expire the lease and
// let another replica lead any of its shards. Times are monotonic
// (time.Now's monotonic reading), so wall-clock jumps do not matter. It
// returns when the session ends.
func (c *Coordinator) guard(ss *session) {
	ttl := c.opts.LeaseTTL
	margin := c.fenceMargin()
	interval := ttl / 3
	lastAck := ss.granted
	deadline := lastAck.Add(ttl - margin)
	first := deadline // a copy: deadline changes below while readers hold this
	c.fenceAt.Store(&first)
	ss.deadline.Store(&first)
	c.keepaliveAge(0)
	defer c.keepaliveAge(-1)

	// Keepalives run in their own goroutine: one may block for a whole
	// interval, and the fence must fire on time regardless.
	type beat struct {
		sent time.Time
		ttl  int64
		err  error
	}
	beats := make(chan beat, 1)
	sender := make(chan struct{})
	go func() {
		defer close(sender)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			sent := time.Now()
			ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ss.ctx), interval)
			resp, err := c.cli.KeepAliveOnce(ctx, ss.lease)
			cancel()
			b := beat{sent: sent, err: err}
			if err == nil {
				b.ttl = resp.TTL
			}
			select {
			case beats <- b:
			case <-ss.ctx.Done():
				return
			}
			select {
			case <-tick.C:
			case <-ss.ctx.Done():
				return
			}
		}
	}()
	defer func() { <-sender }()
	probe := newTLSProbe(ss.ctx, c.opts.TLSCheck, c.log)
	defer probe.wait()

	fence := time.NewTimer(time.Until(deadline))
	defer fence.Stop()
	selfFence := func() {
		c.keepalive("fenced")
		c.log.Error("self-fencing: no keepalive acknowledged in time; stopping work before the lease can expire",
			"shards_led", len(c.Terms()), "last_ack_sent", time.Since(lastAck).Round(time.Millisecond), "ttl", ttl, "margin", margin, probe.attr())
		c.endSession(ss, fmt.Errorf("%w (last acknowledged keepalive sent %s ago; TTL %s)", ErrSelfFenced, time.Since(lastAck).Round(time.Millisecond), ttl))
	}
	age := time.NewTicker(time.Second)
	defer age.Stop()
	for {
		select {
		case <-ss.ctx.Done():
			return
		case <-age.C:
			c.keepaliveAge(time.Since(lastAck))
		case <-fence.C:
			// The keepalives did not come back in time (the replica was
			// paused or starved, or etcd did not answer): counted, so that
			// a replica that keeps fencing itself is seen.
			selfFence()
			return
		case b := <-beats:
			switch {
			case ss.ctx.Err() != nil:
				return
			case ss.fenced():
				// The deadline passed before this answer was taken in: a
				// replica woken from a freeze finds both ready, and took
				// either. An answer taken first moved the deadline on, and
				// the term went on under its token while its plugins,
				// which had the same deadline, had cancelled its runs as
				// the lease's, recorded as failures (attack 22, T3). The
				// deadline is the deadline: fenced, whatever came after.
				selfFence()
				return
			case b.err == nil && b.ttl > 0:
				c.keepalive("ok")
				if b.sent.After(lastAck) {
					lastAck = b.sent
					c.lastAck.Store(lastAck.UnixNano())
					c.heard(lastAck)
					deadline = b.sent.Add(ttl - margin)
					d := deadline
					c.fenceAt.Store(&d)
					ss.deadline.Store(&d)
					fence.Reset(time.Until(deadline))
				}
			case b.err == nil, errors.Is(b.err, rpctypes.ErrLeaseNotFound): // TTL <= 0: expired
				c.keepalive("lost")
				c.endSession(ss, errors.New("lease lost: etcd says it expired"))
				return
			case errors.Is(b.err, rpctypes.ErrNoLeader):
				// Our etcd member cannot reach a quorum (require-leader
				// made it answer at once instead of hanging). Nothing
				// can renew the lease until it can; the fence decides.
				c.keepalive("no_leader")
				c.log.Warn("lease keepalive refused: this replica's etcd member has no leader",
					"deadline_in", time.Until(deadline).Round(time.Millisecond))
			case errors.Is(b.err, context.DeadlineExceeded):
				c.keepalive("timeout")
				probe.start()
				c.log.Warn("lease keepalive timed out", "timeout", interval, "deadline_in", time.Until(deadline).Round(time.Millisecond), probe.attr())
			default:
				c.keepalive("error")
				probe.start()
				c.log.Warn("lease keepalive failed", "error", b.err, "deadline_in", time.Until(deadline).Round(time.Millisecond), probe.attr())
			}
		}
	}
}

// FenceDeadline is the instant this replica fences itself unless a newer
// keepalive is acknowledged meanwhile: the send time of the last
// acknowledged one + TTL - margin, with its monotonic reading. Past it
// (its session ended, or is about to) nothing may run under its terms.
// False before its first session. The plugin host passes it on to plugins
// (pluginhost.Host.SetLease), so that a frozen runner's runs end in time
// even though the runner cannot end them.
func (c *Coordinator) FenceDeadline() (time.Time, bool) {
	if t := c.fenceAt.Load(); t != nil {
		return *t, true
	}
	return time.Time{}, false
}

// fenceMargin is how much earlier than the lease's TTL a replica fences
// itself: a sixth of the TTL, at least 300ms, to cover scheduling delays
// between noticing the deadline and the runs' contexts being cancelled.
func (c *Coordinator) fenceMargin() time.Duration {
	return max(c.opts.LeaseTTL/6, 300*time.Millisecond)
}

func (c *Coordinator) keepalive(result string) {
	if c.opts.Metrics != nil {
		c.opts.Metrics.Keepalives.WithLabelValues(result).Inc()
	}
}

// heard notes that etcd answered a request sent at t (see LastContact).
func (c *Coordinator) heard(t time.Time) {
	n := t.UnixNano()
	for {
		old := c.contact.Load()
		if old >= n || c.contact.CompareAndSwap(old, n) {
			return
		}
	}
}

// LastContact is the send time of the newest request etcd answered: a lease
// grant or keepalive, or a watch's read. Keepalives go every third of the
// lease TTL, so on a replica in touch with etcd it is never much older than
// that; zero until etcd first answered. A replica that has not heard from
// etcd for a whole lease TTL has self-fenced, and what it last read from etcd
// (such as the pause flags) may be stale.
func (c *Coordinator) LastContact() time.Time {
	n := c.contact.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// keepaliveAge sets the gauge; a negative age means "no session" (0).
func (c *Coordinator) keepaliveAge(d time.Duration) {
	if c.opts.Metrics != nil {
		c.opts.Metrics.KeepaliveAge.WithLabelValues().Set(max(d, 0).Seconds())
	}
}
