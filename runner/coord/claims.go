package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/shard"
)

// keepSlots is how many finished claimed slots a job's claim key keeps
// besides its floor. A wall clock that jumps ahead and claims up to this
// many slots early does not stop the job's slots of the true time from
// being claimed once the clock is back (see claimState).
const keepSlots = 16

// claimState is what a job's claim key (claims/<job>) holds: enough to
// decide every later claim of the job exactly once, in a bounded size.
//
//   - Floor: every slot at or before it is decided (claimed, or recorded
//     as skipped); a claim of such a slot is refused (ErrSlotTooOld).
//   - Slots: the latest finished claimed slots after Floor, ascending, at
//     most keepSlots. When a finished slot is added beyond that, the
//     oldest leaves and Floor moves up to it.
//   - Open: claimed slots whose final record is not written yet, each with
//     its claim (the runner's record: node, fencing token, correlation ID).
//     They stay until finished, wherever Floor is; a new leader decides
//     the ones an older term left open (delivery policy).
//   - Success: when the job's last successful run ended (a slot's, written
//     by FinishSlot with the slot's end; a triggered run's, by
//     FinishTrigger), so that a shard's next leader exports the job's last
//     success from the read its term starts with. It decides no claim. A
//     runner older than the field reads the key as before (unknown fields
//     are ignored) but drops the field when it writes the key; the next
//     success writes it again.
//
// A slot can be claimed if it is after Floor and neither in Slots nor in
// Open. Every slot ever claimed is at or before Floor, or in Slots or Open,
// so none is claimed twice. Times are Unix nanoseconds.
type claimState struct {
	Floor int64       `json:"floor,omitempty"`
	Slots []int64     `json:"slots,omitempty"`
	Open  []openClaim `json:"open,omitempty"`
	// Success is the latest success written; 0 if none was.
	Success int64 `json:"success,omitempty"`
}

type openClaim struct {
	Slot  int64           `json:"slot"`
	Claim json.RawMessage `json:"claim"`
}

func (s claimState) clone() claimState {
	return claimState{Floor: s.Floor, Slots: slices.Clone(s.Slots), Open: slices.Clone(s.Open), Success: s.Success}
}

func (s claimState) openAt(slot int64) int {
	return slices.IndexFunc(s.Open, func(o openClaim) bool { return o.Slot == slot })
}

// check says whether slot may be claimed: nil, ErrSlotTooOld or
// ErrSlotTaken (wrapped, with the slot).
func (s claimState) check(slot int64) error {
	switch {
	case slot <= s.Floor:
		return fmt.Errorf("%w: slot %s, the job's claims are decided through %s", ErrSlotTooOld, fmtNS(slot), fmtNS(s.Floor))
	case slices.Contains(s.Slots, slot) || s.openAt(slot) >= 0:
		return ErrSlotTaken
	}
	return nil
}

// withOpen returns s with slot claimed by claim, still open.
func (s claimState) withOpen(slot int64, claim []byte) claimState {
	n := s.clone()
	i, _ := slices.BinarySearchFunc(n.Open, slot, func(o openClaim, t int64) int { return cmpInt(o.Slot, t) })
	n.Open = slices.Insert(n.Open, i, openClaim{Slot: slot, Claim: claim})
	return n
}

// withClosed returns s with slot finished: out of Open if it was there, in
// Slots (or under Floor).
func (s claimState) withClosed(slot int64) claimState {
	n := s.clone()
	if i := n.openAt(slot); i >= 0 {
		n.Open = slices.Delete(n.Open, i, i+1)
	}
	if slot <= n.Floor {
		return n
	}
	if i, found := slices.BinarySearch(n.Slots, slot); !found {
		n.Slots = slices.Insert(n.Slots, i, slot)
	}
	if extra := len(n.Slots) - keepSlots; extra > 0 {
		n.Floor = n.Slots[extra-1]
		n.Slots = slices.Delete(n.Slots, 0, extra)
	}
	return n
}

// withSuccess returns s with a success that ended at the instant at (Unix
// nanoseconds; 0: none) unless it knows of a later one.
func (s claimState) withSuccess(at int64) claimState {
	n := s.clone()
	n.Success = max(n.Success, at)
	return n
}

// withFloor returns s with every slot at or before floor decided.
func (s claimState) withFloor(floor int64) claimState {
	n := s.clone()
	if floor <= n.Floor {
		return n
	}
	n.Floor = floor
	i, _ := slices.BinarySearch(n.Slots, floor+1)
	n.Slots = slices.Delete(n.Slots, 0, i)
	return n
}

func (s claimState) public() JobClaims {
	j := JobClaims{}
	if s.Floor != 0 {
		j.Floor = nsTime(s.Floor)
	}
	for _, ns := range s.Slots {
		j.Slots = append(j.Slots, nsTime(ns))
	}
	for _, o := range s.Open {
		j.Open = append(j.Open, OpenClaim{Time: nsTime(o.Slot), Claim: slices.Clone([]byte(o.Claim))})
	}
	if s.Success != 0 {
		j.LastSuccess = nsTime(s.Success)
	}
	return j
}

// JobClaims is what the cluster keeps of one job's claims: see the package
// doc. Its zero value is a job never claimed.
type JobClaims struct {
	// Floor: every slot at or before it is decided; zero if none is.
	Floor time.Time
	// Slots are the latest finished claimed slots after Floor, ascending.
	Slots []time.Time
	// Open are the claimed slots whose final record is not written yet,
	// ascending, with their claims.
	Open []OpenClaim
	// LastSuccess is when the job's last successful run that a leader
	// wrote here ended, on any replica; zero if none is known (none since
	// the field exists, or an older runner wrote the key since).
	LastSuccess time.Time
}

// OpenClaim is a claimed slot not yet finished, and its claim.
type OpenClaim struct {
	Time  time.Time
	Claim []byte
}

// Claimed reports whether any slot of the job was ever claimed.
func (j JobClaims) Claimed() bool { return !j.Floor.IsZero() || len(j.Slots) > 0 || len(j.Open) > 0 }

// Last returns the latest slot claimed before the instant before (or any,
// if before is zero), or Floor if every claimed slot kept is later (all
// slots through Floor are decided); zero if there is none.
func (j JobClaims) Last(before time.Time) time.Time {
	var last time.Time
	consider := func(t time.Time) {
		if (before.IsZero() || t.Before(before)) && t.After(last) {
			last = t
		}
	}
	for _, t := range j.Slots {
		consider(t)
	}
	for _, o := range j.Open {
		consider(o.Time)
	}
	if last.IsZero() && !j.Floor.IsZero() {
		consider(j.Floor)
	}
	return last
}

// jobEntry is the leader's copy of one job's claim key.
type jobEntry struct {
	st  claimState
	rev int64 // the key's mod revision; 0 while it does not exist
	bad error // the stored value could not be read: the job cannot be claimed
	// busy is set while one transaction writing the key is being built or
	// is in flight; requests for the job wait in waiting meanwhile.
	busy    bool
	waiting []func()
}

// claimCache is a term's copy of the claim key of every job of its shard
// (a replica holds one per shard it leads, so its memory falls as replicas
// are added). The leader is the only writer while its term lasts (every
// write is guarded by its token),
// so it can build each claim from its copy and write it with one
// transaction that compares the key's mod revision: a copy that is out of
// date (a transaction that timed out but landed, an operator's edit) fails
// that comparison, is read again from the transaction's failure branch,
// and the claim is decided again. At most one transaction per key is in
// flight, so transactions of one term do not fail each other.
type claimCache struct {
	term *Term
	mu   sync.Mutex
	jobs map[string]*jobEntry
}

func (cc *claimCache) entry(job string) *jobEntry {
	e := cc.jobs[job]
	if e == nil {
		e = &jobEntry{}
		cc.jobs[job] = e
	}
	return e
}

// acquire marks busy the job of each request that needs one (job returns
// it, or false) and returns the requests that may go into this
// transaction. A request whose job is busy, or taken by an earlier request
// in rs, is handed to requeue when the job is released.
func acquire[R any](cc *claimCache, rs []R, job func(R) (string, bool), requeue func(R)) []R {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	out := rs[:0:0]
	for _, r := range rs {
		name, ok := job(r)
		if !ok {
			out = append(out, r)
			continue
		}
		e := cc.entry(name)
		if e.busy {
			e.waiting = append(e.waiting, func() { requeue(r) })
			continue
		}
		e.busy = true
		out = append(out, r)
	}
	return out
}

// hold waits until job is free and marks it busy. Release it with release.
func (cc *claimCache) hold(ctx context.Context, job string) error {
	for {
		cc.mu.Lock()
		e := cc.entry(job)
		if !e.busy {
			e.busy = true
			cc.mu.Unlock()
			return nil
		}
		free := make(chan struct{})
		e.waiting = append(e.waiting, func() { close(free) })
		cc.mu.Unlock()
		select {
		case <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release frees jobs and hands their waiting requests back.
func (cc *claimCache) release(jobs []string) {
	var wake []func()
	cc.mu.Lock()
	for _, j := range jobs {
		if e := cc.jobs[j]; e != nil {
			e.busy = false
			wake = append(wake, e.waiting...)
			e.waiting = nil
		}
	}
	cc.mu.Unlock()
	for _, w := range wake {
		w()
	}
}

// set records a key's state after a write or a read.
func (cc *claimCache) set(job string, st claimState, rev int64) {
	cc.mu.Lock()
	e := cc.entry(job)
	e.st, e.rev, e.bad = st, rev, nil
	cc.mu.Unlock()
}

// refresh replaces job's copy with what was read from etcd (kvs of a Get
// of its key).
func (c *Coordinator) refresh(cc *claimCache, job string, kvs []*mvccKV) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	e := cc.entry(job)
	e.st, e.rev, e.bad = claimState{}, 0, nil
	if len(kvs) > 0 {
		e.rev = kvs[0].ModRevision
		e.st, e.bad = c.parseClaims(job, kvs[0].Value)
	}
}

func (c *Coordinator) parseClaims(job string, v []byte) (claimState, error) {
	var st claimState
	if err := json.Unmarshal(v, &st); err != nil {
		c.log.Error("claim state unreadable: the job's slots cannot be claimed until it is repaired or deleted",
			"job", job, "key", c.claimKey(job), "error", err)
		return claimState{}, fmt.Errorf("claim state of job %s (%s) unreadable: %w", job, c.claimKey(job), err)
	}
	return st, nil
}

// claimLoad is one read of the claim keys, for every term that was
// current, without a cache, when it began: a replica that starts leading
// many shards at once reads the keys once, not once per shard.
type claimLoad struct {
	terms []*Term
	done  chan struct{} // closed when the read is over
}

// claimsOf returns t's claim cache, reading the claim keys of its shard's
// jobs the first time t needs them (and moving claims kept in the previous
// layout first: migrate.go). Concurrent first uses share one read. A term
// that has ended keeps its cache until its shard's goroutine is done with
// it (dropClaims): the records of its last runs close their claims.
func (c *Coordinator) claimsOf(t *Term) (*claimCache, error) {
	current := c.Terms()
	c.cmu.Lock()
	for {
		if cc := c.claims[t.Shard]; cc != nil && cc.term == t {
			c.cmu.Unlock()
			return cc, nil
		}
		if t.ctx.Err() != nil {
			c.cmu.Unlock()
			return nil, ErrNotLeader
		}
		if c.loading == nil {
			break
		}
		wait := c.loading
		c.cmu.Unlock()
		select {
		case <-wait.done:
		case <-t.ctx.Done():
		}
		c.cmu.Lock()
	}
	// A read begun now is after every current term started, so it sees
	// every write of those shards' previous leaders: it serves them all.
	load := &claimLoad{terms: []*Term{t}, done: make(chan struct{})}
	for _, u := range current {
		if cc := c.claims[u.Shard]; u != t && u.ctx.Err() == nil && (cc == nil || cc.term != u) {
			load.terms = append(load.terms, u)
		}
	}
	c.loading = load
	c.cmu.Unlock()

	caches, err := c.loadClaims(load.terms)

	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.loading = nil
	close(load.done)
	if err != nil {
		return nil, err
	}
	for _, cc := range caches {
		if cc.term.ctx.Err() == nil { // one that ended while reading leaves it to the shard's next term
			c.claims[cc.term.Shard] = cc
		}
	}
	if t.ctx.Err() != nil {
		return nil, ErrNotLeader
	}
	return c.claims[t.Shard], nil
}

// dropClaims forgets t's claim cache once its shard's goroutine is done
// with t (handed over, lost or stopped).
func (c *Coordinator) dropClaims(t *Term) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if cc := c.claims[t.Shard]; cc != nil && cc.term == t {
		delete(c.claims, t.Shard)
	}
}

// loadClaims reads, in one range read, the claim keys of the jobs of the
// terms' shards, into one cache per term.
func (c *Coordinator) loadClaims(terms []*Term) ([]*claimCache, error) {
	if err := c.migrate(terms); err != nil {
		return nil, err
	}
	byShard := map[int]*claimCache{}
	out := make([]*claimCache, len(terms))
	for i, t := range terms {
		out[i] = &claimCache{term: t, jobs: map[string]*jobEntry{}}
		byShard[t.Shard] = out[i]
	}
	err := c.rangeAll(terms[0].ctx, c.claimPrefix(), func(kv *mvccKV) {
		job := strings.TrimPrefix(string(kv.Key), c.claimPrefix())
		cc := byShard[shard.Of(job, c.opts.Shards)]
		if cc == nil {
			return // another shard's job
		}
		st, bad := c.parseClaims(job, kv.Value)
		cc.jobs[job] = &jobEntry{st: st, rev: kv.ModRevision, bad: bad}
	})
	if err != nil {
		return nil, fmt.Errorf("read claims: %w", err)
	}
	return out, nil
}

// rangePage bounds the keys one read of rangeAll returns.
const rangePage = 2000

// rangeAll calls fn for every key under prefix, in pages read at one
// revision, each read bounded by RequestTimeout.
func (c *Coordinator) rangeAll(ctx context.Context, prefix string, fn func(*mvccKV)) error {
	key, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(rangePage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		resp, err := c.cli.Get(gctx, key, opts...)
		cancel()
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			fn(kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Claims returns the claims of every job of t's shard as t's leader knows
// them, reading them from etcd the first time t asks (one range read).
func (c *Coordinator) Claims(ctx context.Context, t *Term) (map[string]JobClaims, error) {
	cc, err := c.claimsOf(t)
	if err != nil {
		return nil, err
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	out := make(map[string]JobClaims, len(cc.jobs))
	for job, e := range cc.jobs {
		if e.rev != 0 {
			out[job] = e.st.public()
		}
	}
	return out, nil
}

// JobClaims reads one job's claims from etcd (any replica may call it).
func (c *Coordinator) JobClaims(ctx context.Context, job string) (JobClaims, error) {
	st, _, err := c.readClaims(ctx, job)
	return st.public(), err
}

func (c *Coordinator) readClaims(ctx context.Context, job string) (claimState, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.claimKey(job))
	if err != nil {
		return claimState{}, 0, fmt.Errorf("read claims of %s: %w", job, err)
	}
	if len(resp.Kvs) == 0 {
		return claimState{}, 0, nil
	}
	st, err := c.parseClaims(job, resp.Kvs[0].Value)
	return st, resp.Kvs[0].ModRevision, err
}

// SlotValue returns the claim of a slot that is claimed and not finished,
// read from etcd; nil if it is not open.
func (c *Coordinator) SlotValue(ctx context.Context, job string, slot time.Time) ([]byte, error) {
	st, _, err := c.readClaims(ctx, job)
	if err != nil {
		return nil, err
	}
	if i := st.openAt(slot.UnixNano()); i >= 0 {
		return []byte(st.Open[i].Claim), nil
	}
	return nil, nil
}

func (c *Coordinator) claimPrefix() string        { return c.prefix + "claims/" }
func (c *Coordinator) claimKey(job string) string { return c.claimPrefix() + job }

func nsTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func fmtNS(ns int64) string { return nsTime(ns).Format(time.RFC3339Nano) }

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
