package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type mvccKV = mvccpb.KeyValue

// Claims that arrive together (slots due at one instant) are batched into
// one transaction. etcd allows 128 operations in each of a transaction's
// compare, success and failure lists by default. A claim needs one compare
// (its job's claim key's mod revision), one or two puts (the key, and a run
// record written with it) and one failure-branch get, plus the batch's
// fencing guard and its get: so at most maxBatch claims.
const (
	maxBatch    = 50
	maxTxnOps   = 128
	maxInFlight = 8 // batches pipelined at once
	// maxTries bounds how often a batch is built again because a claim key
	// changed behind the leader's copy (only something outside this
	// leader, such as an operator, changes one).
	maxTries = 5
)

// What a claim request does to its job's claim key.
type claimKind int

const (
	kindClaim   claimKind = iota // claim a slot, open
	kindReclaim                  // take over an open slot whose claim is prev
	kindSkip                     // mark a slot decided without running it
)

type claimReq struct {
	request
	kind  claimKind
	job   string
	slot  time.Time
	value []byte // the claim
	prev  []byte // for kindReclaim: the open claim to replace
	// runID and record, if set, are a run record written in the same
	// transaction (the skip record of the slots a catch-up leaves out).
	runID  string
	record []byte
}

// apply returns st with the request applied, or why it cannot be.
func (r *claimReq) apply(st claimState) (claimState, error) {
	ns := r.slot.UnixNano()
	switch r.kind {
	case kindReclaim:
		i := st.openAt(ns)
		if i < 0 || string(st.Open[i].Claim) != string(r.prev) {
			return st, fmt.Errorf("%w: slot %s is no longer open with the claim read", ErrSlotTaken, fmtNS(ns))
		}
		n := st.clone()
		n.Open[i].Claim = r.value
		return n, nil
	case kindSkip:
		if err := st.check(ns); err != nil {
			return st, err
		}
		return st.withClosed(ns), nil
	default:
		if err := st.check(ns); err != nil {
			return st, err
		}
		return st.withOpen(ns, r.value), nil
	}
}

// batcher coalesces claim-key writes (claims, reclaims, skips) into
// transactions, one per batch, each guarded by the term's token and by the
// mod revision of every claim key it writes.
type batcher struct {
	c      *Coordinator
	claims *pipeline[*claimReq]
}

func newBatcher(c *Coordinator) *batcher {
	b := &batcher{c: c}
	b.claims = newPipeline(maxBatch, byTerm(b.commit))
	return b
}

func (b *batcher) do(ctx context.Context, t *Term, r *claimReq) error {
	if r.kind != kindSkip && !json.Valid(r.value) {
		return fmt.Errorf("claim of %s at %s: the claim must be JSON", r.job, r.slot.UTC().Format(time.RFC3339Nano))
	}
	r.request = newRequest(ctx, t)
	b.claims.add(r)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func claimJob(r *claimReq) (string, bool) { return r.job, true }

func (b *batcher) commit(t *Term, rs []*claimReq) {
	if rs = answerEnded(rs); len(rs) == 0 {
		return
	}
	c := b.c
	cc, err := c.claimsOf(t)
	if err != nil {
		for _, r := range rs {
			r.done <- err
		}
		return
	}
	rs = acquire(cc, rs, claimJob, b.claims.add)
	jobs := make([]string, len(rs))
	for i, r := range rs {
		jobs[i] = r.job
	}
	defer cc.release(jobs)

	for try := 1; ; try++ {
		// Nothing lands after its caller gave up: checked before each try.
		if rs = answerEnded(rs); len(rs) == 0 {
			return
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)}
		var puts []clientv3.Op
		elseOps := []clientv3.Op{clientv3.OpGet(t.key, clientv3.WithKeysOnly())}
		var live []*claimReq // the requests this transaction decides, in Else order
		var next []claimState
		cc.mu.Lock()
		for _, r := range rs {
			e := cc.entry(r.job)
			if e.bad != nil {
				r.done <- e.bad
				continue
			}
			st, err := r.apply(e.st)
			if err != nil {
				r.done <- err
				continue
			}
			v, err := json.Marshal(st)
			if err != nil {
				r.done <- err
				continue
			}
			key := c.claimKey(r.job)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", e.rev))
			puts = append(puts, clientv3.OpPut(key, string(v)))
			if r.runID != "" {
				puts = append(puts, clientv3.OpPut(c.runKey(r.job, r.runID), string(r.record)))
			}
			elseOps = append(elseOps, clientv3.OpGet(key))
			live, next = append(live, r), append(next, st)
		}
		cc.mu.Unlock()
		if len(live) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		resp, err := c.cli.Txn(ctx).If(cmps...).Then(puts...).Else(elseOps...).Commit()
		cancel()
		switch {
		case err != nil:
			c.noteWriteError(err)
			for _, r := range live {
				r.done <- fmt.Errorf("claim slot %s of %s: %w", r.slot.UTC().Format(time.RFC3339Nano), r.job, err)
			}
			return
		case resp.Succeeded:
			for i, r := range live {
				cc.set(r.job, next[i], resp.Header.Revision)
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
		// The term is fine: a claim key changed behind our copy. Read it
		// again from the failure branch and decide again.
		for i, r := range live {
			c.refresh(cc, r.job, resp.Responses[i+1].GetResponseRange().GetKvs())
		}
		if try == maxTries {
			for _, r := range live {
				r.done <- fmt.Errorf("claim of %s: its claim key kept changing behind the leader (%d tries)", r.job, try)
			}
			return
		}
		rs = live
	}
}

// Claim records that t's leader runs job's slot. It returns ErrSlotTaken
// if the slot was claimed before, ErrSlotTooOld if it is at or before the
// job's floor (decided; whether it ran is not kept), and ErrNotLeader
// (ending t) if t is stale. The claim (JSON) is kept while the slot is
// open: until FinishSlot or CloseSlot. Claims made at the same time are
// batched into one transaction.
func (c *Coordinator) Claim(ctx context.Context, t *Term, job string, slot time.Time, claim []byte) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindClaim, job: job, slot: slot, value: claim})
}

// Reclaim takes over a slot an older term claimed and never finished,
// provided its open claim is still prev (as read with Claims) and t still
// leads: the slot stays open with claim. It returns ErrSlotTaken if the
// slot's claim changed or it is no longer open.
func (c *Coordinator) Reclaim(ctx context.Context, t *Term, job string, slot time.Time, prev, claim []byte) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindReclaim, job: job, slot: slot, value: claim, prev: prev})
}

// ClaimRecording is Claim that also writes a run record of job (runID,
// rec) in the same transaction, if the claim succeeds.
func (c *Coordinator) ClaimRecording(ctx context.Context, t *Term, job string, slot time.Time, claim []byte, runID string, rec []byte) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindClaim, job: job, slot: slot, value: claim, runID: runID, record: rec})
}

// SkipSlot marks a slot of job decided without running it, so that no
// later claim of it succeeds, and writes the run record (runID, rec) that
// says why in the same transaction (none if runID is ""). Errors as for
// Claim.
func (c *Coordinator) SkipSlot(ctx context.Context, t *Term, job string, slot time.Time, runID string, rec []byte) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindSkip, job: job, slot: slot, runID: runID, record: rec})
}

// guardFailed tells a stale term from a changed key, from the Else branch.
func (c *Coordinator) guardFailed(t *Term, resp *clientv3.TxnResponse) error {
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 || kvs[0].CreateRevision != t.Token {
		c.endTerm(t, ErrNotLeader)
		return ErrNotLeader
	}
	return ErrSlotTaken
}
