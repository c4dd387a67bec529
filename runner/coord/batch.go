package coord

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claims that arrive together (slots due at one instant) are batched into
// one transaction. etcd allows 128 operations in each of a transaction's
// compare, success and failure lists by default. A claim needs one compare,
// one put and one failure-branch get, and moving a job's horizon two more
// puts (a prune and the horizon), so a batch holds at most maxBatch claims
// and moves horizons only while its success list stays within maxTxnOps.
const (
	maxBatch    = 50
	maxTxnOps   = 128
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
	c      *Coordinator
	claims *pipeline[*claimReq]

	hmu      sync.Mutex
	horizons *horizons // of the term that last claimed
}

// horizons caches each job's claim horizon for one term: claims of slots
// before it have been pruned, so whether such a slot ran is unknown, and it
// is refused (ErrSlotTooOld) rather than run a second time. Without this, a
// leader whose wall clock is more than the retention behind would find the
// slot keys gone and run those slots again. Only the leader prunes, under
// its fencing guard, so the values read when a term starts stay exact for
// the term, and prunes of one job are serialised (pruning).
type horizons struct {
	term    *Term
	ns      map[string]int64 // job → horizon (UnixNano)
	pruning map[string]bool  // a transaction moving this job's horizon is in flight
}

func newBatcher(c *Coordinator) *batcher {
	b := &batcher{c: c}
	b.claims = newPipeline(maxBatch, b.run)
	return b
}

func (b *batcher) claim(ctx context.Context, t *Term, job string, slot time.Time, value []byte) error {
	r := &claimReq{ctx: ctx, term: t, job: job, slot: slot, value: value, done: make(chan error, 1)}
	b.claims.add(r)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
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
	h, err := b.horizonsOf(t)
	if err != nil {
		for _, r := range rs {
			r.done <- err
		}
		return
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)}
	var puts []clientv3.Op
	elseOps := []clientv3.Op{clientv3.OpGet(t.key, clientv3.WithKeysOnly())}
	oldest := map[string]time.Time{}
	seen := map[string]bool{}
	var live []*claimReq // the requests this transaction decides, in Else order
	b.hmu.Lock()
	for _, r := range rs {
		key := c.slotKey(r.job, r.slot)
		if r.slot.UnixNano() < h.ns[r.job] {
			r.done <- fmt.Errorf("%w: slot %s, claims before %s pruned", ErrSlotTooOld,
				r.slot.UTC().Format(time.RFC3339Nano), time.Unix(0, h.ns[r.job]).UTC().Format(time.RFC3339))
			continue
		}
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
	// Prune each job's claims older than the retention before its oldest
	// slot in the batch (so no delete range covers a key the batch puts),
	// and move its horizon there; at most every retention/24 of slot time
	// per job, and one such transaction per job at a time.
	moved := map[string]int64{}
	for job, slot := range oldest {
		to := slot.Add(-c.opts.ClaimRetention).UnixNano()
		if h.pruning[job] || to < h.ns[job]+int64(c.opts.ClaimRetention/24) || len(puts)+2 > maxTxnOps {
			continue // a later batch prunes it
		}
		h.pruning[job], moved[job] = true, to
		puts = append(puts,
			clientv3.OpDelete(c.slotPrefix(job), clientv3.WithRange(c.slotKey(job, time.Unix(0, to)))),
			clientv3.OpPut(c.horizonKey(job), strconv.FormatInt(to, 10)))
	}
	b.hmu.Unlock()
	defer func() {
		b.hmu.Lock()
		for job := range moved {
			h.pruning[job] = false
		}
		b.hmu.Unlock()
	}()
	if len(live) == 0 {
		return
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
		b.hmu.Lock()
		maps.Copy(h.ns, moved)
		b.hmu.Unlock()
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

// horizonsOf returns t's horizons, reading every job's from etcd the first
// time t claims.
func (b *batcher) horizonsOf(t *Term) (*horizons, error) {
	b.hmu.Lock()
	h := b.horizons
	b.hmu.Unlock()
	if h != nil && h.term == t {
		return h, nil
	}
	if t.ctx.Err() != nil {
		return nil, ErrNotLeader // the term has ended
	}
	c := b.c
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.horizonPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read claim horizons: %w", err)
	}
	h = &horizons{term: t, ns: map[string]int64{}, pruning: map[string]bool{}}
	for _, kv := range resp.Kvs {
		ns, err := strconv.ParseInt(string(kv.Value), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad claim horizon %s=%q", kv.Key, kv.Value)
		}
		h.ns[strings.TrimPrefix(string(kv.Key), c.horizonPrefix())] = ns
	}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	if b.horizons != nil && b.horizons.term == t {
		return b.horizons, nil // another batch of t read them first
	}
	b.horizons = h
	return h, nil
}
