package coord

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claims that arrive together (slots due at one instant) are batched into
// one transaction. etcd allows 128 operations in each of a transaction's
// compare, success and failure lists by default. A claim needs one compare,
// one put and one failure-branch get; each job in the batch one more
// compare and get (its horizon's revision); moving a job's horizon two more
// operations (a range delete and a put). So a batch holds at most maxBatch
// claims and moves horizons only while its success list stays within
// maxTxnOps.
const (
	maxBatch    = 50
	maxTxnOps   = 128
	maxInFlight = 8 // batches pipelined at once
)

type claimReq struct {
	request
	job   string
	slot  time.Time
	value []byte
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
// slot keys gone and run those slots again. The cache is only a first
// check: every claim transaction also compares each of its jobs' horizon
// key with the revision cached, so a horizon moved by a batch still in
// flight, or by one whose outcome was unknown (a timeout), fails the
// transaction, which then refreshes the cache and decides again.
type horizons struct {
	term    *Term
	h       map[string]horizon
	pruning map[string]bool // a transaction moving this job's horizon is in flight
}

// horizon is a job's: claims before ns (UnixNano) were pruned; rev is the
// horizon key's mod revision, 0 while it has none.
type horizon struct{ ns, rev int64 }

func newBatcher(c *Coordinator) *batcher {
	b := &batcher{c: c}
	b.claims = newPipeline(maxBatch, byTerm(b.commit))
	return b
}

func (b *batcher) claim(ctx context.Context, t *Term, job string, slot time.Time, value []byte) error {
	r := &claimReq{request: newRequest(ctx, t), job: job, slot: slot, value: value}
	b.claims.add(r)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher) commit(t *Term, rs []*claimReq) {
	if rs = answerEnded(rs); len(rs) == 0 { // again on every retry: nothing lands after its caller gave up
		return
	}
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
		if hz := h.h[r.job]; r.slot.UnixNano() < hz.ns {
			r.done <- fmt.Errorf("%w: slot %s, claims before %s pruned", ErrSlotTooOld,
				r.slot.UTC().Format(time.RFC3339Nano), time.Unix(0, hz.ns).UTC().Format(time.RFC3339))
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
	jobs := slices.Sorted(maps.Keys(oldest)) // in Else order, after the slots
	for _, job := range jobs {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.horizonKey(job)), "=", h.h[job].rev))
		elseOps = append(elseOps, clientv3.OpGet(c.horizonKey(job)))
	}
	moved := map[string]int64{}
	for _, job := range jobs {
		to := oldest[job].Add(-c.opts.ClaimRetention).UnixNano()
		if h.pruning[job] || to < h.h[job].ns+int64(c.opts.ClaimRetention/24) || len(puts)+2 > maxTxnOps {
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
		for job, to := range moved {
			h.h[job] = horizon{ns: to, rev: resp.Header.Revision}
		}
		b.hmu.Unlock()
		for _, r := range live {
			r.done <- nil
		}
		return
	}
	if err := c.guardFailed(t, resp); errors.Is(err, ErrNotLeader) {
		for _, r := range live {
			r.done <- ErrNotLeader
		}
		return
	}
	// The term is fine. If a horizon moved, refresh it and decide again.
	if b.refresh(h, jobs, resp.Responses[1+len(live):]) {
		b.commit(t, live)
		return
	}
	// Some slots were taken. Fail those, retry the rest.
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

// refresh updates h from the horizon keys read in a failed transaction's
// Else branch (one response per job, in order), and reports whether any had
// moved.
func (b *batcher) refresh(h *horizons, jobs []string, got []*etcdserverpb.ResponseOp) bool {
	b.hmu.Lock()
	defer b.hmu.Unlock()
	moved := false
	for i, job := range jobs {
		hz := b.parse(job, got[i].GetResponseRange().GetKvs())
		if hz.rev != h.h[job].rev {
			h.h[job], moved = hz, true
		}
	}
	return moved
}

// parse reads a job's horizon from its key (none: no horizon). A value
// that is not a number is logged and read as no horizon: the job's next
// prune writes it again.
func (b *batcher) parse(job string, kvs []*mvccpb.KeyValue) horizon {
	if len(kvs) == 0 {
		return horizon{}
	}
	ns, err := strconv.ParseInt(string(kvs[0].Value), 10, 64)
	if err != nil {
		b.c.log.Error("claim horizon unreadable; treating it as none until the next prune", "job", job, "value", string(kvs[0].Value))
		ns = 0 // ParseInt returns MaxInt64 on overflow, which would refuse every slot for good
	}
	return horizon{ns: ns, rev: kvs[0].ModRevision}
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
	h = &horizons{term: t, h: map[string]horizon{}, pruning: map[string]bool{}}
	for _, kv := range resp.Kvs {
		job := strings.TrimPrefix(string(kv.Key), c.horizonPrefix())
		h.h[job] = b.parse(job, []*mvccpb.KeyValue{kv})
	}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	switch {
	case t.ctx.Err() != nil:
		return nil, ErrNotLeader // ended while reading: leave the cache to the next term
	case b.horizons != nil && b.horizons.term == t:
		return b.horizons, nil // another batch of t read them first
	}
	b.horizons = h
	return h, nil
}
