package coord

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Manual trigger requests live under triggers/<job>/<id>, one key each,
// from the API call that stores them until the leader has decided them and
// the decision is recorded:
//
//	          RequestTrigger (any replica; bounded, idempotent)
//	(none) ─────────────────────────────────────────────────► pending
//	pending ── SkipTrigger: delete it + put its skip record ──► (none)
//	pending ── RunTrigger: replace it by the run's claim ─────► running
//	running ── FinishTrigger: delete it + put the run's record► (none)
//	running, claimed under an older token ── the new leader's delivery
//	        policy: SkipTrigger (lost) or RunTrigger (run again)
//
// Every decision is one transaction under the leader's fencing guard that
// also compares the key's modification revision with the one the decision
// was made on, so a request is decided exactly once, and a decided request
// never comes back: there is no state in which it is both decided and
// pending.

// Trigger is a manual trigger request as stored: pending, or decided to run
// (Body then also holds the run's claim; the runner gives Body its meaning).
type Trigger struct {
	Job string
	ID  string
	// Body is the request as stored.
	Body []byte
	// Revision is the key's modification revision: a decision holds only
	// if the request is still at it.
	Revision int64
}

// ErrTriggerDecided means the request changed or is gone since it was read:
// it was decided already.
var ErrTriggerDecided = errors.New("trigger request already decided")

// TriggerLimits bound the trigger requests kept in etcd, pending or
// running. Zero is no bound.
type TriggerLimits struct {
	PerJob int // of one job
	Total  int // of every job together
}

// LimitError refuses a trigger request because a bound is reached. The
// request was not stored.
type LimitError struct {
	Job     string
	Pending int64 // requests kept (of the job, or of every job)
	Limit   int
	PerJob  bool // the job's bound, else the total
}

func (e *LimitError) Error() string {
	if e.PerJob {
		return fmt.Sprintf("job %q has %d trigger requests pending or running, the most triggers.max_pending_per_job (%d) allows: "+
			"not stored; wait until the leader has decided them (pacer runs %s)", e.Job, e.Pending, e.Limit, e.Job)
	}
	return fmt.Sprintf("the cluster has %d trigger requests pending or running, the most triggers.max_pending (%d) allows: "+
		"not stored; wait until the leader has decided them (is there a leader? pacer status)", e.Pending, e.Limit)
}

// Unwrap makes a LimitError an ErrNotStored.
func (e *LimitError) Unwrap() error { return ErrNotStored }

// maxRequestTries bounds how often RequestTrigger reads again after other
// replicas stored requests between its read and its write.
const maxRequestTries = 20

func (c *Coordinator) triggerPrefix() string            { return c.prefix + "triggers/" }
func (c *Coordinator) triggerKey(job, id string) string { return c.triggerPrefix() + job + "/" + id }

// RequestTrigger stores a manual trigger request for the leader to decide,
// once per idempotency key, within the limits. It reads the request's
// receipt and the counts of kept requests, then writes the request and its
// receipt provided the receipt is still absent and no trigger request was
// created since the read (so the bounds hold exactly, whatever other
// replicas do at the same time).
//
// A LimitError, or an error wrapping ErrNotStored, means nothing was
// stored; any other error leaves the outcome unknown until the call is
// repeated with the same idem.
func (c *Coordinator) RequestTrigger(ctx context.Context, job, id string, body []byte, idem Idempotency, lim TriggerLimits) (Applied, error) {
	// One request at a time from this replica: concurrent ones would only
	// invalidate each other's reads.
	select {
	case c.requests <- struct{}{}:
		defer func() { <-c.requests }()
	case <-ctx.Done():
		return Applied{}, fmt.Errorf("request trigger of %s: %w: %w", job, ErrNotStored, ctx.Err())
	}
	ikey := c.idempotencyKey(job, idem.Key)
	for try := 1; ; try++ {
		// The first read may come from this member's own state, however
		// stale: the write's comparisons decide, and a later read is
		// linearizable.
		var opts []clientv3.OpOption
		if try == 1 {
			opts = append(opts, clientv3.WithSerializable())
		}
		rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		read, err := c.cli.Txn(rctx).Then(
			clientv3.OpGet(ikey, opts...),
			clientv3.OpGet(c.triggerPrefix()+job+"/", append(opts, clientv3.WithPrefix(), clientv3.WithCountOnly())...),
			clientv3.OpGet(c.triggerPrefix(), append(opts, clientv3.WithPrefix(), clientv3.WithCountOnly())...),
		).Commit()
		cancel()
		if err != nil {
			// Only reads were sent in this call since its last definite
			// answer: nothing of it can land.
			return Applied{}, fmt.Errorf("request trigger of %s: %w: %w", job, ErrNotStored, err)
		}
		if kvs := read.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			return Applied{Receipt: kvs[0].Value, Replayed: true}, nil
		}
		perJob, total := read.Responses[1].GetResponseRange().GetCount(), read.Responses[2].GetResponseRange().GetCount()
		if lim.PerJob > 0 && perJob >= int64(lim.PerJob) {
			return Applied{}, &LimitError{Job: job, Pending: perJob, Limit: lim.PerJob, PerJob: true}
		}
		if lim.Total > 0 && total >= int64(lim.Total) {
			return Applied{}, &LimitError{Job: job, Pending: total, Limit: lim.Total}
		}
		wctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		resp, err := c.cli.Txn(wctx).If(
			clientv3.Compare(clientv3.CreateRevision(ikey), "=", 0),
			// No trigger request created since the read (decisions,
			// which only rewrite or delete requests, do not matter: they
			// do not raise the counts).
			clientv3.Compare(clientv3.CreateRevision(c.triggerPrefix()), "<", read.Header.Revision+1).WithPrefix(),
		).Then(clientv3.OpPut(c.triggerKey(job, id), string(body)), clientv3.OpPut(ikey, string(idem.Receipt))).
			Else(clientv3.OpGet(ikey)).Commit()
		cancel()
		if err != nil {
			return Applied{}, fmt.Errorf("request trigger of %s: outcome unknown: %w", job, err)
		}
		if resp.Succeeded {
			c.pruneReceipts(ctx, job, idem.Keep)
			return Applied{Receipt: idem.Receipt}, nil
		}
		if a := replayed(resp.Responses[0]); a.Receipt != nil {
			return a, nil // stored by an earlier request (perhaps this call's own earlier try)
		}
		if try == maxRequestTries {
			return Applied{}, fmt.Errorf("request trigger of %s: %w: other requests were stored between its read and its write %d times in a row; try again",
				job, ErrNotStored, try)
		}
	}
}

// WatchTriggers calls fn with every stored trigger request now and after
// every change, until ctx ends. It reconnects by itself.
func (c *Coordinator) WatchTriggers(ctx context.Context, fn func([]Trigger)) {
	c.watchPrefix(ctx, c.triggerPrefix(), func(kvs map[string]*mvccpb.KeyValue) {
		out := make([]Trigger, 0, len(kvs))
		for k, kv := range kvs {
			if job, id, ok := strings.Cut(k, "/"); ok {
				out = append(out, Trigger{Job: job, ID: id, Body: kv.Value, Revision: kv.ModRevision})
			}
		}
		fn(out)
	}, nil)
}

// Triggers returns a job's stored trigger requests, oldest first.
func (c *Coordinator) Triggers(ctx context.Context, job string) ([]Trigger, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	prefix := c.triggerPrefix() + job + "/"
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read trigger requests of %s: %w", job, err)
	}
	out := make([]Trigger, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, Trigger{Job: job, ID: strings.TrimPrefix(string(kv.Key), prefix), Body: kv.Value, Revision: kv.ModRevision})
	}
	return out, nil
}

// GetTrigger returns one stored trigger request; ok is false if it is gone.
func (c *Coordinator) GetTrigger(ctx context.Context, job, id string) (tr Trigger, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.triggerKey(job, id))
	if err != nil {
		return Trigger{}, false, fmt.Errorf("read trigger request %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return Trigger{}, false, nil
	}
	kv := resp.Kvs[0]
	return Trigger{Job: job, ID: id, Body: kv.Value, Revision: kv.ModRevision}, true, nil
}

// RunTrigger decides to run a request (or to run again one that a previous
// term left running): under t's fencing guard, if the request is still at
// tr.Revision, it replaces it by claim. It returns the new revision, for
// FinishTrigger; ErrTriggerDecided if the request changed, ErrNotLeader
// (ending t) if t is stale. records, run records of the job, are written
// in the same transaction (the record of the attempt a run again takes
// over): they count toward the job's history limits from its next record
// on.
func (c *Coordinator) RunTrigger(ctx context.Context, t *Term, tr Trigger, claim []byte, records ...StoredRun) (int64, error) {
	ops := []clientv3.Op{clientv3.OpPut(c.triggerKey(tr.Job, tr.ID), string(claim))}
	for _, r := range records {
		ops = append(ops, clientv3.OpPut(c.runKey(tr.Job, r.ID), string(r.Value)))
	}
	resp, err := c.decideTrigger(ctx, t, tr.Job, tr.ID, tr.Revision, ops...)
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// SkipTrigger decides not to run a request: under t's fencing guard, if
// the request is still at tr.Revision, it deletes it and puts its skip
// record (runID, rec), in one transaction. Errors as RunTrigger's.
func (c *Coordinator) SkipTrigger(ctx context.Context, t *Term, tr Trigger, runID string, rec []byte, keep int, maxAge time.Duration) error {
	if _, err := c.decideTrigger(ctx, t, tr.Job, tr.ID, tr.Revision,
		clientv3.OpDelete(c.triggerKey(tr.Job, tr.ID)), clientv3.OpPut(c.runKey(tr.Job, runID), string(rec))); err != nil {
		return err
	}
	c.prune(ctx, tr.Job, keep, maxAge)
	return nil
}

// FinishTrigger ends a triggered run: under t's fencing guard, it puts the
// run's last record and deletes the request, if the request is still the
// claim RunTrigger wrote at rev; if it is not (which only a bug or a hand
// edit makes happen), the record is written alone. succeeded is when the
// run ended if it succeeded (zero if it did not): then a second write
// keeps it in the job's claim key as the job's last success, as FinishSlot
// does in its one write (the request's transaction does not hold the claim
// key). That write is best effort: it is logged if it fails, and the
// run's record stands.
func (c *Coordinator) FinishTrigger(ctx context.Context, t *Term, job, id string, rev int64, runID string, rec []byte, succeeded time.Time, keep int, maxAge time.Duration) error {
	_, err := c.decideTrigger(ctx, t, job, id, rev,
		clientv3.OpDelete(c.triggerKey(job, id)), clientv3.OpPut(c.runKey(job, runID), string(rec)))
	if errors.Is(err, ErrTriggerDecided) {
		err = c.RecordRun(ctx, t, job, runID, rec, keep, maxAge)
	} else if err == nil {
		c.prune(ctx, job, keep, maxAge)
	}
	if err == nil && !succeeded.IsZero() {
		if nerr := c.noteSuccess(ctx, t, job, succeeded); nerr != nil {
			c.log.Warn("last success of a triggered run not kept in the claim key: the shard's next leader exports the one before",
				"job", job, "run_id", runID, "error", nerr)
		}
	}
	return err
}

// decideTrigger commits ops if t still leads and the request is at rev.
func (c *Coordinator) decideTrigger(ctx context.Context, t *Term, job, id string, rev int64, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	key := c.triggerKey(job, id)
	if err := c.pastFence(t); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token),
		clientv3.Compare(clientv3.ModRevision(key), "=", rev),
	).Then(ops...).Else(clientv3.OpGet(t.key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, fmt.Errorf("decide trigger request %s: %w", id, err)
	}
	if resp.Succeeded {
		return resp, nil
	}
	if err := c.guardFailed(t, resp); errors.Is(err, ErrNotLeader) {
		return nil, err
	}
	return nil, ErrTriggerDecided
}
