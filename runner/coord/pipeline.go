package coord

import (
	"context"
	"fmt"
	"slices"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// request is what every batched request carries: its caller's ctx, the term
// whose fencing guard its write needs, and where its outcome goes.
type request struct {
	ctx  context.Context
	term *Term
	done chan error // buffered: exactly one outcome is sent
}

func newRequest(ctx context.Context, t *Term) request {
	return request{ctx: ctx, term: t, done: make(chan error, 1)}
}

func (r *request) req() *request { return r }

// guards are the fencing guards of a batch whose requests belong to
// several terms: one per shard this replica leads. One transaction carries
// them all, comparing each term's election key, and reads each key first
// in its failure branch; so requests of every shard due at one instant are
// still batched together. Commit functions drop the requests whose ctx
// ended with answerEnded, before each attempt.
type guards struct {
	terms []*Term
}

func guardsOf[R interface{ req() *request }](rs []R) guards {
	var g guards
	for _, r := range rs {
		if t := r.req().term; !slices.Contains(g.terms, t) {
			g.terms = append(g.terms, t)
		}
	}
	return g
}

// cmps and reads are the guards' compares, and the failure branch's first
// reads (one per term, in order), with room for n more: a transaction's
// lists are built once, not grown.
func (g guards) cmps(n int) []clientv3.Cmp {
	out := make([]clientv3.Cmp, 0, len(g.terms)+n)
	for _, t := range g.terms {
		out = append(out, clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token))
	}
	return out
}

func (g guards) reads(n int) []clientv3.Op {
	out := make([]clientv3.Op, 0, len(g.terms)+n)
	for _, t := range g.terms {
		out = append(out, clientv3.OpGet(t.key, clientv3.WithKeysOnly()))
	}
	return out
}

// staleTerms returns, from a failed transaction's first len(g.terms) responses,
// the terms whose election key is gone or was created again, and ends
// them: their requests fail with ErrNotLeader.
func (c *Coordinator) staleTerms(g guards, resp *clientv3.TxnResponse) map[*Term]bool {
	out := map[*Term]bool{}
	for i, t := range g.terms {
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		if len(kvs) == 0 || kvs[0].CreateRevision != t.Token {
			c.endTerm(t, ErrNotLeader)
			out[t] = true
		}
	}
	return out
}

// answerStale answers the requests of stale terms with ErrNotLeader and
// returns the others.
func answerStale[R interface{ req() *request }](rs []R, stale map[*Term]bool) []R {
	live := rs[:0:0]
	for _, r := range rs {
		if q := r.req(); stale[q.term] {
			q.done <- ErrNotLeader
		} else {
			live = append(live, r)
		}
	}
	return live
}

// answerFenced answers the requests of terms whose session is past its
// fence deadline, and ends that session, and returns the others: a replica
// past its deadline writes nothing more under those terms, even before its
// guard's timer has fired (see session.fenced).
func answerFenced[R interface{ req() *request }](c *Coordinator, rs []R) []R {
	live := rs[:0:0]
	for _, r := range rs {
		q := r.req()
		if err := c.pastFence(q.term); err != nil {
			q.done <- err
			continue
		}
		live = append(live, r)
	}
	return live
}

// pastFence returns an error (ErrNotLeader and ErrSelfFenced) if t's
// session is past its fence deadline, and ends the session then; nil
// otherwise. Every write under a term's fencing guard checks it first.
func (c *Coordinator) pastFence(t *Term) error {
	ss := t.session
	if ss == nil || !ss.fenced() {
		return nil
	}
	c.endSession(ss, fmt.Errorf("%w (its deadline passed before a write was sent)", ErrSelfFenced))
	return fmt.Errorf("%w: %w", ErrNotLeader, ErrSelfFenced)
}

// answerEnded answers the requests whose ctx ended with its error and
// returns the others, so nothing lands after its caller gave up.
func answerEnded[R interface{ req() *request }](rs []R) []R {
	live := rs[:0:0]
	for _, r := range rs {
		if q := r.req(); q.ctx.Err() != nil {
			q.done <- q.ctx.Err()
		} else {
			live = append(live, r)
		}
	}
	return live
}

// pipeline coalesces requests that arrive at about the same time (slots due
// at one instant, runs finishing together) into batches of at most max
// requests (or max of their weight), committed by commit with at most
// maxInFlight batches in flight. While every slot is busy, requests queue,
// so batches grow with the load: one request alone is committed at once, a
// thousand at once go out as a few transactions.
type pipeline[R any] struct {
	max    int
	commit func([]R)
	// weight, if set, is what a request counts against max (the keys it
	// writes); otherwise each counts 1. A request heavier than max still
	// goes, alone.
	weight func(R) int

	mu    sync.Mutex
	queue []R
	slots chan struct{} // in-flight limit
}

func newPipeline[R any](max int, commit func([]R)) *pipeline[R] {
	return &pipeline[R]{max: max, commit: commit, slots: make(chan struct{}, maxInFlight)}
}

// add queues r and starts batches while there are free slots.
func (p *pipeline[R]) add(r R) {
	p.mu.Lock()
	p.queue = append(p.queue, r)
	p.mu.Unlock()
	p.dispatch()
}

func (p *pipeline[R]) dispatch() {
	for {
		select {
		case p.slots <- struct{}{}:
		default:
			return // enough in flight; a finishing batch dispatches again
		}
		p.mu.Lock()
		n := min(len(p.queue), p.max)
		if p.weight != nil {
			n = 0
			for w := 0; n < len(p.queue); n++ {
				if w += p.weight(p.queue[n]); w > p.max && n > 0 {
					break
				}
			}
		}
		batch := make([]R, n)
		copy(batch, p.queue)
		p.queue = p.queue[n:]
		p.mu.Unlock()
		if n == 0 {
			<-p.slots
			// A request queued after the queue was found empty, while
			// this held the slot, may have found no free slot: look again.
			p.mu.Lock()
			empty := len(p.queue) == 0
			p.mu.Unlock()
			if empty {
				return
			}
			continue
		}
		go func() {
			p.commit(batch)
			<-p.slots
			p.dispatch()
		}()
	}
}
