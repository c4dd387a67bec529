package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pacerun/pacer/internal/backoff"
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

// errStopping ends a term because the runner is shutting down.
var errStopping = errors.New("runner stopping")

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
	Logger         *slog.Logger
	// Metrics, if set, receives the lease keepalive metrics.
	Metrics *observability.Metrics
	// Tracer, if set, records each election and leadership term as spans.
	Tracer trace.Tracer
	// OnTransition, if set, is called when this replica starts (true) or
	// stops (false) leading, with the term.
	OnTransition func(leading bool, t *Term)
	// Gate, if set, decides whether this replica may lead: it campaigns
	// only while the gate allows, and steps down when it stops allowing
	// (members.go).
	Gate Gate
	// Drain, if set, is called after a term ended because the gate closed
	// and before resigning, so that the term's runs (cancelled with the
	// term) end and are recorded before another replica leads.
	Drain func(ctx context.Context, t *Term)
	// CompactionInterval: while leading, every this often, compact etcd's
	// revisions older than the revision seen one interval before (as
	// kube-apiserver does). 0: never.
	CompactionInterval time.Duration
	// Monitor, if set, is the etcd status State reports.
	Monitor *Monitor
}

// Term is one period of leadership. Its context is cancelled when the term
// ends; work started under a term must stop then.
type Term struct {
	Token int64
	// Since is when this replica started leading.
	Since  time.Time
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	span   trace.Span
}

// Context is cancelled, with the reason as its cause, when the term ends.
func (t *Term) Context() context.Context { return t.ctx }

// Coordinator elects a leader among replicas and claims slots for it.
type Coordinator struct {
	opts   Options
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger

	batch   *batcher
	records *pipeline[*recordReq]
	jobSets *jobSetStore
	lastAck atomic.Int64 // UnixNano send time of the last acknowledged keepalive, while leading
	// noSpaceLogged is when NoSpaceHelp was last logged (UnixNano).
	noSpaceLogged atomic.Int64

	mu   sync.Mutex
	term *Term

	smu   sync.Mutex
	stale []clientv3.LeaseID // leases of ended terms not revoked yet

	cmu     sync.Mutex
	claims  *claimCache   // of the term that last used it
	loading chan struct{} // closed when the claims being read are in

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
	c := &Coordinator{opts: o, cli: o.Client, prefix: "/pacer/" + o.Cluster + "/", log: o.Logger, requests: make(chan struct{}, 1)}
	c.batch = newBatcher(c)
	c.records = newPipeline(maxRecordBatch, byTerm(c.commitRecordsOf))
	c.jobSets = newJobSetStore(c.cli, c.prefix, o.RequestTimeout)
	return c
}

// Term returns the current term, or nil when this replica does not lead.
func (c *Coordinator) Term() *Term {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.term
}

// Run campaigns for leadership until ctx is done, then resigns. It returns
// nil after a clean stop.
func (c *Coordinator) Run(ctx context.Context) error {
	wait := backoff.New(backoff.Policy{Initial: 200 * time.Millisecond, Max: c.opts.LeaseTTL})
	revoking := make(chan struct{})
	go func() {
		defer close(revoking)
		c.revokeStale(ctx)
	}()
	defer func() { <-revoking }()
	for {
		led, err := c.runTerm(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if led {
			wait.Reset()
		}
		d := wait.Next()
		c.log.Warn("leadership attempt ended; campaigning again", "error", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

// runTerm grants a lease, campaigns, and leads until the lease or ctx ends.
// It reports whether it led.
func (c *Coordinator) runTerm(ctx context.Context) (bool, error) {
	gate, err := c.waitGate(ctx)
	if err != nil {
		return false, err
	}
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	lease, err := c.cli.Grant(gctx, int64(c.opts.LeaseTTL/time.Second))
	cancel()
	if err != nil {
		return false, fmt.Errorf("grant lease: %w", err)
	}
	sess, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("open session: %w", err)
	}
	defer c.closeSession(sess)

	el := concurrency.NewElection(sess, c.prefix+"leader")
	cctx, ccancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer ccancel()
	go func() {
		select {
		case <-sess.Done():
			ccancel()
		case <-gate: // no longer allowed to lead: stop campaigning
			ccancel()
		case <-cctx.Done():
		}
	}()
	c.log.Debug("campaigning", "lease_id", fmt.Sprintf("%x", lease.ID))
	campaigned := time.Now()
	if err := el.Campaign(cctx, c.opts.Node); err != nil {
		if ok, why := c.mayLead(); !ok {
			return false, fmt.Errorf("stopped campaigning: %w", why)
		}
		return false, fmt.Errorf("campaign: %w", err)
	}
	if ok, why := c.mayLead(); !ok { // the gate closed as the campaign ended
		return false, fmt.Errorf("won the election, but may not lead: %w", why)
	}
	// Campaign does not re-check its key after waiting (etcd issue 11051).
	if err := c.verifyKey(ctx, el.Key(), el.Rev()); err != nil {
		return false, err
	}

	tctx, tcancel := context.WithCancelCause(context.Background())
	t := &Term{Token: el.Rev(), Since: time.Now(), key: el.Key(), ctx: tctx, cancel: tcancel}
	attrs := trace.WithAttributes(attribute.String("pacer.node", c.opts.Node), attribute.Int64("pacer.fencing_token", t.Token),
		attribute.String("pacer.cluster", c.opts.Cluster))
	_, election := c.opts.Tracer.Start(context.Background(), "pacer.election", trace.WithTimestamp(campaigned), attrs)
	election.End()
	_, t.span = c.opts.Tracer.Start(context.Background(), "pacer.leadership", attrs)
	c.mu.Lock()
	c.term = t
	c.mu.Unlock()
	c.log.Info("became leader", "fencing_token", t.Token)
	guarded := make(chan struct{})
	go func() {
		defer close(guarded)
		c.guard(t, lease.ID)
	}()
	defer func() { <-guarded }()
	compacted := make(chan struct{})
	go func() {
		defer close(compacted)
		c.compact(t)
	}()
	defer func() { <-compacted }()
	if c.opts.OnTransition != nil {
		c.opts.OnTransition(true, t)
	}

	var cause error
	for changed := gate; cause == nil; {
		select {
		case <-sess.Done():
			cause = errors.New("lease lost: keepalive failed or lease expired")
		case <-tctx.Done():
			cause = context.Cause(tctx)
		case <-ctx.Done():
			cause = errStopping
		case <-changed:
			var ok bool
			if ok, cause, changed = c.gateState(); ok {
				cause = nil
			}
		}
	}
	c.endTerm(t, cause)
	stepDown := ctx.Err() == nil && errors.Is(cause, errGateClosed)
	if stepDown && c.opts.Drain != nil {
		dctx, dcancel := context.WithTimeout(ctx, drainTimeout)
		c.opts.Drain(dctx, t)
		dcancel()
	}
	if ctx.Err() != nil || stepDown {
		rctx, rcancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		defer rcancel()
		if err := el.Resign(rctx); err != nil {
			c.log.Warn("resign failed; the lease will expire instead", "error", err)
		} else {
			c.log.Info("resigned leadership", "fencing_token", t.Token)
		}
	}
	return true, cause
}

// errGateClosed wraps the gate's reason when a term ends because the gate
// closed: the replica steps down (resigns) instead of waiting for its lease.
var errGateClosed = errors.New("may not lead")

// drainTimeout bounds how long a replica stepping down because its gate
// closed waits for its runs to end before it resigns.
const drainTimeout = 10 * time.Second

// waitGate waits until the gate allows leading, and returns the channel that
// closes when that may change (nil, never closing, without a gate).
func (c *Coordinator) waitGate(ctx context.Context) (<-chan struct{}, error) {
	for logged := false; ; logged = true {
		ok, why, changed := c.gateState()
		if ok {
			return changed, nil
		}
		if !logged {
			c.log.Info("not campaigning for leadership", "reason", why.Error())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// gateState is the gate's answer, with its reason wrapped in errGateClosed.
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
	current := c.term == t
	if current {
		c.term = nil
	}
	c.mu.Unlock()
	if !current {
		return
	}
	t.cancel(cause)
	level := slog.LevelWarn
	if errors.Is(cause, errStopping) {
		level = slog.LevelInfo
	} else {
		t.span.SetStatus(codes.Error, cause.Error())
	}
	t.span.AddEvent("leadership ended", trace.WithAttributes(attribute.String("reason", cause.Error())))
	t.span.End()
	c.log.Log(context.Background(), level, "leadership ended", "fencing_token", t.Token, "reason", cause.Error())
	if c.opts.OnTransition != nil {
		c.opts.OnTransition(false, t)
	}
}

// closeSession revokes the lease so that followers need not wait for the
// TTL. A lease that cannot be revoked now (etcd down or restarting) is
// revoked as soon as etcd answers (revokeStale): otherwise its election
// key, still there after etcd comes back, would hold up every campaign,
// this replica's own included, until the lease expires.
func (c *Coordinator) closeSession(s *concurrency.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	if _, err := c.cli.Revoke(ctx, s.Lease()); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		c.log.Debug("revoke lease; trying again until etcd answers", "error", err)
		c.smu.Lock()
		c.stale = append(c.stale, s.Lease())
		c.smu.Unlock()
	}
	s.Orphan()
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
				c.log.Debug("revoked the lease of an earlier term", "lease_id", fmt.Sprintf("%x", id))
			}
		}
	}
}

// compact compacts etcd while t lasts, every CompactionInterval: to the
// revision seen one interval before, so that an interval of history stays
// (for watches that reconnect) and no more.
func (c *Coordinator) compact(t *Term) {
	every := c.opts.CompactionInterval
	if every <= 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var prev int64
	for {
		ctx, cancel := context.WithTimeout(t.ctx, c.opts.RequestTimeout)
		resp, err := c.cli.Get(ctx, t.key, clientv3.WithKeysOnly())
		if err == nil && prev > 0 {
			_, err = c.cli.Compact(ctx, prev)
			switch {
			case err == nil:
				c.log.Debug("compacted etcd", "revision", prev)
			case errors.Is(err, rpctypes.ErrCompacted):
				err = nil // compacted further already (etcd's own compaction)
			}
		}
		cancel()
		if err != nil && t.ctx.Err() == nil {
			c.log.Warn("etcd compaction failed; trying again at the next interval", "error", err)
		}
		if resp != nil {
			prev = resp.Header.Revision
		}
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Leader returns the current leader's node name and fencing token, or "" if
// nobody leads.
func (c *Coordinator) Leader(ctx context.Context) (string, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.prefix+"leader/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", 0, err
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}
