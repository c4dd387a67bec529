// Package backoff spaces out the tries of an operation that failed for a
// reason that may pass (etcd electing a leader, a plugin restarting, a
// task's transient failure): exponential waits, capped, with optional
// jitter. The runner's retry loops, the coordinator's campaigns and
// watches, and the plugin supervisor's restarts share it, so that each
// loop says only when to give up.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: Initial after the first failure,
// doubling after each further one, never more than Max.
type Policy struct {
	Initial time.Duration // > 0
	Max     time.Duration // >= Initial; 0 means Initial doubles without a cap (until it would overflow)
	// Jitter adds a random part of the wait, up to this fraction of it
	// (0.2: up to 20 % more), so that many loops that failed together do
	// not try again together. 0 means none. Max stays a cap: where the
	// jitter would pass it, the wait is drawn from the same span below Max
	// instead (0.2, Max 2s: 1.6s to 2s), so capped waits still spread, but
	// never below Initial (Initial = Max: no jitter).
	Jitter float64
}

// Delay is the wait after the nth failure in a row (n >= 1; n < 1 counts
// as 1): Initial·2^(n-1) plus jitter, never more than Max. It never
// overflows.
func (p Policy) Delay(n int) time.Duration {
	d := p.Initial
	if d <= 0 {
		return 0
	}
	for i := 1; i < n && (p.Max <= 0 || d < p.Max) && d <= maxDuration/2; i++ {
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	if p.Jitter > 0 {
		j, lo := time.Duration(float64(d)*p.Jitter), d
		switch {
		case p.Max > 0 && j > p.Max-d:
			// d+j would pass the cap (a job's retries.max_backoff is
			// documented as one): draw from the span just below it, but
			// not below Initial (the first wait is a floor too).
			lo = min(max(p.Max-j, p.Initial), p.Max)
			j = p.Max - lo
		case j > maxDuration-d:
			j = 0
		}
		if j > 0 {
			d = lo + time.Duration(rand.Int64N(int64(j)+1))
		}
	}
	return d
}

const maxDuration = time.Duration(1<<63 - 1)

// Backoff counts the failures in a row of one loop.
type Backoff struct {
	Policy
	n int
}

// New starts counting failures under p.
func New(p Policy) *Backoff { return &Backoff{Policy: p} }

// Next counts one more failure and returns the wait before the next try.
func (b *Backoff) Next() time.Duration {
	b.n++
	return b.Delay(b.n)
}

// Reset starts over after a success: the next failure waits Initial again.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d, or less if ctx ends first. It reports whether the loop
// may try again: the whole wait passed and ctx has not ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}
