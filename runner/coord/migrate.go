package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/shard"
)

// The previous layout (Pacer before per-job claim keys) kept one key per
// claimed slot for 24 hours, and a horizon per job:
//
//	slots/<job>/<unix ns, 19 digits>   the slot's claim, then its final record
//	horizons/<job>                     unix ns before which slots/<job>/ was pruned
//
// The leader of each job's shard moves the job it finds there into its
// claim key when its term first needs the claims, before it claims anything:
// the newest keepSlots slots become the job's Slots (Open if their record
// says "running", so the delivery policy decides them), every older slot
// and the horizon go under Floor, and the slot keys are deleted, in one
// transaction guarded by the fencing token and by the revisions read. The
// run records (runs/) have the same layout in both versions and stay.
//
// The job's horizon is then set to fenceHorizon, the largest number: a
// replica of the previous version that leads during a rolling upgrade
// refuses every slot of the job as older than its horizon (a skip record
// "too_old" each) instead of running slots whose claims it cannot see.

// fenceHorizon is the horizon that makes the previous version refuse every
// slot of a job.
var fenceHorizon = strconv.FormatInt(math.MaxInt64, 10)

func (c *Coordinator) oldSlotPrefix(job string) string { return c.prefix + "slots/" + job + "/" }
func (c *Coordinator) horizonKey(job string) string    { return c.prefix + "horizons/" + job }

// migrate moves every job of the terms' shards kept in the previous layout
// into its claim key, each under its shard's term.
func (c *Coordinator) migrate(terms []*Term) error {
	jobs, err := c.oldLayoutJobs(terms[0].ctx)
	if err != nil {
		return fmt.Errorf("look for claims in the previous layout: %w", err)
	}
	byShard := map[int]*Term{}
	for _, t := range terms {
		byShard[t.Shard] = t
	}
	moved := 0
	for _, job := range jobs {
		t := byShard[shard.Of(job, c.opts.Shards)]
		if t == nil {
			continue // another shard's: its leader moves it
		}
		if err := c.migrateJob(t, job); err != nil {
			return fmt.Errorf("move the claims of job %s from the previous layout: %w", job, err)
		}
		moved++
	}
	if moved > 0 {
		c.log.Info("moved claims from the previous layout (a key per slot) to one key per job", "jobs", moved)
	}
	return nil
}

// oldLayoutJobs lists the jobs with slot keys or a horizon (other than the
// fence) of the previous layout.
func (c *Coordinator) oldLayoutJobs(ctx context.Context) ([]string, error) {
	found := map[string]bool{}
	root := c.prefix + "slots/"
	names, err := c.skipScan(ctx, root)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		found[n] = true
	}
	err = c.rangeAll(ctx, c.prefix+"horizons/", func(kv *mvccKV) {
		if string(kv.Value) != fenceHorizon {
			found[strings.TrimPrefix(string(kv.Key), c.prefix+"horizons/")] = true
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(found))
	for n := range found {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// skipScan returns the first path segment of the keys under root
// (root/<name>/...), reading one key per name. Names cannot hold "/" (job
// IDs are [A-Za-z0-9._-]), and "0" follows "/", so root+name+"0" is the
// first key after every key of name.
func (c *Coordinator) skipScan(ctx context.Context, root string) ([]string, error) {
	var out []string
	key, end := root, clientv3.GetPrefixRangeEnd(root)
	for {
		gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		resp, err := c.cli.Get(gctx, key, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		cancel()
		if err != nil {
			return nil, err
		}
		if len(resp.Kvs) == 0 {
			return out, nil
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(string(resp.Kvs[0].Key), root), "/")
		out = append(out, name)
		key = root + name + "0"
	}
}

func (c *Coordinator) migrateJob(t *Term, job string) error {
	for try := 1; ; try++ {
		err := c.migrateJobOnce(t, job)
		if !errors.Is(err, errChanged) || try == maxTries {
			return err
		}
	}
}

var errChanged = errors.New("changed while being moved")

func (c *Coordinator) migrateJobOnce(t *Term, job string) error {
	ctx, cancel := context.WithTimeout(t.ctx, c.opts.RequestTimeout)
	defer cancel()
	sp := c.oldSlotPrefix(job)
	slots, err := c.cli.Get(ctx, sp, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(keepSlots+1))
	if err != nil {
		return err
	}
	rev := slots.Header.Revision
	hz, err := c.cli.Get(ctx, c.horizonKey(job), clientv3.WithRev(rev))
	if err != nil {
		return err
	}
	cur, err := c.cli.Get(ctx, c.claimKey(job), clientv3.WithRev(rev))
	if err != nil {
		return err
	}
	var st claimState
	var curRev int64
	if len(cur.Kvs) > 0 {
		if st, err = c.parseClaims(job, cur.Kvs[0].Value); err != nil {
			return err
		}
		curRev = cur.Kvs[0].ModRevision
	}
	for i, kv := range slots.Kvs {
		ns, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), sp), 10, 64)
		if err != nil {
			c.log.Warn("previous layout: slot key unreadable; left out", "key", string(kv.Key))
			continue
		}
		if i == keepSlots {
			// More slots before these: all of them are decided.
			st = st.withFloor(ns)
			break
		}
		switch {
		case ns <= st.Floor || slices.Contains(st.Slots, ns) || st.openAt(ns) >= 0:
		case stillRunning(kv.Value):
			st = st.withOpen(ns, kv.Value)
		default:
			st = st.withClosed(ns)
		}
	}
	if len(hz.Kvs) > 0 && string(hz.Kvs[0].Value) != fenceHorizon {
		// Slots before the horizon were pruned: refused, as before.
		if h, err := strconv.ParseInt(string(hz.Kvs[0].Value), 10, 64); err == nil && h > math.MinInt64 {
			st = st.withFloor(h - 1)
		}
	}
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	hzRev := int64(0)
	if len(hz.Kvs) > 0 {
		hzRev = hz.Kvs[0].ModRevision
	}
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token),
		clientv3.Compare(clientv3.ModRevision(c.claimKey(job)), "=", curRev),
		clientv3.Compare(clientv3.ModRevision(c.horizonKey(job)), "=", hzRev),
		clientv3.Compare(clientv3.ModRevision(sp), "<", rev+1).WithPrefix(),
	).Then(
		clientv3.OpPut(c.claimKey(job), string(v)),
		clientv3.OpDelete(sp, clientv3.WithPrefix()),
		clientv3.OpPut(c.horizonKey(job), fenceHorizon),
	).Else(clientv3.OpGet(t.key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded {
		return nil
	}
	if err := c.guardFailed(t, resp); errors.Is(err, ErrNotLeader) {
		return err
	}
	return errChanged
}

// stillRunning reports whether a previous-layout slot value is a claim
// whose run never recorded its end: the runner's record with state
// "running".
func stillRunning(v []byte) bool {
	var rec struct {
		State string `json:"state"`
	}
	return json.Valid(v) && json.Unmarshal(v, &rec) == nil && rec.State == "running"
}
