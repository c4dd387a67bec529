package coord

import (
	"context"
	"sync"
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

// byTerm makes a pipeline's commit function: it commits a batch one term
// at a time (a transaction has one fencing guard). Commit functions drop
// the requests whose ctx ended with answerEnded, before each attempt.
func byTerm[R interface{ req() *request }](commit func(*Term, []R)) func([]R) {
	return func(batch []R) {
		groups := map[*Term][]R{}
		for _, r := range batch {
			groups[r.req().term] = append(groups[r.req().term], r)
		}
		for t, rs := range groups {
			commit(t, rs)
		}
	}
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
// at one instant, runs finishing together) into batches of at most max,
// committed by commit with at most maxInFlight batches in flight. While
// every slot is busy, requests queue, so batches grow with the load: one
// request alone is committed at once, a thousand at once go out as a few
// transactions.
type pipeline[R any] struct {
	max    int
	commit func([]R)

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
