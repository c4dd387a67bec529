package coord

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Mutating API requests (trigger, pause, resume) are idempotent: each one
// stores, in the same transaction as its effect and only if it is absent, a
// receipt under idempotency/<job>/<sha256 of its key>. A request repeated
// with the same key finds the receipt and takes no effect again, whether the
// first one was answered, timed out, or is still on its way to etcd: the
// two transactions are ordered by etcd, and the second one's comparison
// fails. That is also how a replica settles a write whose answer it lost
// (a timeout during an etcd stall): it repeats it.
//
// Receipts are bounded by configuration: a job keeps its newest Keep
// receipts, and a few more between prunings (the oldest, by creation
// revision, are deleted every Keep/10 new ones), so a key is remembered for
// at least the job's last Keep mutating requests.

// Idempotency names a mutating request.
type Idempotency struct {
	// Key is the request's idempotency key, as the client sent it or as the
	// server made it; only its hash is stored.
	Key string
	// Receipt is stored with the request's effect: what a repeated request
	// is answered with.
	Receipt []byte
	// Keep is how many receipts a job keeps (the newest); 0 keeps all.
	Keep int
}

// Applied is the outcome of an idempotent request.
type Applied struct {
	// Receipt is this request's receipt, or the one an earlier request with
	// the same key stored (Replayed).
	Receipt  []byte
	Replayed bool
}

// ErrNotStored marks an error after which the request certainly took no
// effect (it failed before anything was written): repeating it is safe
// even without an idempotency key. Any other error from a write leaves the
// outcome unknown.
var ErrNotStored = errors.New("not stored")

func (c *Coordinator) idempotencyPrefix(job string) string {
	return c.prefix + "idempotency/" + job + "/"
}

func (c *Coordinator) idempotencyKey(job, key string) string {
	sum := sha256.Sum256([]byte(key))
	return c.idempotencyPrefix(job) + hex.EncodeToString(sum[:])
}

// SetPaused pauses or resumes a job for every replica, once per idempotency
// key. It needs no leadership: it is an operator's instruction, not a run's
// write. note is the request's, JSON whose "at" is its time: a pause stores
// it as the flag (pausing a paused job leaves the flag as it is), a resume
// deletes the flag and appends the stretch it closes to the job's pause
// history (pauses.go), in the same transaction as the receipt. An error
// wrapping ErrNotStored means it took no effect; any other error leaves the
// outcome unknown until the call is repeated with the same idem.
func (c *Coordinator) SetPaused(ctx context.Context, job string, paused bool, note []byte, idem Idempotency) (Applied, error) {
	ikey := c.idempotencyKey(job, idem.Key)
	for try := 0; ; try++ {
		rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		got, err := c.cli.Txn(rctx).Then(clientv3.OpGet(ikey), clientv3.OpGet(c.pausedPrefix()+job),
			clientv3.OpGet(c.pausesPrefix()+job)).Commit()
		cancel()
		if err != nil {
			return Applied{}, fmt.Errorf("set paused=%v for %s: %w: %w", paused, job, ErrNotStored, err)
		}
		if kvs := got.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			return Applied{Receipt: kvs[0].Value, Replayed: true}, nil
		}
		ops, cmps := c.pauseOps(job, paused, note, first(got.Responses[1]), first(got.Responses[2]))
		wctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		resp, err := c.cli.Txn(wctx).If(append(cmps, clientv3.Compare(clientv3.CreateRevision(ikey), "=", 0))...).
			Then(append(ops, clientv3.OpPut(ikey, string(idem.Receipt)))...).
			Else(clientv3.OpGet(ikey)).Commit()
		cancel()
		if err != nil {
			return Applied{}, fmt.Errorf("set paused=%v for %s: outcome unknown: %w", paused, job, err)
		}
		if !resp.Succeeded {
			if first(resp.Responses[0]) != nil {
				return replayed(resp.Responses[0]), nil
			}
			if try >= 19 { // raced by other pauses and resumes of the job twenty times over
				return Applied{}, fmt.Errorf("set paused=%v for %s: %w: the job's pause changed meanwhile, again and again",
					paused, job, ErrNotStored)
			}
			continue // the flag or the history changed since read: read again
		}
		c.pruneReceipts(ctx, job, idem.Keep)
		return Applied{Receipt: idem.Receipt}, nil
	}
}

// first is the first key a Get in a transaction found, or nil.
func first(r *etcdserverpb.ResponseOp) *mvccKV {
	if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
		return kvs[0]
	}
	return nil
}

// replayed is the earlier request's receipt, from a Get of its key.
func replayed(r *etcdserverpb.ResponseOp) Applied {
	a := Applied{Replayed: true}
	if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
		a.Receipt = kvs[0].Value
	}
	return a
}

// maxPruneOps bounds the deletes of one pruning transaction (etcd's limit
// is 128 operations).
const maxPruneOps = 100

// pruneReceipts deletes a job's oldest receipts beyond keep, every
// keep/10 receipts this replica stored for the job (so a job holds at most
// about keep + keep/10 per replica storing them, and a request does not pay
// for a count and a delete). Best effort: a failure leaves a few extra
// until the next time.
func (c *Coordinator) pruneReceipts(ctx context.Context, job string, keep int) {
	if keep <= 0 {
		return
	}
	c.rmu.Lock()
	if c.receipts == nil {
		c.receipts = map[string]int{}
	}
	c.receipts[job]++
	due := c.receipts[job] >= max(keep/10, 1)
	if due {
		delete(c.receipts, job)
	}
	c.rmu.Unlock()
	if !due {
		return
	}
	prefix := c.idempotencyPrefix(job)
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count <= int64(keep) {
		return
	}
	extra := min(resp.Count-int64(keep), maxPruneOps)
	old, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(extra))
	if err != nil {
		return
	}
	ops := make([]clientv3.Op, 0, len(old.Kvs))
	for _, kv := range old.Kvs {
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	_, _ = c.cli.Txn(ctx).Then(ops...).Commit()
}
