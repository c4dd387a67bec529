package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/runner/shard"
)

// Key layout under /pacer/<cluster>/ (every kind bounded by configuration,
// none by time):
//
//	leader/<shard>/<lease>   election keys, one election per shard; the oldest leads
//	handovers/<shard>        the mark of the shard's last graceful hand-over (handover.go)
//	counts/<n>/<lease>       a replica campaigning or leading under n shards, on its lease (counts.go)
//	agreed                   the cluster's latest job-set switch: set, time, node (agreed.go)
//	claims/<job>             the job's claims: floor, latest slots, open claims, and
//	                         when its last success ended (claims.go)
//	runs/<job>/<run id>      one record per attempt or skipped slot (run IDs sort by time),
//	                         at most about history.keep per job
//	paused/<job>             present while the job is paused: the pause's note, JSON with
//	                         "at", when it was paused
//	pauses/<job>             the job's last 32 pauses that ended, JSON [{from, until}],
//	                         appended by each resume (pauses.go)
//	triggers/<job>/<id>      manual trigger requests until decided (triggers.go),
//	                         at most triggers.max_pending
//	idempotency/<job>/<hash> receipts of mutating API requests (idempotency.go),
//	                         about history.keep per job
//	members/<node>           each live replica's member record, on its member lease (members.go)
//	jobsets/<fingerprint>    stored job sets, a header and gzip chunks (epochs.go)
//	epochs/<token>/<unix ns> which job set each leader ran from when (epochs.go)
//	horizons/<job>           only for jobs moved from the previous layout: a number
//	                         that makes a replica of the previous version refuse
//	                         every slot of the job (migrate.go)
//
// The keys of a job that is no longer configured are removed (ForgetJob).

func (c *Coordinator) runKey(job, runID string) string { return c.prefix + "runs/" + job + "/" + runID }
func (c *Coordinator) pausedPrefix() string            { return c.prefix + "paused/" }

// RecordRun stores a run or skip record under t's fencing guard, and keeps
// about keep records for the job, none older than about 1.1 × maxAge (see
// pruneDue; the oldest go first). Run IDs are UUIDv7, so key order is time
// order.
func (c *Coordinator) RecordRun(ctx context.Context, t *Term, job, runID string, rec []byte, keep int, maxAge time.Duration) error {
	return c.record(ctx, t, &recordReq{job: job, runID: runID, value: rec}, keep, maxAge)
}

// FinishSlot is RecordRun for a slot's last attempt, which also closes the
// slot's claim (see claimState), in the same transaction: the run's record
// and the end of its claim are one write. succeeded is when the attempt
// ended if it succeeded (zero if it did not): the claim key keeps it, in
// the same write, as the job's last success (JobClaims.LastSuccess). A
// slot that is not open (never claimed, or finished before) only gets its
// record, and the success if it is the job's latest.
func (c *Coordinator) FinishSlot(ctx context.Context, t *Term, job string, slot time.Time, runID string, rec []byte, succeeded time.Time, keep int, maxAge time.Duration) error {
	return c.record(ctx, t, &recordReq{job: job, runID: runID, value: rec, slot: slot, succeeded: unixNano(succeeded)}, keep, maxAge)
}

// CloseSlot closes a slot's open claim without writing a record (its
// record was written before, as by the previous layout's last result).
func (c *Coordinator) CloseSlot(ctx context.Context, t *Term, job string, slot time.Time) error {
	return c.record(ctx, t, &recordReq{job: job, slot: slot}, 0, 0)
}

// noteSuccess writes only a job's last success into its claim key, if it is
// later than the one kept (a triggered run's: FinishTrigger).
func (c *Coordinator) noteSuccess(ctx context.Context, t *Term, job string, at time.Time) error {
	return c.record(ctx, t, &recordReq{job: job, succeeded: unixNano(at)}, 0, 0)
}

// recordReq is one record write waiting for its batch.
type recordReq struct {
	request
	job, runID string // runID "": no record, only the claim key written
	value      []byte
	slot       time.Time // the slot whose claim the record closes; zero for none
	succeeded  int64     // the end of the job's success the claim key keeps (Unix ns); 0: none
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// maxRecordBatch bounds a batch of record writes: a record that finishes a
// slot takes two puts, so 40 stay within maxTxnOps.
const maxRecordBatch = 40

// maxRecordBatchBytes bounds the bytes of a batch's records, well within
// etcd's request limit (--max-request-bytes, 1.5 MiB by default), which
// refuses a whole transaction over it: a record counts one more against
// maxRecordBatch for every recordBatchUnit bytes it has, so forty small
// records go together, about ten with 64 KiB of output each, and one over
// the budget goes alone (and only it is refused if it is too large).
const (
	maxRecordBatchBytes = 1 << 20
	recordBatchUnit     = maxRecordBatchBytes / maxRecordBatch
)

// recordWeight is what a record write counts against maxRecordBatch.
func recordWeight(r *recordReq) int { return 1 + len(r.value)/recordBatchUnit }

// record waits for its batch's outcome (each transaction is bounded by
// RequestTimeout) unless ctx ends first; a request whose ctx ended before
// its batch was sent is dropped, so it cannot land after its caller gave up.
func (c *Coordinator) record(ctx context.Context, t *Term, r *recordReq, keep int, maxAge time.Duration) error {
	r.request = newRequest(ctx, t)
	c.records.add(r)
	select {
	case err := <-r.done:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return fmt.Errorf("record run %s: %w", r.runID, ctx.Err())
	}
	if r.runID != "" {
		c.prune(ctx, r.job, keep, maxAge)
	}
	return nil
}

// prune keeps a job's records within keep and maxAge, when due (pruneDue),
// after a record write. One read (keys only: the oldest key, and the count)
// tells whether anything is to go; only then does it delete. (It deleted by
// age first, every time: a delete is a write through raft even when it
// finds nothing, and most prunes find nothing.)
func (c *Coordinator) prune(ctx context.Context, job string, keep int, maxAge time.Duration) {
	if c.pruneDue(job, keep, maxAge) {
		c.pruneNow(ctx, job, keep, maxAge)
	}
}

// pruneNow deletes a job's records older than maxAge, then the oldest
// beyond keep.
func (c *Coordinator) pruneNow(ctx context.Context, job string, keep int, maxAge time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	prefix := c.runKey(job, "")
	// Keys come in ascending order (etcd's own), so the first is the
	// oldest; Count is every key under prefix, whatever the limit.
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return // best effort: the next prune tries again
	}
	count := resp.Count
	if maxAge > 0 {
		// Everything before the UUIDv7 prefix of the cutoff is older.
		cutoff := c.runKey(job, runIDPrefix(time.Now().Add(-maxAge)))
		if string(resp.Kvs[0].Key) < cutoff {
			del, err := c.cli.Delete(ctx, prefix, clientv3.WithRange(cutoff))
			if err != nil {
				return
			}
			count -= del.Deleted
		}
	}
	if keep > 0 && count > int64(keep) {
		c.pruneRuns(ctx, job, keep)
	}
}

func recordJob(r *recordReq) (string, bool) { return r.job, !r.slot.IsZero() || r.succeeded != 0 }

// commitRecordsOf writes a batch of records, of any of this replica's
// terms, in one transaction under every term's fencing guard. A record
// that finishes a slot also closes the slot's open claim, and one of a
// success keeps it as the job's last (if later), guarded by the claim
// key's mod revision; a claim key that changed behind its term's
// copy is read again from the failure branch and the batch built again. A
// stale term fails (and ends) only its own records.
func (c *Coordinator) commitRecordsOf(rs []*recordReq) {
	if rs = answerEnded(rs); len(rs) == 0 { // again on every retry
		return
	}
	caches, rs := cachesOf(c, rs, recordJob, c.records.add)
	defer releaseAll(caches, rs, recordJob)
	for try := 1; ; try++ {
		if rs = answerFenced(c, answerEnded(rs)); len(rs) == 0 {
			return
		}
		g := guardsOf(rs)
		cmps, elseOps := g.cmps(len(rs)), g.reads(len(rs))
		ops := make([]clientv3.Op, 0, 2*len(rs))
		var closing []*recordReq // in Else order
		var closed []claimState
		var now []*recordReq // the requests this transaction decides
		seen := map[string]bool{}
		for _, r := range rs {
			// etcd refuses a key twice in one transaction: a record written
			// again (a retried write) waits for the next batch.
			run := c.runKey(r.job, r.runID)
			if r.runID != "" && seen[run] {
				defer c.records.add(r)
				continue
			}
			seen[run] = true
			now = append(now, r)
			if r.runID != "" {
				ops = append(ops, clientv3.OpPut(run, string(r.value)))
			}
			if _, ok := recordJob(r); !ok {
				continue
			}
			cc := caches[r.term]
			cc.mu.Lock()
			e := cc.entry(r.job)
			open := e.bad == nil && !r.slot.IsZero() && e.st.openAt(r.slot.UnixNano()) >= 0
			st, rev := e.st, e.rev
			if open {
				st = st.withClosed(r.slot.UnixNano())
			}
			st = st.withSuccess(r.succeeded)
			later := e.bad == nil && st.Success != e.st.Success
			cc.mu.Unlock()
			if !open && !later {
				continue // nothing to close, no later success: the record alone
			}
			v, err := json.Marshal(st)
			if err != nil {
				continue
			}
			key := c.claimKey(r.job)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
			ops = append(ops, clientv3.OpPut(key, string(v)))
			elseOps = append(elseOps, clientv3.OpGet(key))
			closing, closed = append(closing, r), append(closed, st)
		}
		if len(ops) == 0 {
			for _, r := range now {
				r.done <- nil
			}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		cancel()
		switch {
		case err != nil:
			c.noteWriteError(err)
			for _, r := range now {
				r.done <- fmt.Errorf("record run %s: %w", r.runID, err)
			}
			return
		case resp.Succeeded:
			for i, r := range closing {
				caches[r.term].set(r.job, closed[i], resp.Header.Revision)
			}
			for _, r := range now {
				r.done <- nil
			}
			return
		}
		if stale := c.staleTerms(g, resp); len(stale) > 0 {
			rs = answerStale(now, stale) // the other terms' records, again
			continue
		}
		for i, r := range closing {
			c.refresh(caches[r.term], r.job, resp.Responses[len(g.terms)+i].GetResponseRange().GetKvs())
		}
		if try >= maxTries {
			for _, r := range now {
				r.done <- fmt.Errorf("record run %s: the claim key of %s kept changing behind the leader (%d tries)", r.runID, r.job, try)
			}
			return
		}
		rs = now
	}
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

// PruneIdle prunes a job's records (as after a record write) when they
// were last pruned maxAge/10 ago or more, or never by this replica, so
// that the records of a job that no longer writes any (paused, yearly,
// one-off, manual only) age out too. It reports whether it read etcd
// (one keys-only read; a delete only when something is to go). The
// leader calls it for its shards' jobs (the runner's ageRecords).
func (c *Coordinator) PruneIdle(ctx context.Context, job string, keep int, maxAge time.Duration) bool {
	if maxAge <= 0 {
		return false
	}
	c.pmu.Lock()
	if c.pruned == nil {
		c.pruned = map[string]pruneState{}
	}
	p, ok := c.pruned[job]
	if ok && time.Since(p.at) < maxAge/10 {
		c.pmu.Unlock()
		return false
	}
	c.pruned[job] = pruneState{at: time.Now()}
	c.pmu.Unlock()
	c.pruneNow(ctx, job, keep, maxAge)
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

// Runs returns up to limit of a job's records, newest first: the first
// page of RunsBefore, without the run IDs.
func (c *Coordinator) Runs(ctx context.Context, job string, limit int) ([][]byte, error) {
	runs, err := c.RunsBefore(ctx, job, "", limit)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(runs))
	for i, r := range runs {
		out[i] = r.Value
	}
	return out, nil
}

// HasRun reports whether a record of job's run runID is stored: a leader
// that takes over an attempt an older term left running records it only
// if its own leader did not (the runner's recordWithTakeover and recordTakenOver).
func (c *Coordinator) HasRun(ctx context.Context, job, runID string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.runKey(job, runID), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("read run %s of %s: %w", runID, job, err)
	}
	return resp.Count > 0, nil
}

// StoredRun is a stored run or skip record with its run ID, the last part
// of its key.
type StoredRun struct {
	ID    string
	Value []byte
}

// RunsBefore returns up to limit of a job's records whose run IDs sort
// before before (all when before is ""), newest first, with their IDs: a
// page of a job's history, the next page asked for with the last ID of
// this one. Run IDs are UUIDv7, so that is time order.
func (c *Coordinator) RunsBefore(ctx context.Context, job, before string, limit int) ([]StoredRun, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	prefix := c.runKey(job, "")
	end := clientv3.GetPrefixRangeEnd(prefix)
	if before != "" {
		end = c.runKey(job, before)
	}
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithRange(end),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("read runs of %s: %w", job, err)
	}
	out := make([]StoredRun, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, StoredRun{ID: strings.TrimPrefix(string(kv.Key), prefix), Value: kv.Value})
	}
	return out, nil
}

// WatchPaused calls set with the full set of paused jobs now and after every
// change, until ctx ends. It reconnects by itself; when the watch breaks it
// calls lost (if not nil) first: until set is called again, the set it last
// had may be stale.
func (c *Coordinator) WatchPaused(ctx context.Context, set func(map[string]bool), lost func()) {
	c.watchPrefix(ctx, c.pausedPrefix(), func(kvs map[string]*mvccpb.KeyValue) {
		paused := make(map[string]bool, len(kvs))
		for k := range kvs {
			paused[k] = true
		}
		set(paused)
	}, lost)
}

// watchPrefix keeps a local copy of the keys under prefix (relative names)
// and calls fn with it after the initial read and every change. When the
// watch breaks it calls lost (if not nil) before it reads again.
func (c *Coordinator) watchPrefix(ctx context.Context, prefix string, fn func(map[string]*mvccpb.KeyValue), lost func()) {
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second})
	for ctx.Err() == nil {
		err := c.watchOnce(ctx, prefix, fn)
		if ctx.Err() != nil {
			return
		}
		if lost != nil {
			lost()
		}
		c.log.Warn("watch interrupted; re-reading", "prefix", prefix, "error", c.WithTLSProblem(ctx, err))
		if !backoff.Sleep(ctx, wait.Next()) {
			return
		}
	}
}

func (c *Coordinator) watchOnce(ctx context.Context, prefix string, fn func(map[string]*mvccpb.KeyValue)) error {
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	sent := time.Now()
	resp, err := c.cli.Get(gctx, prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return err
	}
	c.heard(sent)
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
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	// Leader and FencingToken are shard 0's: the cluster's leader, which
	// also does the cluster-wide chores.
	Leader       string `json:"leader"`
	FencingToken int64  `json:"fencing_token"`
	// Members are the replicas with a key in any election, the leader
	// first; the API (runner.Control.Cluster) adds every other live
	// replica its membership knows, each once.
	Members []string `json:"members"`
	// Leading is whether this replica leads shard 0, LeaderSince since when.
	Leading     bool      `json:"leading"`
	LeaseTTL    string    `json:"lease_ttl"`
	LeaderSince time.Time `json:"leader_since,omitzero"`
	// KeepaliveAge is how long ago this replica's last acknowledged lease
	// keepalive was sent, also once its session has ended (it self-fences
	// at TTL minus a margin); absent only before its first lease.
	KeepaliveAge string `json:"keepalive_age,omitempty"`
	// LastContact is when this replica last heard from etcd (the send time
	// of the newest request etcd answered; LastContact).
	LastContact time.Time `json:"last_contact,omitzero"`
	// ShardCount is cluster.shards; Shards says who leads each, and
	// ShardsLed which ones this replica leads.
	ShardCount int          `json:"shard_count"`
	Shards     []ShardState `json:"shards"`
	ShardsLed  []int        `json:"shards_led"`
	// ShardsHere is this replica's cluster.shards when it is not the
	// cluster's: ShardCount and Shards are then the cluster's, as its
	// elections and the assignment over the cluster's members have them.
	ShardsHere int `json:"shards_here,omitempty"`
	// Etcd is what this replica last saw of the etcd member it talks to.
	Etcd *EtcdStatus `json:"etcd,omitempty"`
}

// ShardState is one shard's election as read from etcd.
type ShardState struct {
	Shard int `json:"shard"`
	// Leader leads it ("" when nobody does), under FencingToken.
	Leader       string `json:"leader"`
	FencingToken int64  `json:"fencing_token,omitempty"`
	// LeaderShards is the leader's cluster.shards when it is not
	// ShardCount (during a change of the count): its key is then its own
	// shard Shard of that count, which holds other jobs, and the shard of
	// the cluster's count is not led yet (R6: it was shown as led).
	LeaderShards int `json:"leader_shards,omitempty"`
	// Waiting are the replicas campaigning behind the leader, in line.
	Waiting []string `json:"waiting,omitempty"`
	// Assigned is the replica the assignment gives it, as this replica
	// computes it from its roster.
	Assigned string `json:"assigned,omitempty"`
	// Since is when this replica started leading it (its own shards only).
	Since time.Time `json:"since,omitzero"`
}

// State reads the cluster's leadership state. The leader is the oldest
// election key whose lease is alive; each replica is listed once, however
// many keys it has (a key of an ended term whose lease could not be
// revoked lingers until it expires). When etcd cannot be read it returns,
// with the error, what this replica knows by itself: the shards it leads
// now, its keepalive age and last contact, all as of the answer (after the
// failed read), not of the request.
func (c *Coordinator) State(ctx context.Context) (st ClusterState, err error) {
	st = ClusterState{Cluster: c.opts.Cluster, Node: c.opts.Node, LeaseTTL: c.opts.LeaseTTL.String(),
		ShardCount: c.opts.Shards, ShardsLed: []int{}}
	if c.opts.Members != nil {
		if n := c.opts.Members.ClusterShards(); n > 0 && n != c.opts.Shards {
			st.ShardCount, st.ShardsHere = n, c.opts.Shards
		}
	}
	if c.opts.Monitor != nil {
		es := c.opts.Monitor.Status()
		st.Etcd = &es
	}
	// What this replica leads, its keepalive's age and its last contact,
	// as of the answer: a read that etcd does not answer takes the request
	// timeout, long enough for the replica to fence itself meanwhile.
	defer func() {
		st.ShardsLed, st.Leading, st.LeaderSince = []int{}, false, time.Time{}
		for _, t := range c.Terms() {
			st.ShardsLed = append(st.ShardsLed, t.Shard)
			if t.Shard == 0 {
				st.Leading, st.LeaderSince = true, t.Since
			}
			if t.Shard < len(st.Shards) {
				st.Shards[t.Shard].Since = t.Since
			}
		}
		if ack := c.lastAck.Load(); ack != 0 {
			st.KeepaliveAge = time.Since(time.Unix(0, ack)).Round(time.Millisecond).String()
		}
		st.LastContact = c.LastContact()
	}()
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.prefix+"leader/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return st, fmt.Errorf("read elections: %w", c.WithTLSProblem(ctx, err))
	}
	nodes, _, _ := c.candidates()
	assigned := shard.Assign(st.ShardCount, nodes)
	st.Shards = make([]ShardState, st.ShardCount)
	for n := range st.Shards {
		st.Shards[n] = ShardState{Shard: n, Assigned: assigned[n]}
	}
	seen := map[string]bool{}
	alive := map[int64]bool{} // each lease's, read once: a replica's keys share one
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), c.prefix+"leader/")
		num, _, ok := strings.Cut(rest, "/")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 0 || n >= len(st.Shards) {
			continue // another version's key, or of another shard count
		}
		node := string(kv.Value)
		if s := &st.Shards[n]; s.Leader == "" {
			live, ok := alive[kv.Lease]
			if !ok {
				ttl, err := c.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
				if err != nil {
					return st, fmt.Errorf("read elections: lease of %s: %w", node, err)
				}
				live = ttl.TTL > 0
				alive[kv.Lease] = live
			}
			if !live {
				continue // its lease is gone: the key goes with it
			}
			s.Leader, s.FencingToken = node, kv.CreateRevision
			if c.opts.Members != nil {
				if n := c.opts.Members.ShardsOf(node); n > 0 && n != st.ShardCount {
					s.LeaderShards = n
				}
			}
		} else {
			s.Waiting = append(s.Waiting, node)
		}
		if !seen[node] {
			seen[node] = true
			st.Members = append(st.Members, node)
		}
	}
	if len(st.Shards) > 0 {
		st.Leader, st.FencingToken = st.Shards[0].Leader, st.Shards[0].FencingToken
		if i := slices.Index(st.Members, st.Leader); i > 0 {
			st.Members = append(append([]string{st.Leader}, st.Members[:i]...), st.Members[i+1:]...)
		}
	}
	return st, nil
}
