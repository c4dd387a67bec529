package coord

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claims that arrive together (slots due at one instant) are batched into
// one transaction. etcd allows 128 operations per transaction by default;
// a claim needs one compare, one put and at most one prune, so a batch
// holds at most maxBatch claims.
const (
	maxBatch    = 50
	maxInFlight = 8 // batches pipelined at once
)

type claimReq struct {
	ctx   context.Context
	term  *Term
	job   string
	slot  time.Time
	value []byte
	done  chan error
}

// batcher coalesces Claim calls. A batch is all-or-nothing: when it fails,
// the Else branch reads the leader key and every slot key, so the batcher
// can tell a stale term (all fail) from taken slots (those fail) and retry
// the rest.
type batcher struct {
	c     *Coordinator
	mu    sync.Mutex
	queue []*claimReq
	slots chan struct{} // in-flight limit
	kick  chan struct{}
}

func newBatcher(c *Coordinator) *batcher {
	return &batcher{c: c, slots: make(chan struct{}, maxInFlight), kick: make(chan struct{}, 1)}
}

func (b *batcher) claim(ctx context.Context, t *Term, job string, slot time.Time, value []byte) error {
	r := &claimReq{ctx: ctx, term: t, job: job, slot: slot, value: value, done: make(chan error, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	b.dispatch()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dispatch starts batches while there are queued claims and free slots.
func (b *batcher) dispatch() {
	for {
		select {
		case b.slots <- struct{}{}:
		default:
			return // enough in flight; a finishing batch dispatches again
		}
		b.mu.Lock()
		n := min(len(b.queue), maxBatch)
		batch := make([]*claimReq, n)
		copy(batch, b.queue)
		b.queue = b.queue[n:]
		b.mu.Unlock()
		if n == 0 {
			<-b.slots
			return
		}
		go func() {
			b.run(batch)
			<-b.slots
			b.dispatch()
		}()
	}
}

// run commits one batch, splitting it by term first (a batch must share one
// fencing guard).
func (b *batcher) run(batch []*claimReq) {
	byTerm := map[*Term][]*claimReq{}
	for _, r := range batch {
		if r.ctx.Err() != nil {
			r.done <- r.ctx.Err()
			continue
		}
		byTerm[r.term] = append(byTerm[r.term], r)
	}
	for t, rs := range byTerm {
		b.commit(t, rs)
	}
}

func (b *batcher) commit(t *Term, rs []*claimReq) {
	c := b.c
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)}
	var puts []clientv3.Op
	elseOps := []clientv3.Op{clientv3.OpGet(t.key, clientv3.WithKeysOnly())}
	oldest := map[string]time.Time{}
	seen := map[string]bool{}
	var live []*claimReq // the requests this transaction decides, in Else order
	for _, r := range rs {
		key := c.slotKey(r.job, r.slot)
		if seen[key] { // the same slot twice in one batch: the first wins
			r.done <- ErrSlotTaken
			continue
		}
		seen[key] = true
		live = append(live, r)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		puts = append(puts, clientv3.OpPut(key, string(r.value)))
		elseOps = append(elseOps, clientv3.OpGet(key, clientv3.WithKeysOnly()))
		if o, ok := oldest[r.job]; !ok || r.slot.Before(o) {
			oldest[r.job] = r.slot
		}
	}
	if len(live) == 0 {
		return
	}
	// Prune each job's old claims once, below its oldest slot in the batch,
	// so no delete range covers a key the batch puts.
	for job, slot := range oldest {
		puts = append(puts, clientv3.OpDelete(c.slotPrefix(job), clientv3.WithRange(c.slotKey(job, slot.Add(-c.opts.ClaimRetention)))))
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(cmps...).Then(puts...).Else(elseOps...).Commit()
	if err != nil {
		for _, r := range live {
			r.done <- fmt.Errorf("claim slot %s: %w", c.slotKey(r.job, r.slot), err)
		}
		return
	}
	if resp.Succeeded {
		for _, r := range live {
			r.done <- nil
		}
		return
	}
	if err := c.guardFailed(t, resp); err == ErrNotLeader {
		for _, r := range live {
			r.done <- ErrNotLeader
		}
		return
	}
	// The term is fine: some slots were taken. Fail those, retry the rest.
	var retry []*claimReq
	for i, r := range live {
		if len(resp.Responses[i+1].GetResponseRange().GetKvs()) > 0 {
			r.done <- ErrSlotTaken
		} else {
			retry = append(retry, r)
		}
	}
	if len(retry) > 0 {
		b.commit(t, retry)
	}
}
