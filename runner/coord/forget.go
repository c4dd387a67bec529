package coord

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrJobBusy is returned by ForgetJob for a job with a claimed slot that
// has not finished.
var ErrJobBusy = errors.New("job has an open claim")

// StoredJobs lists the jobs that have a claim key, a horizon, a pause
// flag or a pause history, and with withRuns also those with only run records, trigger
// requests or idempotency receipts (one read per job that has any: use it
// seldom). The leader compares it with its job set to find the keys of
// jobs that were removed.
func (c *Coordinator) StoredJobs(ctx context.Context, withRuns bool) ([]string, error) {
	found := map[string]bool{}
	for _, prefix := range []string{c.claimPrefix(), c.prefix + "horizons/", c.pausedPrefix(), c.pausesPrefix()} {
		err := c.rangeAll(ctx, prefix, func(kv *mvccKV) {
			found[strings.TrimPrefix(string(kv.Key), prefix)] = true
		})
		if err != nil {
			return nil, fmt.Errorf("list stored jobs: %w", err)
		}
	}
	if withRuns {
		for _, root := range []string{c.prefix + "runs/", c.triggerPrefix(), c.prefix + "idempotency/"} {
			jobs, err := c.skipScan(ctx, root)
			if err != nil {
				return nil, fmt.Errorf("list stored jobs: %w", err)
			}
			for _, j := range jobs {
				found[j] = true
			}
		}
	}
	out := make([]string, 0, len(found))
	for j := range found {
		out = append(out, j)
	}
	slices.Sort(out)
	return out, nil
}

// ForgetJob deletes everything stored for a job that is no longer
// configured: its claim key, horizon, pause flag and history, run records, trigger
// requests and idempotency receipts, in one transaction under t's fencing
// guard. It refuses (ErrJobBusy) while the job has an open claim: a run
// the leader has not recorded yet. Trigger requests are deleted whatever
// their state: the caller leaves a job alone while its requests wait for
// a decision (runner/sweep.go).
func (c *Coordinator) ForgetJob(ctx context.Context, t *Term, job string) error {
	cc, err := c.claimsOf(t)
	if err != nil {
		return err
	}
	if err := cc.hold(ctx, job); err != nil {
		return err
	}
	defer cc.release([]string{job})
	cc.mu.Lock()
	e := cc.entry(job)
	open, rev := len(e.st.Open), e.rev
	cc.mu.Unlock()
	if open > 0 {
		return fmt.Errorf("forget job %s: %w (%d slots)", job, ErrJobBusy, open)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	key := c.claimKey(job)
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token),
		clientv3.Compare(clientv3.ModRevision(key), "=", rev),
	).Then(
		clientv3.OpDelete(key),
		clientv3.OpDelete(c.horizonKey(job)),
		clientv3.OpDelete(c.pausedPrefix()+job),
		clientv3.OpDelete(c.pausesPrefix()+job),
		clientv3.OpDelete(c.runKey(job, ""), clientv3.WithPrefix()),
		clientv3.OpDelete(c.triggerKey(job, ""), clientv3.WithPrefix()),
		clientv3.OpDelete(c.idempotencyPrefix(job), clientv3.WithPrefix()),
	).Else(clientv3.OpGet(t.key, clientv3.WithKeysOnly()), clientv3.OpGet(key)).Commit()
	if err != nil {
		c.noteWriteError(err)
		return fmt.Errorf("forget job %s: %w", job, err)
	}
	if !resp.Succeeded {
		if err := c.guardFailed(t, resp); errors.Is(err, ErrNotLeader) {
			return err
		}
		c.refresh(cc, job, resp.Responses[1].GetResponseRange().GetKvs())
		return fmt.Errorf("forget job %s: its claim key changed; try again", job)
	}
	cc.set(job, claimState{}, 0)
	c.forgetCounts(job)
	return nil
}

// RequestedJobs lists the jobs that have trigger requests or idempotency
// receipts: keys the API stores for any job some replica has, whether or
// not a leader has it. One keys-only read per such job (usually few: the
// jobs triggered, paused or resumed through the API).
func (c *Coordinator) RequestedJobs(ctx context.Context) ([]string, error) {
	found := map[string]bool{}
	for _, root := range []string{c.triggerPrefix(), c.prefix + "idempotency/"} {
		jobs, err := c.skipScan(ctx, root)
		if err != nil {
			return nil, fmt.Errorf("list requested jobs: %w", err)
		}
		for _, j := range jobs {
			found[j] = true
		}
	}
	return slices.Sorted(maps.Keys(found)), nil
}

// ForgetIdleJob deletes the run records and idempotency receipts of a job
// none of which is younger than maxAge, when the job has no trigger
// request (pending or running): a receipt's time is receiptAt's answer
// for it (the caller owns their format), a record's the time in its run
// ID (UUIDv7). One transaction under t's fencing guard, which also
// compares that none of the job's records and receipts changed, and no
// trigger request of it was stored, since they were read; deleted reports
// whether it deleted them (false when they are young, or changed: the
// caller looks again later). The claim key and the pause flag and history stay. The
// leader calls it for jobs it does not have (runner/sweep.go), which the
// sweep of removed jobs leaves alone while the replicas' job sets differ:
// the keys an expired trigger request leaves, its skip record and its
// receipt, go by age too.
func (c *Coordinator) ForgetIdleJob(ctx context.Context, t *Term, job string, maxAge time.Duration,
	receiptAt func([]byte) time.Time) (deleted bool, err error) {
	if maxAge <= 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	runs, receipts, triggers := c.runKey(job, ""), c.idempotencyPrefix(job), c.triggerKey(job, "")
	read, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(runs, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
		clientv3.OpGet(receipts, clientv3.WithPrefix()),
		clientv3.OpGet(triggers, clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return false, fmt.Errorf("read the keys of %s: %w", job, err)
	}
	newest := read.Responses[0].GetResponseRange().GetKvs()
	kept := read.Responses[1].GetResponseRange().GetKvs()
	if read.Responses[2].GetResponseRange().GetCount() > 0 || len(newest) == 0 && len(kept) == 0 {
		return false, nil
	}
	cutoff := time.Now().Add(-maxAge)
	if len(newest) > 0 && string(newest[0].Key) >= c.runKey(job, runIDPrefix(cutoff)) {
		return false, nil
	}
	for _, kv := range kept {
		if !receiptAt(kv.Value).Before(cutoff) {
			return false, nil
		}
	}
	since := read.Header.Revision + 1
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token),
		clientv3.Compare(clientv3.ModRevision(runs), "<", since).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(receipts), "<", since).WithPrefix(),
		clientv3.Compare(clientv3.CreateRevision(triggers), "=", 0).WithPrefix(),
	).Then(
		clientv3.OpDelete(runs, clientv3.WithPrefix()),
		clientv3.OpDelete(receipts, clientv3.WithPrefix()),
	).Else(clientv3.OpGet(t.key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		c.noteWriteError(err)
		return false, fmt.Errorf("forget the aged keys of %s: %w", job, err)
	}
	if !resp.Succeeded {
		if err := c.guardFailed(t, resp); errors.Is(err, ErrNotLeader) {
			return false, err
		}
		return false, nil // written to since the read
	}
	c.forgetCounts(job)
	return true, nil
}

// runIDPrefix is the start of the UUIDv7 run IDs of at's millisecond: run
// IDs that sort before it are older.
func runIDPrefix(at time.Time) string {
	ms := at.UnixMilli()
	return fmt.Sprintf("%08x-%04x", ms>>16, ms&0xffff)
}

// forgetCounts drops what the coordinator counts of job's records and
// receipts (for their pruning), once its keys are gone.
func (c *Coordinator) forgetCounts(job string) {
	c.pmu.Lock()
	delete(c.pruned, job)
	c.pmu.Unlock()
	c.rmu.Lock()
	delete(c.receipts, job)
	c.rmu.Unlock()
}
