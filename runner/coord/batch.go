package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/shard"
)

type mvccKV = mvccpb.KeyValue

// Claims that arrive together (slots due at one instant) are batched into
// one transaction. etcd allows 128 operations in each of a transaction's
// compare, success and failure lists by default. A claim needs one compare
// (its job's claim key's mod revision), one or two puts (the key, and a run
// record written with it) and one failure-branch get, plus, for each term
// in the batch (a claim of any shard this replica leads), its fencing guard
// and its get. A batch writes at most maxBatch keys: a claim that carries a
// record (a catch-up's, with its skip record) counts two, so a catch-up's
// transactions are no heavier than a burst's (with twice the keys, and
// about twice the bytes, the catch-up measured slower: docs/guarantees.md).
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
	// keep and maxAge are the job's history limits: the record counts
	// toward its pruning as RecordRun's does.
	runID  string
	record []byte
	keep   int
	maxAge time.Duration
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
	b.claims = newPipeline(maxBatch, b.commit)
	b.claims.weight = func(r *claimReq) int { // keys written
		if r.runID != "" {
			return 2
		}
		return 1
	}
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
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	// A record written with its slot's mark counts toward the job's
	// pruning like any other (pruneDue): a job whose slots are all skipped
	// (paused, overlap) writes no run record that would prune them. The
	// prune, when due, is its own requests after the transaction, so the
	// batch stays as light as before.
	if r.runID != "" {
		b.c.prune(ctx, r.job, r.keep, r.maxAge)
	}
	return nil
}

func claimJob(r *claimReq) (string, bool) { return r.job, true }

// commit writes a batch of claim requests, of any of this replica's terms,
// in one transaction: it carries every term's fencing guard and the mod
// revision of every claim key it writes. A stale term fails (and ends) only
// its own requests; a claim key changed behind its term's copy is read
// again from the failure branch and the rest decided again.
func (b *batcher) commit(rs []*claimReq) {
	if rs = answerEnded(rs); len(rs) == 0 {
		return
	}
	c := b.c
	caches, rs := cachesOf(c, rs, claimJob, b.claims.add)
	defer releaseAll(caches, rs, claimJob)

	for try := 1; ; try++ {
		// Nothing lands after its caller gave up, or once its session is
		// past its fence deadline: checked before each try.
		if rs = answerFenced(c, answerEnded(rs)); len(rs) == 0 {
			return
		}
		g := guardsOf(rs)
		cmps, elseOps := g.cmps(len(rs)), g.reads(len(rs))
		puts := make([]clientv3.Op, 0, 2*len(rs))
		live := make([]*claimReq, 0, len(rs)) // the requests this transaction decides, in Else order
		next := make([]claimState, 0, len(rs))
		for _, r := range rs {
			cc := caches[r.term]
			cc.mu.Lock()
			e := cc.entry(r.job)
			bad, cur, rev := e.bad, e.st, e.rev
			cc.mu.Unlock()
			if bad != nil {
				r.done <- bad
				continue
			}
			st, err := r.apply(cur)
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
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
			puts = append(puts, clientv3.OpPut(key, string(v)))
			if r.runID != "" {
				puts = append(puts, clientv3.OpPut(c.runKey(r.job, r.runID), string(r.record)))
			}
			elseOps = append(elseOps, clientv3.OpGet(key))
			live, next = append(live, r), append(next, st)
		}
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
				caches[r.term].set(r.job, next[i], resp.Header.Revision)
				r.done <- nil
			}
			return
		}
		if stale := c.staleTerms(g, resp); len(stale) > 0 {
			rs = answerStale(live, stale) // the other terms' claims, again
			continue
		}
		// Every term is fine: a claim key changed behind its copy. Read it
		// again from the failure branch and decide again.
		for i, r := range live {
			c.refresh(caches[r.term], r.job, resp.Responses[len(g.terms)+i].GetResponseRange().GetKvs())
		}
		if try >= maxTries {
			for _, r := range live {
				r.done <- fmt.Errorf("claim of %s: its claim key kept changing behind the leader (%d tries)", r.job, try)
			}
			return
		}
		rs = live
	}
}

// cachesOf returns the claim cache of each term of rs and the requests
// that may go into this transaction: those whose term has a cache (the
// others fail with its error) and whose job is in the term's shard and
// free, or that need no claim key (job says). A request whose job is busy waits in its cache and is handed to
// requeue when the job is released (releaseAll).
func cachesOf[R interface{ req() *request }](c *Coordinator, rs []R, job func(R) (string, bool), requeue func(R)) (map[*Term]*claimCache, []R) {
	caches := map[*Term]*claimCache{}
	var out []R
	for _, t := range guardsOf(rs).terms {
		var mine []R
		for _, r := range rs {
			if r.req().term != t {
				continue
			}
			if name, ok := job(r); ok && shard.Of(name, c.opts.Shards) != t.Shard {
				r.req().done <- fmt.Errorf("job %s is in shard %d: its claims are decided under that shard's term, not shard %d's",
					name, shard.Of(name, c.opts.Shards), t.Shard)
				continue
			}
			mine = append(mine, r)
		}
		if !slices.ContainsFunc(mine, func(r R) bool { _, ok := job(r); return ok }) {
			out = append(out, mine...) // nothing to hold: no cache needed
			continue
		}
		cc, err := c.claimsOf(t)
		if err != nil {
			for _, r := range mine {
				r.req().done <- err
			}
			continue
		}
		caches[t] = cc
		out = append(out, acquire(cc, mine, job, requeue)...)
	}
	return caches, out
}

// releaseAll frees the jobs cachesOf took for rs.
func releaseAll[R interface{ req() *request }](caches map[*Term]*claimCache, rs []R, job func(R) (string, bool)) {
	for t, cc := range caches {
		var jobs []string
		for _, r := range rs {
			if name, ok := job(r); ok && r.req().term == t {
				jobs = append(jobs, name)
			}
		}
		cc.release(jobs)
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

// ReclaimRecording is Reclaim that also writes a run record of job
// (runID, rec) in the same transaction, if the takeover succeeds: the
// record of the attempt prev names, so that it cannot be lost with the
// leader that took the slot over (as a second write could be); then it
// keeps the job's records within keep and maxAge as RecordRun does.
func (c *Coordinator) ReclaimRecording(ctx context.Context, t *Term, job string, slot time.Time, prev, claim []byte, runID string, rec []byte, keep int, maxAge time.Duration) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindReclaim, job: job, slot: slot, value: claim, prev: prev, runID: runID, record: rec,
		keep: keep, maxAge: maxAge})
}

// ClaimRecording is Claim that also writes a run record of job (runID,
// rec) in the same transaction, if the claim succeeds, and then keeps the
// job's records within keep and maxAge as RecordRun does.
func (c *Coordinator) ClaimRecording(ctx context.Context, t *Term, job string, slot time.Time, claim []byte, runID string, rec []byte, keep int, maxAge time.Duration) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindClaim, job: job, slot: slot, value: claim, runID: runID, record: rec,
		keep: keep, maxAge: maxAge})
}

// SkipSlot marks a slot of job decided without running it, so that no
// later claim of it succeeds, and writes the run record (runID, rec) that
// says why in the same transaction (none if runID is ""); then it keeps
// the job's records within keep and maxAge as RecordRun does. Errors as
// for Claim.
func (c *Coordinator) SkipSlot(ctx context.Context, t *Term, job string, slot time.Time, runID string, rec []byte, keep int, maxAge time.Duration) error {
	return c.batch.do(ctx, t, &claimReq{kind: kindSkip, job: job, slot: slot, runID: runID, record: rec,
		keep: keep, maxAge: maxAge})
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
