package coord

// One shard count at a time. A job's shard is its hash modulo the count
// (shard.Of), so a replica leading shard 5 of 8 and one leading shard 0 of 4
// can both lead job j8: a rolling change of cluster.shards gave jobs two
// leaders for job_set_settle, their fencing tokens went backwards, overlap
// forbid did not hold, and a slot that ran got a false lock_lost record
// (attack 22, T1). Every replica that campaigns or leads holds a mark,
// counts/<its count>/<its lease>, put only if no mark of another count
// exists, in the same transaction, and removed when it campaigns and leads
// nothing more. Replicas with the new count therefore campaign only once
// every replica of the old count has stepped down (their job set is not the
// cluster's any more: they do after job_set_settle) or died (the mark goes
// with the lease), and their election keys, so their fencing tokens, come
// after every term of the old count.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/backoff"
)

func (c *Coordinator) countsPrefix() string { return c.prefix + "counts/" }

// countMark is ss's mark of this replica's shard count.
func (c *Coordinator) countMark(ss *session) string {
	return fmt.Sprintf("%s%d/%x", c.countsPrefix(), c.opts.Shards, ss.lease)
}

// otherCounts are the key ranges of every other count's marks: before and
// after this count's prefix ("counts/4/" ends before "counts/40", since
// '/' sorts just before '0').
func (c *Coordinator) otherCounts() [2][2]string {
	own := c.countsPrefix() + strconv.Itoa(c.opts.Shards) + "/"
	return [2][2]string{{c.countsPrefix(), own}, {clientv3.GetPrefixRangeEnd(own), clientv3.GetPrefixRangeEnd(c.countsPrefix())}}
}

// enterCount holds this replica's count mark on ss for one more shard
// goroutine, putting it first if none holds it: it waits, while ctx lives,
// until no replica holds a mark of another count. It logs once that it
// waits, and for whom.
func (c *Coordinator) enterCount(ctx context.Context, ss *session, shard int) error {
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second})
	said := ""
	for {
		c.countMu.Lock()
		if c.countUsers > 0 && c.countLease == ss.lease {
			c.countUsers++
			c.countMu.Unlock()
			return nil
		}
		others, rev, err := c.putCountMark(ctx, ss)
		if err == nil && len(others) == 0 {
			c.countUsers, c.countLease = 1, ss.lease
			c.countMu.Unlock()
			if said != "" {
				c.log.Info("the replicas of the other shard count have stepped down: campaigning", "shard", shard, "shards", c.opts.Shards)
			}
			return nil
		}
		c.countMu.Unlock()
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil:
			c.log.Warn("shard-count mark not read; trying again", "shard", shard, "error", err)
			if !backoff.Sleep(ctx, wait.Next()) {
				return context.Cause(ctx)
			}
			continue
		}
		if who := strings.Join(others, ", "); who != said {
			said = who
			c.log.Info("not campaigning yet: replicas lead under another cluster.shards; waiting for them to step down, so that no job has two leaders",
				"shard", shard, "shards", c.opts.Shards, "others", others)
		}
		c.waitCountsChange(ctx, rev)
	}
}

// putCountMark puts ss's mark unless a mark of another count exists, and
// returns those ("node (cluster.shards=N)") and the revision read.
func (c *Coordinator) putCountMark(ctx context.Context, ss *session) ([]string, int64, error) {
	r := c.otherCounts()
	tctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(tctx).If(
		clientv3.Compare(clientv3.CreateRevision(r[0][0]), "=", 0).WithRange(r[0][1]),
		clientv3.Compare(clientv3.CreateRevision(r[1][0]), "=", 0).WithRange(r[1][1]),
	).Then(clientv3.OpPut(c.countMark(ss), c.opts.Node, clientv3.WithLease(ss.lease))).Else(
		clientv3.OpGet(r[0][0], clientv3.WithRange(r[0][1])),
		clientv3.OpGet(r[1][0], clientv3.WithRange(r[1][1])),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("shard-count mark: %w", err)
	}
	if resp.Succeeded {
		return nil, resp.Header.Revision, nil
	}
	var others []string
	for _, rr := range resp.Responses {
		for _, kv := range rr.GetResponseRange().GetKvs() {
			count, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), c.countsPrefix()), "/")
			others = append(others, string(kv.Value)+" (cluster.shards="+count+")")
		}
	}
	sort.Strings(others)
	return others, resp.Header.Revision, nil
}

// waitCountsChange returns once a mark changes after rev, ctx ends, or a
// few seconds have passed (a lost watch answers nothing).
func (c *Coordinator) waitCountsChange(ctx context.Context, rev int64) {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
	defer cancel()
	for range c.cli.Watch(wctx, c.countsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		return
	}
}

// leaveCount gives up one shard goroutine's hold of the count mark on ss,
// and removes the mark when none holds it (after the goroutine's term, and
// its election key, have ended): a replica that campaigns and leads nothing
// holds no count back.
func (c *Coordinator) leaveCount(ss *session) {
	c.countMu.Lock()
	defer c.countMu.Unlock()
	if c.countLease != ss.lease || c.countUsers == 0 {
		return
	}
	if c.countUsers--; c.countUsers > 0 || ss.ctx.Err() != nil { // an ended session's mark went with its lease
		return
	}
	for try := 0; try < 3; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		_, err := c.cli.Delete(ctx, c.countMark(ss))
		cancel()
		if err == nil {
			return
		}
		c.log.Warn("shard-count mark not removed; trying again", "error", err)
	}
	c.log.Warn("shard-count mark not removed: replicas of another cluster.shards wait until this session ends")
}
