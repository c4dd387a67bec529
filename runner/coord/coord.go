package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pacerun/pacer/observability"
)

// Errors returned by claims and record writes.
var (
	// ErrNotLeader means the term's fencing guard failed: this replica no
	// longer holds leadership, and its term has been ended.
	ErrNotLeader = errors.New("not the leader: fencing token is stale")
	// ErrSlotTaken means another claim for the slot exists.
	ErrSlotTaken = errors.New("slot already claimed")
	// ErrSlotTooOld means the slot is at or before the job's floor: older
	// than the claims the job's claim key keeps, so whether it ran is not
	// known, and it must not run.
	ErrSlotTooOld = errors.New("slot older than the kept claims")
)

// ErrStopping ends a term because the replica is shutting down (it hands
// the shard over).
var ErrStopping = errors.New("runner stopping")

// Options configure a Coordinator.
type Options struct {
	Client *clientv3.Client
	// Cluster namespaces every key: /pacer/<Cluster>/...
	Cluster string
	// Node is this replica's name, stored as the value of its election key.
	Node string
	// LeaseTTL is the etcd lease TTL; whole seconds, at least 2s.
	LeaseTTL time.Duration
	// RequestTimeout bounds each etcd request. Default 5s.
	RequestTimeout time.Duration
	// TLSCheck, if set, says why the TLS handshake with etcd fails
	// (TLSCheck's function): asked when a session cannot be opened or the
	// cluster's state cannot be read, and by WithTLSProblem's other callers
	// (the API's readiness check), so that the error names the certificate
	// rather than a timeout.
	TLSCheck func(context.Context) error
	Logger   *slog.Logger
	// Metrics, if set, receives the lease keepalive metrics.
	Metrics *observability.Metrics
	// Tracer, if set, records each election and leadership term as spans.
	Tracer trace.Tracer
	// OnTransition, if set, is called when this replica starts (true) or
	// stops (false) leading a shard, with the term.
	OnTransition func(leading bool, t *Term)

	// Gate, if set, decides whether this replica may lead: it campaigns
	// for no shard while the gate does not allow, and hands over every
	// shard it leads when it stops allowing (members.go).
	Gate Gate

	// Shards is the number of shards (cluster.shards); below 1 means 1.
	Shards int
	// Settle is how long the roster must have been unchanged before this
	// replica hands a shard it leads to the replica now assigned to it
	// (cluster.shard_settle). A shard nobody leads is taken at once.
	Settle time.Duration
	// Roster, if set, names the replicas that may lead shards; without one
	// this replica is assigned every shard.
	Roster Roster
	// Members, if set, publishes this replica's member record on every
	// session's lease (its MembershipOptions.SessionLease must be set), so
	// that the record and the election keys come and go together. It is
	// usually the Gate and the Roster too.
	Members *Membership
	// Drain, if set, is called while a term is handed over (a shard moves
	// to another replica, or this one stops): first after the term stopped
	// firing (Term.Draining), to wait for the term's runs to end, bounded
	// by DrainTimeout; then after the term ended (its remaining runs are
	// cancelled), to wait for their records, bounded by RequestTimeout×2.
	Drain func(ctx context.Context, t *Term)
	// CompactionInterval: while leading, every this often, compact etcd's
	// revisions older than the revision seen one interval before (as
	// kube-apiserver does). 0: never.
	CompactionInterval time.Duration
	// Monitor, if set, is the etcd status State reports.
	Monitor *Monitor
	// DrainTimeout bounds the first Drain of a hand-over. Default 10s.
	DrainTimeout time.Duration
}

// A Roster names the replicas that may lead shards. Every replica that sees
// the same roster computes the same assignment (shard.Assign).
type Roster interface {
	// Candidates returns the names of the replicas that may lead now, when
	// that list last changed, and a channel closed at its next change.
	Candidates() (nodes []string, since time.Time, changed <-chan struct{})
}

// Term is one period of leadership of one shard. Its context is cancelled
// when the term ends; work started under a term must stop then.
type Term struct {
	// Shard is the shard led.
	Shard int
	// Token is the term's fencing token: the create revision of its
	// election key. Tokens of one shard only grow; tokens of different
	// shards are unrelated.
	Token int64
	// Since is when this replica started leading.
	Since   time.Time
	key     string
	session *session
	ctx     context.Context
	cancel  context.CancelCauseFunc
	span    trace.Span
	drain   atomic.Int64 // UnixNano (wall) when firing stopped; 0 while firing
	// stopped is closed when firing stops (nil: a Term made by hand, for
	// a test, whose firing never stops that way).
	stopped chan struct{}
	// held is the earliest slot (UnixNano) whose start this term gave up
	// when firing stopped (HoldBack); 0: none.
	held atomic.Int64
}

// Context is cancelled, with the reason as its cause, when the term ends.
func (t *Term) Context() context.Context { return t.ctx }

// StopFiring marks the term draining: no new slot or trigger request of
// the shard may start under it (a hand-over or a stop is under way). It
// returns when firing stopped: the first call's instant.
func (t *Term) StopFiring() time.Time {
	if t.drain.CompareAndSwap(0, time.Now().UnixNano()) && t.stopped != nil {
		close(t.stopped)
	}
	return time.Unix(0, t.drain.Load())
}

// FiringStopped is closed when the term stops firing (StopFiring).
func (t *Term) FiringStopped() <-chan struct{} { return t.stopped }

// HoldBack notes that a slot fired under t, not yet claimed (it was
// waiting out its jitter), was given up when firing stopped: the
// hand-over mark then holds the shard's slots back from it on, so that
// the next leader runs it late (its jitter counted from the slot) instead
// of applying the misfire policy to it, and the drain does not wait for it
// (attack 20, Q5: a stop waited its whole drain timeout for a jitter wait,
// with nothing running, and a slot due before the stop was lost).
func (t *Term) HoldBack(slot time.Time) {
	n := slot.UnixNano()
	for {
		old := t.held.Load()
		if old != 0 && old <= n || t.held.CompareAndSwap(old, n) {
			return
		}
	}
}

// heldFrom is when the shard's slots are held back from: when firing
// stopped, or the earliest slot given up (HoldBack) if that is earlier.
func (t *Term) heldFrom(stopped time.Time) time.Time {
	if h := t.held.Load(); h != 0 && h < stopped.UnixNano() {
		return time.Unix(0, h)
	}
	return stopped
}

// Draining reports whether the term stopped firing (StopFiring).
func (t *Term) Draining() bool { return t.drain.Load() != 0 }

// Coordinator elects a leader among replicas and claims slots for it.
type Coordinator struct {
	opts   Options
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
	// created is when this coordinator (this replica's process) came to
	// be: a hand-over mark left before it was not left for it
	// (TakeHandOver).
	created time.Time

	batch   *batcher
	records *pipeline[*recordReq]
	jobSets *jobSetStore
	// noSpaceLogged is when NoSpaceHelp was last logged (UnixNano).
	noSpaceLogged atomic.Int64
	// contact is when etcd last answered this replica (UnixNano; see
	// LastContact).
	contact atomic.Int64
	// lastAck is the send time (UnixNano) of this replica's last
	// acknowledged lease keepalive (or grant), kept after its session
	// ends: a cut-off replica still says how long ago that was.
	lastAck atomic.Int64
	// fenceAt is when this replica fences itself (monotonic; see guard
	// and FenceDeadline); nil before the first session.
	fenceAt atomic.Pointer[time.Time]

	mu      sync.Mutex
	terms   map[int]*Term // by shard
	session *session      // the current one; nil between sessions

	smu   sync.Mutex
	stale []clientv3.LeaseID // leases of ended sessions not revoked yet

	// The shard-count mark (counts.go): how many of this replica's
	// shard goroutines campaign or lead under it, and the lease it is on.
	countMu    sync.Mutex
	countUsers int
	countLease clientv3.LeaseID

	cmu     sync.Mutex
	claims  map[int]*claimCache // by shard: its latest term's copy of the shard's jobs' claims
	loading *claimLoad          // the read of the claims under way, if any

	pmu    sync.Mutex
	pruned map[string]pruneState // per job

	requests chan struct{} // trigger requests from this replica, one at a time (triggers.go)
	rmu      sync.Mutex
	receipts map[string]int // per job: receipts stored since the job's were last pruned (idempotency.go)
}

// New returns a Coordinator. Nothing happens until Run is called.
func New(o Options) *Coordinator {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.LeaseTTL < 2*time.Second {
		o.LeaseTTL = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if o.Shards < 1 {
		o.Shards = 1
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	c := &Coordinator{opts: o, cli: o.Client, prefix: "/pacer/" + o.Cluster + "/", log: o.Logger, requests: make(chan struct{}, 1),
		terms: map[int]*Term{}, claims: map[int]*claimCache{}, created: time.Now()}
	c.batch = newBatcher(c)
	c.records = newPipeline(maxRecordBatch, c.commitRecordsOf)
	c.records.weight = recordWeight
	c.jobSets = newJobSetStore(c.cli, c.prefix, o.RequestTimeout)
	return c
}

// Term returns the current term of shard 0, whose leader is the cluster's
// leader, or nil when this replica does not lead it.
func (c *Coordinator) Term() *Term { return c.TermOf(0) }

// TermOf returns the current term of a shard, or nil when this replica
// does not lead it.
func (c *Coordinator) TermOf(shard int) *Term {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.terms[shard]
}

// Terms returns the current terms, by shard.
func (c *Coordinator) Terms() []*Term {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Term, 0, len(c.terms))
	for _, t := range c.terms {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *Term) int { return a.Shard - b.Shard })
	return out
}

// Shards returns the number of shards.
func (c *Coordinator) Shards() int { return c.opts.Shards }

// errGateClosed wraps the gate's reason when a term ends because the gate
// closed: the replica hands the shard over instead of waiting for its lease.
var errGateClosed = errors.New("may not lead")

// gateState is the gate's answer, with its reason wrapped in errGateClosed,
// and a channel closed when it may change (nil, never closing, without a
// gate).
//
//lint:ignore ST1008 the error is why the gate is closed, not a failure (Gate.MayLead's order)
func (c *Coordinator) gateState() (bool, error, <-chan struct{}) {
	if c.opts.Gate == nil {
		return true, nil, nil
	}
	ok, why, changed := c.opts.Gate.MayLead()
	if !ok {
		why = fmt.Errorf("%w: %w", errGateClosed, why)
	}
	return ok, why, changed
}

func (c *Coordinator) mayLead() (bool, error) {
	ok, why, _ := c.gateState()
	return ok, why
}

func (c *Coordinator) verifyKey(ctx context.Context, key string, rev int64) error {
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(gctx, key)
	if err != nil {
		return fmt.Errorf("verify election key: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != rev {
		return fmt.Errorf("election key %s vanished during campaign", key)
	}
	return nil
}

// endTerm ends t if it is still current. Safe to call more than once.
func (c *Coordinator) endTerm(t *Term, cause error) {
	c.mu.Lock()
	current := c.terms[t.Shard] == t
	if current {
		delete(c.terms, t.Shard)
	}
	c.mu.Unlock()
	if !current {
		return
	}
	t.cancel(cause)
	level := slog.LevelWarn
	if errors.Is(cause, ErrStopping) || errors.Is(cause, ErrHandedOver) {
		level = slog.LevelInfo
	} else {
		t.span.SetStatus(codes.Error, cause.Error())
	}
	t.span.AddEvent("leadership ended", trace.WithAttributes(attribute.String("reason", cause.Error())))
	t.span.End()
	c.log.Log(context.Background(), level, "leadership ended", "shard", t.Shard, "fencing_token", t.Token, "reason", cause.Error())
	if c.opts.OnTransition != nil {
		c.opts.OnTransition(false, t)
	}
}

// revokeStale revokes the leases closeSession could not, until ctx ends.
func (c *Coordinator) revokeStale(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c.smu.Lock()
		stale := slices.Clone(c.stale)
		c.smu.Unlock()
		for _, id := range stale {
			rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
			_, err := c.cli.Revoke(rctx, id)
			cancel()
			if err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
				c.smu.Lock()
				c.stale = slices.DeleteFunc(c.stale, func(l clientv3.LeaseID) bool { return l == id })
				c.smu.Unlock()
				c.log.Debug("revoked the lease of an earlier session", "lease_id", fmt.Sprintf("%x", id))
			}
		}
	}
}

// compact compacts etcd while t, a term of shard 0 (the cluster's leader),
// lasts, every CompactionInterval: to a revision seen at least one interval
// before, so that an interval of history stays (for watches that
// reconnect) and no more. The revision to compact to next, and when it was
// seen, are kept in etcd (compactionMark), not in the term: a new leader
// goes on from the last one's mark, so a cluster whose leader of shard 0
// changes more often than the interval (rolling restarts, a pod evicted
// again and again) still compacts every interval (attack 13, J2; each new
// term waited a whole interval before, and such a cluster never
// compacted). It looks every quarter interval.
func (c *Coordinator) compact(t *Term) {
	every := c.opts.CompactionInterval
	if every <= 0 {
		return
	}
	tick := time.NewTicker(max(every/4, time.Millisecond))
	defer tick.Stop()
	for {
		if err := c.compactDue(t, every); err != nil && t.ctx.Err() == nil {
			c.log.Warn("etcd compaction failed; trying again", "error", err)
		}
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// compactionMark is the revision the cluster's leader compacts etcd to
// next, and when it was seen (by its leader's wall clock).
type compactionMark struct {
	Revision int64     `json:"revision"`
	Seen     time.Time `json:"seen"`
}

func (c *Coordinator) compactionKey() string { return c.prefix + "compaction" }

// compactDue compacts to the mark's revision once the mark is an interval
// old, then marks the current revision; with no mark, it marks the current
// revision. Marks are written under t's fencing guard.
func (c *Coordinator) compactDue(t *Term, every time.Duration) error {
	ctx, cancel := context.WithTimeout(t.ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.compactionKey())
	if err != nil {
		return err
	}
	var m compactionMark
	if len(resp.Kvs) > 0 && json.Unmarshal(resp.Kvs[0].Value, &m) == nil && m.Revision > 0 {
		if time.Since(m.Seen) < every {
			return nil
		}
		_, err = c.cli.Compact(ctx, m.Revision)
		switch {
		case err == nil:
			c.log.Debug("compacted etcd", "revision", m.Revision)
		case errors.Is(err, rpctypes.ErrCompacted):
			// compacted further already (etcd's own compaction)
		case errors.Is(err, rpctypes.ErrFutureRev):
			// a mark from another etcd (restored from a backup): start again
		default:
			return err
		}
	}
	v, err := json.Marshal(compactionMark{Revision: resp.Header.Revision, Seen: time.Now().UTC()})
	if err != nil {
		return err
	}
	_, err = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)).
		Then(clientv3.OpPut(c.compactionKey(), string(v))).Commit()
	return err
}

// Leader returns the node name and fencing token of shard 0's leader, the
// cluster's leader, or "" if nobody leads it.
func (c *Coordinator) Leader(ctx context.Context) (string, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.electionPrefix(0), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", 0, err
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}
