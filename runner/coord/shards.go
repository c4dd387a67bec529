package coord

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/duration"
	"github.com/pacerun/pacer/runner/shard"
)

// ErrHandedOver ends a term whose shard moved to the replica now assigned
// to it.
var ErrHandedOver = errors.New("shard handed over to the replica it is assigned to")

// HandedOver reports whether a term that ended with cause was handed over
// (drained, marked and resigned: a shard moved, the replica stopped, or
// its gate closed), rather than lost.
func HandedOver(cause error) bool {
	return errors.Is(cause, ErrHandedOver) || errors.Is(cause, ErrStopping) || errors.Is(cause, errGateClosed)
}

// electionPrefix is shard n's election: its keys are
// leader/<n>/<lease in hex>, the oldest leads. A key of the version before
// shards (leader/<lease>) lies under the same prefix as that version's
// campaign, so an old replica cannot win while a new one holds a shard.
func (c *Coordinator) electionPrefix(n int) string {
	return c.prefix + "leader/" + strconv.Itoa(n) + "/"
}

// shardRun is this replica's goroutine for one shard: it campaigns, leads,
// and hands over or stops.
type shardRun struct {
	n       int
	stop    chan struct{} // closed: no longer assigned; stop campaigning (not leading yet)
	release chan struct{} // closed: hand the shard over (leading)
	done    chan struct{} // closed when the goroutine returned

	mu       sync.Mutex
	term     *Term
	stopped  bool
	released bool
	why      error // why it is handed over
}

func (r *shardRun) leading() *Term {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.term
}

func (r *shardRun) setTerm(t *Term) {
	r.mu.Lock()
	r.term = t
	r.mu.Unlock()
}

func (r *shardRun) stopCampaign() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.stopped = true
		close(r.stop)
	}
}

func (r *shardRun) handOver(why error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.released {
		r.released, r.why = true, why
		close(r.release)
	}
}

// handingOver reports whether the shard is being handed over (released
// while led; its goroutine ends when it has resigned).
func (r *shardRun) handingOver() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.released && r.term != nil
}

func (r *shardRun) reason() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.why
}

// candidates returns the replicas that may lead, when that list last
// changed and a channel closed at its next change. Without a roster this
// replica is alone, and never changes.
func (c *Coordinator) candidates() ([]string, time.Time, <-chan struct{}) {
	if c.opts.Roster == nil {
		return []string{c.opts.Node}, time.Time{}, nil
	}
	return c.opts.Roster.Candidates()
}

// manage keeps, on session ss, one goroutine per shard assigned to this
// replica (or led by it), until ss or ctx ends. Each pass:
//
//   - an assigned shard without a goroutine gets one, which campaigns at
//     once (a shard nobody leads is taken without delay);
//   - a goroutine still campaigning for a shard no longer assigned stops;
//   - a shard led but no longer assigned is handed over once the roster has
//     been unchanged for Settle, every replica the assignment gives shards
//     to has kept its lease alive since then and lately (liveness.go: a
//     replica killed before the roster settled still has its member record
//     and election keys until its lease expires), and the new owner's
//     campaign is waiting in the shard's election, so that the hand-over
//     does not leave it unled and a flapping or crash-looping replica
//     moves nothing;
//   - one hand-over is in flight at a time: the next waits until the
//     shard before it has been resigned;
//   - while the gate is closed nothing is assigned to this replica: it
//     stops campaigning and hands over every shard it leads at once (the
//     gate has its own settle delay).
//
// It reports whether any shard was led on ss.
func (c *Coordinator) manage(ctx context.Context, ss *session) (bool, error) {
	runs := map[int]*shardRun{}
	ended := make(chan int, c.opts.Shards)
	var wg sync.WaitGroup
	led := false
	defer func() {
		for _, r := range runs {
			r.stopCampaign()
		}
		wg.Wait()
	}()
	recheck := time.NewTimer(time.Hour)
	defer recheck.Stop()
	sweep := time.NewTicker(orphanSweep)
	defer sweep.Stop()
	var refused string                         // the gate's reason, as last logged
	proofs := map[clientv3.LeaseID]time.Time{} // per lease of another replica: its latest keepalive known
	unproven := ""                             // the replica not known to be alive, as last logged
	for {
		ok, why, gateChanged := c.gateState()
		if !ok && why.Error() != refused {
			refused = why.Error()
			c.log.Info("not campaigning for any shard", "reason", refused)
		} else if ok {
			refused = ""
		}
		nodes, since, changed := c.candidates()
		assigned := shard.Assign(c.opts.Shards, nodes)
		calm := time.Since(since) >= c.opts.Settle
		wait := time.Duration(0)
		inFlight := slices.ContainsFunc(slices.Collect(maps.Values(runs)), (*shardRun).handingOver)
		var elections *electionView // read once a pass, when a shard may move
		ready := func() bool {
			if elections == nil {
				elections = c.readElections(ctx)
				if !c.othersLive(ctx, elections, assigned, since.Add(c.opts.Settle), proofs) {
					elections.read = false // nobody counts as waiting
					// A live replica's next keepalive shows within
					// liveWithin of the settle delay's end: say so only
					// after that, once per replica and roster.
					late := time.Since(since.Add(c.opts.Settle)) >= c.liveWithin()
					if why := elections.unproven + " " + since.String(); late && elections.unproven != "" && why != unproven {
						unproven = why
						c.log.Info("not handing shards over yet: a replica has not kept its lease alive since the membership settled "+
							"(killed, or slow to start); its shards move once it has, or stay here when its lease expires",
							"replica", elections.unproven)
					}
				}
			}
			return elections.read
		}
		for n, owner := range assigned {
			r := runs[n]
			mine := ok && owner == c.opts.Node
			switch {
			case mine && r == nil:
				r = &shardRun{n: n, stop: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
				runs[n] = r
				wg.Go(func() {
					defer func() { ended <- n }()
					c.runShard(ctx, ss, r)
				})
			case mine || r == nil:
			case r.leading() == nil:
				r.stopCampaign()
			case !ok:
				r.handOver(why)
			case !calm:
				wait = minPositive(wait, c.opts.Settle-time.Since(since))
			case owner == "":
				// Nobody else may lead: keep it.
			case inFlight:
				// One hand-over at a time: its end (ended) wakes this loop.
			case ready() && elections.waiting(n, owner):
				c.log.Info("handing shard over", "shard", n, "to", owner)
				r.handOver(ErrHandedOver)
				inFlight = true
			default:
				wait = minPositive(wait, 250*time.Millisecond)
			}
		}
		for _, r := range runs {
			if r.leading() != nil {
				led = true
			}
		}
		if wait > 0 {
			recheck.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return led, ErrStopping
		case <-ss.ctx.Done():
			return led, context.Cause(ss.ctx)
		case <-changed:
		case <-gateChanged:
		case n := <-ended:
			delete(runs, n)
		case <-recheck.C:
		case <-sweep.C:
			c.sweepOrphans(ctx, ss, runs)
		}
	}
}

// orphanSweep is how often manage looks for election keys of its session
// that no goroutine campaigns with.
const orphanSweep = 2 * time.Second

// sweepOrphans deletes this session's election keys of shards no goroutine
// campaigns for or leads: a campaign whose put landed but whose answer was
// lost, or whose clean-up failed, would otherwise hold that shard's
// election for as long as the session lives. Called by manage, the only
// starter of goroutines, so none starts meanwhile.
func (c *Coordinator) sweepOrphans(ctx context.Context, ss *session, runs map[int]*shardRun) {
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(gctx, c.prefix+"leader/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	for _, kv := range resp.Kvs {
		if clientv3.LeaseID(kv.Lease) != ss.lease {
			continue
		}
		num, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), c.prefix+"leader/"), "/")
		n, err := strconv.Atoi(num)
		if err != nil || runs[n] != nil {
			continue
		}
		c.log.Warn("removing an election key no campaign holds", "shard", n, "key", string(kv.Key))
		_, _ = c.cli.Txn(gctx).If(clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision)).
			Then(clientv3.OpDelete(string(kv.Key))).Commit()
	}
}

func minPositive(a, b time.Duration) time.Duration {
	b = max(b, time.Millisecond)
	if a <= 0 || b < a {
		return b
	}
	return a
}

// runShard campaigns for shard r.n on ss and leads it until its term ends,
// it is asked to hand the shard over, or ss or ctx ends.
func (c *Coordinator) runShard(ctx context.Context, ss *session, r *shardRun) {
	defer close(r.done)
	cctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	stopWatch := context.AfterFunc(ss.ctx, cancel)
	defer stopWatch()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-cctx.Done():
		}
	}()
	// Under one shard count at a time (counts.go): the mark is held while
	// this goroutine campaigns and leads, and given up after its election
	// key is gone.
	if err := c.enterCount(cctx, ss, r.n); err != nil {
		return
	}
	defer c.leaveCount(ss)
	campaigned := time.Now()
	key, rev, err := c.campaign(cctx, ss, r.n)
	if err != nil {
		if ctx.Err() == nil && ss.ctx.Err() == nil && cctx.Err() == nil {
			c.log.Warn("campaign failed", "shard", r.n, "error", err)
		}
		return
	}
	if ok, why := c.mayLead(); !ok { // the gate closed as the campaign ended
		c.log.Info("won the election, but may not lead", "shard", r.n, "reason", why.Error())
		c.resign(key, rev, r.n)
		return
	}
	t, err := c.startTerm(ss, r.n, key, rev, campaigned)
	if err != nil {
		c.log.Warn("won the election but did not lead", "shard", r.n, "error", err)
		c.resign(key, rev, r.n)
		return
	}
	r.setTerm(t)
	defer c.dropClaims(t)
	if t.Shard == 0 { // the cluster's leader does the cluster-wide chores
		compacted := make(chan struct{})
		go func() {
			defer close(compacted)
			c.compact(t)
		}()
		defer func() { <-compacted }()
	}
	if c.opts.OnTransition != nil {
		c.opts.OnTransition(true, t)
	}
	select {
	case <-t.ctx.Done(): // fenced, guard failed, or the session ended
		if ss.ctx.Err() == nil {
			c.resign(key, rev, r.n) // so that a new campaign can start
		}
	case <-ss.ctx.Done(): // the session's end ends the term; its keys go with the lease
	case <-r.release:
		c.handOver(t, r.reason())
	case <-ctx.Done():
		c.handOver(t, ErrStopping)
	}
}

// campaign puts this session's key into shard n's election, unless it is
// there already, and waits until every older key is gone. It returns the
// key and its create revision: the fencing token if the term starts. On
// failure it removes the key it put. It is concurrency.Election's Campaign,
// with every request bounded and the clean-up not waiting on a dead etcd.
func (c *Coordinator) campaign(ctx context.Context, ss *session, n int) (string, int64, error) {
	prefix := c.electionPrefix(n)
	key := fmt.Sprintf("%s%x", prefix, ss.lease)
	pctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	resp, err := c.cli.Txn(pctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, c.opts.Node, clientv3.WithLease(ss.lease))).
		Else(clientv3.OpGet(key)).Commit()
	cancel()
	if err != nil {
		// The put may have landed without its answer: remove the key, or
		// it would hold the shard's election (manage sweeps it otherwise).
		dctx, dcancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		_, _ = c.cli.Delete(dctx, key)
		dcancel()
		return "", 0, fmt.Errorf("campaign for shard %d: %w", n, err)
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		rev = resp.Responses[0].GetResponseRange().GetKvs()[0].CreateRevision
	}
	if err := c.waitOlder(ctx, prefix, rev); err != nil {
		c.resign(key, rev, n)
		return "", 0, err
	}
	// Campaign does not re-check its key after waiting (etcd issue 11051).
	if err := c.verifyKey(ctx, key, rev); err != nil {
		return "", 0, err
	}
	return key, rev, nil
}

// waitOlder waits until no key under prefix has a create revision below
// rev.
func (c *Coordinator) waitOlder(ctx context.Context, prefix string, rev int64) error {
	for {
		gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		resp, err := c.cli.Get(gctx, prefix, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...)
		cancel()
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		// Wait for the youngest older key to go; then look again.
		older := string(resp.Kvs[0].Key)
		wctx, wcancel := context.WithCancel(ctx)
		wch := c.cli.Watch(wctx, older, clientv3.WithRev(resp.Header.Revision+1))
		gone := false
		for wr := range wch {
			if err := wr.Err(); err != nil {
				wcancel()
				return err
			}
			if slices.ContainsFunc(wr.Events, func(ev *clientv3.Event) bool { return ev.Type == clientv3.EventTypeDelete }) {
				gone = true
				break
			}
		}
		wcancel()
		if !gone {
			if err := ctx.Err(); err != nil {
				return err
			}
			return errors.New("election watch closed")
		}
	}
}

// resign deletes a campaign or election key if it is still the one created
// at rev. A failure is retried until etcd answers, for as long as the
// session lasts: a key left behind would hold the shard's election.
func (c *Coordinator) resign(key string, rev int64, n int) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		_, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
			Then(clientv3.OpDelete(key)).Commit()
		cancel()
		if err == nil {
			return
		}
		c.mu.Lock()
		ss := c.session
		c.mu.Unlock()
		if ss == nil || !strings.HasSuffix(key, fmt.Sprintf("%x", ss.lease)) {
			return // the session is gone, and its keys with its lease
		}
		c.log.Warn("election key not removed; trying again", "shard", n, "error", err)
		select {
		case <-ss.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// startTerm starts leading shard n under the key won, unless the session
// has ended meanwhile.
func (c *Coordinator) startTerm(ss *session, n int, key string, rev int64, campaigned time.Time) (*Term, error) {
	tctx, tcancel := context.WithCancelCause(context.Background())
	t := &Term{Shard: n, Token: rev, Since: time.Now(), key: key, session: ss, ctx: tctx, cancel: tcancel, stopped: make(chan struct{})}
	attrs := trace.WithAttributes(attribute.String("pacer.node", c.opts.Node), attribute.Int64("pacer.fencing_token", t.Token),
		attribute.String("pacer.cluster", c.opts.Cluster), attribute.Int("pacer.shard", n))
	c.mu.Lock()
	if err := ss.ctx.Err(); err != nil {
		c.mu.Unlock()
		tcancel(context.Cause(ss.ctx))
		return nil, context.Cause(ss.ctx)
	}
	c.terms[n] = t
	c.mu.Unlock()
	_, election := c.opts.Tracer.Start(context.Background(), "pacer.election", trace.WithTimestamp(campaigned), attrs)
	election.End()
	_, t.span = c.opts.Tracer.Start(context.Background(), "pacer.leadership", attrs)
	c.log.Info("became leader", "shard", n, "fencing_token", t.Token)
	return t, nil
}

// handOver ends t gracefully: firing stops, its runs may finish (Drain,
// bounded by DrainTimeout), the term ends (cancelling the rest), their
// records are written, the hand-over mark tells the next leader from when
// the shard's slots are late rather than missed, and the key is deleted so
// that the next campaign in line wins at once. A replica whose gate closed
// (its job set is not the cluster's) does not let its runs finish: the term
// ends first, then their records are written.
func (c *Coordinator) handOver(t *Term, why error) {
	_, span := c.opts.Tracer.Start(context.Background(), "pacer.handover", trace.WithAttributes(
		attribute.String("pacer.node", c.opts.Node), attribute.Int("pacer.shard", t.Shard),
		attribute.Int64("pacer.fencing_token", t.Token), attribute.String("reason", why.Error())))
	defer span.End()
	from := t.StopFiring()
	if c.opts.Drain != nil && !errors.Is(why, errGateClosed) {
		ctx, cancel := context.WithTimeout(t.ctx, c.opts.DrainTimeout)
		c.opts.Drain(ctx, t)
		cancel()
		span.AddEvent("runs drained")
	}
	c.endTerm(t, why)
	if c.opts.Drain != nil {
		ctx, cancel := context.WithTimeout(context.Background(), duration.Times(c.opts.RequestTimeout, 2))
		c.opts.Drain(ctx, t)
		cancel()
	}
	if err := c.markHandOver(t, t.heldFrom(from)); err != nil {
		span.SetStatus(codes.Error, err.Error())
		c.log.Warn("hand-over mark not written: the next leader applies the misfire policy to the slots due meanwhile",
			"shard", t.Shard, "error", err)
	}
	c.resign(t.key, t.Token, t.Shard)
	c.log.Info("resigned leadership", "shard", t.Shard, "fencing_token", t.Token, "reason", why.Error(),
		"hand_over_ms", time.Since(from).Milliseconds())
}
