package coord

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/backoff"
)

// Key layout under /pacer/<cluster>/:
//
//	leader/<lease>           election keys; the oldest leads
//	slots/<job>/<unix ns>    slot claims, then the slot's final record
//	horizons/<job>           unix ns before which the job's claims were pruned
//	runs/<job>/<run id>      one record per attempt or skipped slot (run IDs sort by time)
//	paused/<job>             present while the job is paused
//	triggers/<job>/<id>      manual trigger requests until decided (triggers.go)
//	idempotency/<job>/<hash> receipts of mutating API requests (idempotency.go)
//	members/<node>           each live replica's member record, on its member lease (members.go)
//	jobsets/<fingerprint>    stored job sets, a header and gzip chunks (epochs.go)
//	epochs/<token>/<unix ns> which job set each leader ran from when (epochs.go)

func (c *Coordinator) runKey(job, runID string) string { return c.prefix + "runs/" + job + "/" + runID }
func (c *Coordinator) pausedPrefix() string            { return c.prefix + "paused/" }

// RecordRun stores a run or skip record under t's fencing guard, and keeps
// about keep records for the job, none older than about 1.1 × maxAge (see
// pruneDue; the oldest go first). Run IDs are UUIDv7, so key order is time
// order.
func (c *Coordinator) RecordRun(ctx context.Context, t *Term, job, runID string, rec []byte, keep int, maxAge time.Duration) error {
	return c.record(ctx, t, job, runID, rec, keep, maxAge, time.Time{})
}

// FinishSlot is RecordRun for a slot's last attempt, which also replaces
// the slot's claim with the record, in the same transaction: the run's
// record and the slot's result are one write.
func (c *Coordinator) FinishSlot(ctx context.Context, t *Term, job string, slot time.Time, runID string, rec []byte, keep int, maxAge time.Duration) error {
	return c.record(ctx, t, job, runID, rec, keep, maxAge, slot)
}

// recordReq is one record write waiting for its batch.
type recordReq struct {
	request
	job, runID string
	value      []byte
	slot       time.Time // the slot whose claim the record replaces; zero for none
}

// maxRecordBatch bounds a batch of record writes: a record that finishes a
// slot takes two puts, so 40 stay within maxTxnOps.
const maxRecordBatch = 40

// record waits for its batch's outcome (each transaction is bounded by
// RequestTimeout) unless ctx ends first; a request whose ctx ended before
// its batch was sent is dropped, so it cannot land after its caller gave up.
func (c *Coordinator) record(ctx context.Context, t *Term, job, runID string, rec []byte, keep int, maxAge time.Duration, slot time.Time) error {
	r := &recordReq{request: newRequest(ctx, t), job: job, runID: runID, value: rec, slot: slot}
	c.records.add(r)
	select {
	case err := <-r.done:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return fmt.Errorf("record run %s: %w", runID, ctx.Err())
	}
	c.prune(ctx, job, keep, maxAge)
	return nil
}

// prune keeps a job's records within keep and maxAge, when due (pruneDue),
// after a record write.
func (c *Coordinator) prune(ctx context.Context, job string, keep int, maxAge time.Duration) {
	if !c.pruneDue(job, keep, maxAge) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	if maxAge > 0 {
		// Everything before the UUIDv7 prefix of the cutoff is older.
		ms := time.Now().Add(-maxAge).UnixMilli()
		cutoff := fmt.Sprintf("%08x-%04x", ms>>16, ms&0xffff)
		_, _ = c.cli.Delete(ctx, c.runKey(job, ""), clientv3.WithRange(c.runKey(job, cutoff)))
	}
	if keep > 0 {
		c.pruneRuns(ctx, job, keep)
	}
}

// commitRecordsOf writes a batch of t's records in one transaction under
// its fencing guard. A record that finishes a slot also replaces the slot's
// claim, provided the claim still exists; if one does not (pruned), that
// record is written alone and the batch is committed again.
func (c *Coordinator) commitRecordsOf(t *Term, rs []*recordReq) {
	if rs = answerEnded(rs); len(rs) == 0 { // again on every retry
		return
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)}
	var ops []clientv3.Op
	elseOps := []clientv3.Op{clientv3.OpGet(t.key, clientv3.WithKeysOnly())}
	var finishing []*recordReq // in Else order
	var now []*recordReq       // the requests this transaction decides
	seen := map[string]bool{}
	for _, r := range rs {
		// etcd refuses a key twice in one transaction: a record written
		// again (a retried write) waits for the next batch.
		run, slot := c.runKey(r.job, r.runID), ""
		if !r.slot.IsZero() {
			slot = c.slotKey(r.job, r.slot)
		}
		if seen[run] || (slot != "" && seen[slot]) {
			defer c.records.add(r)
			continue
		}
		seen[run], seen[slot] = true, true
		now = append(now, r)
		ops = append(ops, clientv3.OpPut(run, string(r.value)))
		if slot != "" {
			key := slot
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), ">", 0))
			ops = append(ops, clientv3.OpPut(key, string(r.value)))
			elseOps = append(elseOps, clientv3.OpGet(key, clientv3.WithKeysOnly()))
			finishing = append(finishing, r)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
	switch {
	case err != nil:
		for _, r := range now {
			r.done <- fmt.Errorf("record run %s: %w", r.runID, err)
		}
		return
	case resp.Succeeded:
		for _, r := range now {
			r.done <- nil
		}
		return
	}
	if err := c.guardFailed(t, resp); errors.Is(err, ErrNotLeader) {
		for _, r := range now {
			r.done <- ErrNotLeader
		}
		return
	}
	for i, r := range finishing {
		if len(resp.Responses[i+1].GetResponseRange().GetKvs()) == 0 {
			r.slot = time.Time{} // its claim is gone: keep the run record alone
		}
	}
	c.commitRecordsOf(t, now)
}

// pruneDue reports whether this record write should also prune the job's
// records: every keep/10 writes (every write for keep < 20, every 100 when
// keep is unlimited), or when the job was last pruned maxAge/10 ago or
// more. So a job holds at most about keep + keep/10 records, none older
// than about 1.1 × maxAge, and a run does not pay a read and a delete for
// its own record (three etcd requests instead of one).
func (c *Coordinator) pruneDue(job string, keep int, maxAge time.Duration) bool {
	every := 100
	if keep > 0 {
		every = max(keep/10, 1)
	}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.pruned == nil {
		c.pruned = map[string]pruneState{}
	}
	p := c.pruned[job]
	if p.at.IsZero() {
		p.at = time.Now() // counting starts with the job's first record here
	}
	p.writes++
	if p.writes < every && (maxAge <= 0 || time.Since(p.at) < maxAge/10) {
		c.pruned[job] = p
		return false
	}
	c.pruned[job] = pruneState{at: time.Now()}
	return true
}

// pruneState is how many records of a job were written since its records
// were last pruned, and when that was.
type pruneState struct {
	writes int
	at     time.Time
}

// pruneRuns deletes a job's oldest records beyond keep. Best effort: a
// failure leaves a few extra records until the next write.
func (c *Coordinator) pruneRuns(ctx context.Context, job string, keep int) {
	prefix := c.runKey(job, "")
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count <= int64(keep) {
		return
	}
	extra := resp.Count - int64(keep)
	old, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(extra))
	if err != nil || len(old.Kvs) == 0 {
		return
	}
	last := string(old.Kvs[len(old.Kvs)-1].Key)
	_, _ = c.cli.Delete(ctx, prefix, clientv3.WithRange(last+"\x00"))
}

// Runs returns up to limit of a job's records, newest first.
func (c *Coordinator) Runs(ctx context.Context, job string, limit int) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.runKey(job, ""), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("read runs of %s: %w", job, err)
	}
	out := make([][]byte, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, kv.Value)
	}
	return out, nil
}

// SlotRecord is a slot's stored claim or result.
type SlotRecord struct {
	Time  time.Time
	Value []byte
	// Revision is the key's modification revision, for Reclaim.
	Revision int64
}

// LastSlot returns the latest slot claimed for job before the instant
// before (any, if before is zero); its Time is zero when there is none.
// Bounded, it leaves out slots a leader whose clock ran ahead claimed early,
// which say nothing about what was missed up to now.
func (c *Coordinator) LastSlot(ctx context.Context, job string, before time.Time) (SlotRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	end := clientv3.WithPrefix()
	if !before.IsZero() {
		end = clientv3.WithRange(c.slotKey(job, before))
	}
	resp, err := c.cli.Get(ctx, c.slotPrefix(job), end,
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return SlotRecord{}, fmt.Errorf("read last slot of %s: %w", job, err)
	}
	if len(resp.Kvs) == 0 {
		return SlotRecord{}, nil
	}
	kv := resp.Kvs[0]
	ns, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), c.slotPrefix(job)), 10, 64)
	if err != nil {
		return SlotRecord{}, fmt.Errorf("bad slot key %q", kv.Key)
	}
	return SlotRecord{Time: time.Unix(0, ns).UTC(), Value: kv.Value, Revision: kv.ModRevision}, nil
}

// Reclaim takes over a slot another term claimed and never completed,
// provided the slot record is still the one read (at revision rev) and t
// still leads. It returns ErrSlotTaken if the record changed.
func (c *Coordinator) Reclaim(ctx context.Context, t *Term, job string, slot time.Time, rev int64, claim []byte) error {
	key := c.slotKey(job, slot)
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token),
		clientv3.Compare(clientv3.ModRevision(key), "=", rev),
	).Then(clientv3.OpPut(key, string(claim))).Else(clientv3.OpGet(t.key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return fmt.Errorf("reclaim slot %s: %w", key, err)
	}
	if resp.Succeeded {
		return nil
	}
	return c.guardFailed(t, resp)
}

// SlotValue returns the stored claim or result of a slot, or nil.
func (c *Coordinator) SlotValue(ctx context.Context, job string, slot time.Time) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.slotKey(job, slot))
	if err != nil {
		return nil, fmt.Errorf("read slot of %s: %w", job, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// WatchPaused calls set with the full set of paused jobs now and after every
// change, until ctx ends. It reconnects by itself.
func (c *Coordinator) WatchPaused(ctx context.Context, set func(map[string]bool)) {
	c.watchPrefix(ctx, c.pausedPrefix(), func(kvs map[string]*mvccpb.KeyValue) {
		paused := make(map[string]bool, len(kvs))
		for k := range kvs {
			paused[k] = true
		}
		set(paused)
	})
}

// watchPrefix keeps a local copy of the keys under prefix (relative names)
// and calls fn with it after the initial read and every change.
func (c *Coordinator) watchPrefix(ctx context.Context, prefix string, fn func(map[string]*mvccpb.KeyValue)) {
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second})
	for ctx.Err() == nil {
		err := c.watchOnce(ctx, prefix, fn)
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("watch interrupted; re-reading", "prefix", prefix, "error", err)
		if !backoff.Sleep(ctx, wait.Next()) {
			return
		}
	}
}

func (c *Coordinator) watchOnce(ctx context.Context, prefix string, fn func(map[string]*mvccpb.KeyValue)) error {
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	resp, err := c.cli.Get(gctx, prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return err
	}
	state := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		state[strings.TrimPrefix(string(kv.Key), prefix)] = kv
	}
	fn(state)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for wr := range c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			if ev.Type == clientv3.EventTypeDelete {
				delete(state, name)
			} else {
				state[name] = ev.Kv
			}
		}
		fn(state)
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch channel closed")
}

// ClusterState is what this replica knows of the cluster.
type ClusterState struct {
	Cluster      string    `json:"cluster"`
	Node         string    `json:"node"`
	Leader       string    `json:"leader"`
	FencingToken int64     `json:"fencing_token"`
	Members      []string  `json:"members"` // replicas campaigning, leader first
	Leading      bool      `json:"leading"`
	LeaseTTL     string    `json:"lease_ttl"`
	LeaderSince  time.Time `json:"leader_since,omitzero"`
	// KeepaliveAge is, while leading, how long ago the last acknowledged
	// lease keepalive was sent; the replica self-fences at TTL minus a margin.
	KeepaliveAge string `json:"keepalive_age,omitempty"`
}

// State reads the cluster's leadership state.
func (c *Coordinator) State(ctx context.Context) (ClusterState, error) {
	st := ClusterState{Cluster: c.opts.Cluster, Node: c.opts.Node, LeaseTTL: c.opts.LeaseTTL.String()}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.prefix+"leader/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return st, fmt.Errorf("read election: %w", err)
	}
	for i, kv := range resp.Kvs {
		st.Members = append(st.Members, string(kv.Value))
		if i == 0 {
			st.Leader, st.FencingToken = string(kv.Value), kv.CreateRevision
		}
	}
	if t := c.Term(); t != nil {
		st.Leading, st.LeaderSince = true, t.Since
		if ack := c.lastAck.Load(); ack != 0 {
			st.KeepaliveAge = time.Since(time.Unix(0, ack)).Round(time.Millisecond).String()
		}
	}
	return st, nil
}
