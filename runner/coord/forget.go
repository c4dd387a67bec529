package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrJobBusy is returned by ForgetJob for a job with a claimed slot that
// has not finished.
var ErrJobBusy = errors.New("job has an open claim")

// StoredJobs lists the jobs that have a claim key, a horizon or a pause
// flag, and with withRuns also those with only run records, trigger
// requests or idempotency receipts (one read per job that has any: use it
// seldom). The leader compares it with its job set to find the keys of
// jobs that were removed.
func (c *Coordinator) StoredJobs(ctx context.Context, withRuns bool) ([]string, error) {
	found := map[string]bool{}
	for _, prefix := range []string{c.claimPrefix(), c.prefix + "horizons/", c.pausedPrefix()} {
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
// configured: its claim key, horizon, pause flag, run records, trigger
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
	c.pmu.Lock()
	delete(c.pruned, job)
	c.pmu.Unlock()
	c.rmu.Lock()
	delete(c.receipts, job)
	c.rmu.Unlock()
	return nil
}
