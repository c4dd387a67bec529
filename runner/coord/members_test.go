package coord_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
)

// gated is a replica whose coordinator is gated by its membership.
type gated struct {
	node    string
	ms      *coord.Membership
	c       *coord.Coordinator
	metrics *observability.Metrics
	stop    context.CancelFunc
	done    chan struct{}

	mu      sync.Mutex
	ended   []error // causes of the terms that ended, in order
	drained []int64 // tokens of the terms drained before resigning
}

func jobSet(jobs ...string) coord.JobSet {
	m := map[string]string{}
	for _, j := range jobs {
		m[j] = "h-" + j
	}
	return coord.NewJobSet(m)
}

// gatedReplica starts a membership and a coordinator gated by it.
func (b *bundle) gatedReplica(t *testing.T, node string, set coord.JobSet, settle time.Duration, mismatch string) *gated {
	t.Helper()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	g := &gated{node: node, metrics: m, done: make(chan struct{})}
	cli := b.client(t)
	g.ms = coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "test", Node: node, LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second, Settle: settle, Mismatch: mismatch, JobSet: set, Metrics: m,
		Record: coord.MemberRecord{Version: "test", Started: time.Now()}})
	g.c = coord.New(coord.Options{Client: cli, Cluster: "test", Node: node, LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second, Gate: g.ms,
		OnTransition: func(leading bool, term *coord.Term) {
			if !leading {
				g.mu.Lock()
				g.ended = append(g.ended, context.Cause(term.Context()))
				g.mu.Unlock()
			}
		},
		Drain: func(_ context.Context, term *coord.Term) {
			g.mu.Lock()
			g.drained = append(g.drained, term.Token)
			g.mu.Unlock()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	var wg sync.WaitGroup
	wg.Go(func() { g.ms.Run(ctx) })
	wg.Go(func() { _ = g.c.Run(ctx) })
	go func() { wg.Wait(); close(g.done) }()
	t.Cleanup(g.close)
	return g
}

func (g *gated) close() {
	g.stop()
	<-g.done
}

func (g *gated) endCauses() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.ended)
}

func leaderAmong(gs ...*gated) *gated {
	var out *gated
	for _, g := range gs {
		if g.c.Term() != nil {
			if out != nil {
				return nil // two believe they lead: not settled
			}
			out = g
		}
	}
	return out
}

// A replica whose job set is not the cluster's does not campaign; when the
// majority moves to its set, the old leader steps down (draining, then
// resigning) after the settle delay, and one of the majority leads.
func TestMembershipGatesLeadershipOnTheClusterJobSet(t *testing.T) {
	b := setup(t)
	old, next := jobSet("x", "y"), jobSet("x", "z")
	const settle = 500 * time.Millisecond

	a := b.gatedReplica(t, "a", old, settle, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	first := a.c.Term()

	bb := b.gatedReplica(t, "b", next, settle, coord.MismatchRefuse)
	waitFor(t, "b to see the tie and refuse", 10*time.Second, func() bool {
		v := bb.ms.View()
		return len(v.Replicas) == 2 && v.ClusterJobSet == old.Fingerprint && !v.MayLead
	})
	if v := bb.ms.View(); v.JobSetAgreed || v.NotLeading == "" {
		t.Fatalf("b's view: %+v", v)
	}
	waitFor(t, "b to name the difference", 10*time.Second, func() bool { return bb.ms.View().Difference != nil })
	if d := bb.ms.View().Difference; !slices.Equal(d.OnlyHere, []string{"z"}) || !slices.Equal(d.MissingHere, []string{"y"}) {
		t.Fatalf("difference %+v", d)
	}
	if got := testutil.ToFloat64(bb.metrics.JobSetAgreed.WithLabelValues("b")); got != 0 {
		t.Fatalf("b: pacer_job_set_agreed = %v, want 0", got)
	}
	waitFor(t, "a: pacer_job_sets 2", 10*time.Second, func() bool { return testutil.ToFloat64(a.metrics.JobSets) == 2 })
	// b is a member but does not campaign: the election holds a alone.
	st, err := a.c.State(context.Background())
	if err != nil || !slices.Equal(st.Members, []string{"a"}) {
		t.Fatalf("campaigning members %v (%v), want only a", st.Members, err)
	}

	joined := time.Now()
	c := b.gatedReplica(t, "c", next, settle, coord.MismatchRefuse)
	waitFor(t, "a to step down and b or c to lead", 15*time.Second, func() bool {
		l := leaderAmong(a, bb, c)
		return l == bb || l == c
	})
	// b, which held the new set when the cluster switched to it, recorded
	// when (attack 22, T4: the new leaders' catch-ups count the slots of
	// changed jobs from there).
	sw, err := a.c.AgreedSince(context.Background())
	if err != nil || sw.JobSet != next.Fingerprint || sw.Node != "b" || sw.Since.Before(joined) || sw.Since.After(time.Now()) {
		t.Fatalf("recorded switch %+v (%v); want to %s, by b, after c joined at %s", sw, err, coord.Short(next.Fingerprint), joined)
	}
	causes := a.endCauses()
	if len(causes) != 1 || !errors.Is(causes[0], coord.ErrJobSetMismatch) {
		t.Fatalf("a's term ended with %v, want one ErrJobSetMismatch", causes)
	}
	a.mu.Lock()
	drained := slices.Clone(a.drained)
	a.mu.Unlock()
	if !slices.Equal(drained, []int64{first.Token}) {
		t.Fatalf("drained terms %v, want [%d]", drained, first.Token)
	}
	if first.Context().Err() == nil {
		t.Fatal("a's term context still live")
	}
	// a stays out while its set is not the cluster's.
	if got := testutil.ToFloat64(a.metrics.JobSetAgreed.WithLabelValues("a")); got != 0 {
		t.Fatalf("a: pacer_job_set_agreed = %v, want 0", got)
	}
	if ok, why, _ := a.ms.MayLead(); ok || !errors.Is(why, coord.ErrJobSetMismatch) {
		t.Fatalf("a may lead: %v (%v)", ok, why)
	}
}

// A member that comes and goes within the settle delay changes nothing.
func TestMembershipSettleKeepsLeadershipFromFlapping(t *testing.T) {
	b := setup(t)
	old, next := jobSet("x"), jobSet("y")
	const settle = 5 * time.Second
	a := b.gatedReplica(t, "a", old, settle, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	term := a.c.Term()
	bb := b.gatedReplica(t, "b", next, settle, coord.MismatchRefuse)
	c := b.gatedReplica(t, "c", next, settle, coord.MismatchRefuse)
	waitFor(t, "a to see the majority move", 10*time.Second, func() bool {
		v := a.ms.View()
		return len(v.Replicas) == 3 && v.ClusterJobSet == next.Fingerprint
	})
	c.close() // gone again well within the settle delay (its lease is revoked)
	waitFor(t, "a to see c gone, and its set the cluster's again", 10*time.Second, func() bool {
		v := a.ms.View()
		return len(v.Replicas) == 2 && v.ClusterJobSet == old.Fingerprint
	})
	// Past the moment the settle delay started, a still leads, same term.
	deadline := time.Now().Add(settle + time.Second)
	for time.Now().Before(deadline) {
		if a.c.Term() != term {
			t.Fatalf("a's term changed (ended: %v) though the majority held for less than the settle delay", a.endCauses())
		}
		time.Sleep(50 * time.Millisecond) // observing that nothing happens over a span of time
	}
	if bb.c.Term() != nil {
		t.Fatal("b leads")
	}
}

// With job_set_mismatch: warn, a replica whose set differs may lead.
func TestMembershipWarnLetsAMismatchedReplicaLead(t *testing.T) {
	b := setup(t)
	a := b.gatedReplica(t, "a", jobSet("x"), 200*time.Millisecond, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	w := b.gatedReplica(t, "w", jobSet("y"), 200*time.Millisecond, coord.MismatchWarn)
	waitFor(t, "w to decide", 10*time.Second, func() bool { v := w.ms.View(); return len(v.Replicas) == 2 && v.MayLead })
	if v := w.ms.View(); v.JobSetAgreed || v.ClusterJobSet == v.JobSet {
		t.Fatalf("w: %+v, want disagreeing but allowed to lead", v)
	}
	a.close()
	waitFor(t, "w to lead", 10*time.Second, func() bool { return w.c.Term() != nil })
}

// Two replicas under one node name: the second does not publish or lead
// until the first is gone.
func TestMembershipRefusesADuplicateNodeName(t *testing.T) {
	b := setup(t)
	set := jobSet("x")
	first := b.gatedReplica(t, "same", set, 200*time.Millisecond, coord.MismatchRefuse)
	waitFor(t, "the first to lead", 10*time.Second, func() bool { return first.c.Term() != nil })
	second := b.gatedReplica(t, "same", set, 200*time.Millisecond, coord.MismatchRefuse)
	waitFor(t, "the second to refuse", 10*time.Second, func() bool {
		ok, why, _ := second.ms.MayLead()
		return !ok && errors.Is(why, coord.ErrNodeNameInUse)
	})
	first.close()
	waitFor(t, "the second to lead", 15*time.Second, func() bool { return second.c.Term() != nil })
}

// A replica started while its killed predecessor's record (same node
// name) is still under that one's lease: the gate is closed at once, the
// record is published as soon as the old lease goes, and the first
// decision on the job set is immediate then, not a job_set_settle later.
// Its two log lines name the node once (the logger carries it).
func TestMembershipLeadsOnceAKilledPredecessorsRecordGoes(t *testing.T) {
	b := setup(t)
	cli := b.client(t)
	set := jobSet("x")
	old := putPredecessorsRecord(t, cli, set)
	var logs syncbuf.Buffer
	ms := coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "test", Node: "same", LeaseTTL: 30 * time.Second,
		RequestTimeout: 2 * time.Second, Settle: time.Hour, JobSet: set, Record: coord.MemberRecord{Version: "new", Started: time.Now()},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)).With("node", "same")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ms.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the gate to close on the predecessor's record", 10*time.Second, func() bool {
		ok, why, _ := ms.MayLead()
		return !ok && errors.Is(why, coord.ErrNodeNameInUse)
	})
	if _, err := cli.Revoke(context.Background(), old.ID); err != nil { // as its lease expiring
		t.Fatal(err)
	}
	waitFor(t, "the gate to open, without a job_set_settle (1h)", 10*time.Second, func() bool {
		ok, _, _ := ms.MayLead()
		return ok
	})
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, msg := range []string{"another replica runs under this node name", "node name free again"} {
		found := false
		for _, l := range lines {
			if !strings.Contains(l, msg) {
				continue
			}
			found = true
			if n := strings.Count(l, `"node":`); n != 1 {
				t.Errorf("%d \"node\" keys in %s", n, l)
			}
		}
		if !found {
			t.Errorf("no line %q in:\n%s", msg, logs.String())
		}
	}
}

// txnCounter counts the transactions committed through a client: the
// member record's publish attempts.
type txnCounter struct {
	clientv3.KV
	n atomic.Int64
}

func (c *txnCounter) Txn(ctx context.Context) clientv3.Txn { return countedTxn{c.KV.Txn(ctx), &c.n} }

type countedTxn struct {
	clientv3.Txn
	n *atomic.Int64
}

func (t countedTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { return countedTxn{t.Txn.If(cs...), t.n} }
func (t countedTxn) Then(ops ...clientv3.Op) clientv3.Txn { return countedTxn{t.Txn.Then(ops...), t.n} }
func (t countedTxn) Else(ops ...clientv3.Op) clientv3.Txn { return countedTxn{t.Txn.Else(ops...), t.n} }

func (t countedTxn) Commit() (*clientv3.TxnResponse, error) {
	defer t.n.Add(1)
	return t.Txn.Commit()
}

// On the coordinator's session lease (SessionLease: Publish, not Run's own
// lease), a record held back by a killed predecessor's record under the
// same node name is published as soon as that record goes, not after the
// retry's backoff, however long that has grown: the wait on the watch's
// word is Publish's as much as Run's.
func TestMembershipOnTheSessionLeasePublishesOnceAKilledPredecessorsRecordGoes(t *testing.T) {
	b := setup(t)
	cli := b.client(t)
	set := jobSet("x")
	old := putPredecessorsRecord(t, cli, set)
	session, err := cli.Grant(context.Background(), 60)
	if err != nil {
		t.Fatal(err)
	}
	own := b.client(t)
	txns := &txnCounter{KV: own.KV}
	own.KV = txns
	ms := coord.NewMembership(coord.MembershipOptions{Client: own, Cluster: "test", Node: "same", LeaseTTL: time.Minute,
		RequestTimeout: 2 * time.Second, Settle: time.Hour, JobSet: set, SessionLease: true,
		Record: coord.MemberRecord{Version: "new", Started: time.Now()}, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ms.Run(ctx) })
	wg.Go(func() { ms.Publish(ctx, session.ID) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	// Seven refused attempts: the backoff (200ms doubling) is 12.8s now.
	waitFor(t, "seven publish attempts refused for the node name", 30*time.Second, func() bool {
		ok, why, _ := ms.MayLead()
		return !ok && errors.Is(why, coord.ErrNodeNameInUse) && txns.n.Load() >= 7
	})
	if _, err := cli.Revoke(context.Background(), old.ID); err != nil { // as its lease expiring
		t.Fatal(err)
	}
	waitFor(t, "the record on the session lease, well before the next retry (12.8s)", 6*time.Second, func() bool {
		r, err := cli.Get(context.Background(), "/pacer/test/members/same")
		return err == nil && len(r.Kvs) == 1 && clientv3.LeaseID(r.Kvs[0].Lease) == session.ID
	})
}

// A replica's job set change is published; the cluster follows the
// majority at once when nobody's standing changes.
func TestMembershipPublishesAChangedJobSet(t *testing.T) {
	b := setup(t)
	a := b.gatedReplica(t, "a", jobSet("x"), 200*time.Millisecond, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	term := a.c.Term()
	watcher := b.gatedReplica(t, "watcher", jobSet("x"), 200*time.Millisecond, coord.MismatchRefuse)
	next := jobSet("x", "new")
	a.ms.SetJobSet(next, "/etc/pacer.yaml", "abc", time.Unix(1700000000, 0))
	waitFor(t, "a's record in etcd to carry the new set", 10*time.Second, func() bool {
		for _, r := range watcher.ms.View().Replicas {
			if r.Node == "a" {
				return r.JobSet == next.Fingerprint && r.Config == "/etc/pacer.yaml" && r.ConfigSHA256 == "abc"
			}
		}
		return false
	})
	// a and the watcher tie; a has been a member longer: its set stays
	// the cluster's, and it keeps its term.
	if a.c.Term() != term {
		t.Fatalf("a changed its jobs and lost its term: %v", a.endCauses())
	}
	got, err := a.c.JobSet(context.Background(), next.Fingerprint)
	if err != nil || got.Fingerprint != next.Fingerprint {
		t.Fatalf("stored job set %v, %v", got.Fingerprint, err)
	}
}

// A job set larger than one stored chunk reads back whole.
func TestJobSetStoredInChunks(t *testing.T) {
	b := setup(t)
	jobs := map[string]string{}
	for i := range 50000 { // over 1 MiB compressed: hex compresses to about half
		h := uint64(i+1) * 0x9e3779b97f4a7c15
		jobs[fmt.Sprintf("job-%016x", h^0x5bd1e995)] = fmt.Sprintf("%016x", h)
	}
	set := coord.NewJobSet(jobs)
	g := b.gatedReplica(t, "a", set, 200*time.Millisecond, coord.MismatchRefuse)
	waitFor(t, "the set to be stored", time.Minute, func() bool {
		_, err := g.c.JobSet(context.Background(), set.Fingerprint)
		return err == nil
	})
	cli := b.client(t)
	resp, err := cli.Get(context.Background(), "/pacer/test/jobsets/"+set.Fingerprint+"/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) < 2 {
		t.Fatalf("chunks: %v, %v; want at least 2", len(resp.Kvs), err)
	}
	got, err := g.c.JobSet(context.Background(), set.Fingerprint)
	if err != nil || len(got.Jobs) != len(jobs) {
		t.Fatalf("read back %d jobs, %v", len(got.Jobs), err)
	}
	if _, err := g.c.JobSet(context.Background(), jobSet("never stored").Fingerprint); !errors.Is(err, coord.ErrUnknownJobSet) {
		t.Fatalf("unknown set: %v", err)
	}
}

func TestEpochsRecordEachLeaderAndItsJobSet(t *testing.T) {
	b := setup(t)
	a := b.replica(t, "a")
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	term := a.c.Term()
	t0 := time.Now().Add(-time.Minute)
	s1, s2 := jobSet("x"), jobSet("x", "y")
	ctx := context.Background()
	if err := a.c.RecordEpoch(ctx, term, s1, t0); err != nil {
		t.Fatal(err)
	}
	if err := a.c.RecordEpoch(ctx, term, s2, t0.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	es, err := a.c.Epochs(ctx, 0)
	if err != nil || len(es) != 2 {
		t.Fatalf("epochs %+v, %v", es, err)
	}
	for _, tc := range []struct {
		at   time.Time
		want string
		ok   bool
	}{
		{t0.Add(-time.Second), "", false},
		{t0, s1.Fingerprint, true},
		{t0.Add(29 * time.Second), s1.Fingerprint, true},
		{t0.Add(30 * time.Second), s2.Fingerprint, true},
		{time.Now(), s2.Fingerprint, true},
	} {
		e, ok := coord.EpochAt(es, tc.at)
		if ok != tc.ok || e.JobSet != tc.want {
			t.Errorf("EpochAt(%s) = %s, %v; want %s, %v", tc.at.Sub(t0), coord.Short(e.JobSet), ok, coord.Short(tc.want), tc.ok)
		}
	}
	if e, _ := coord.EpochAt(es, time.Now()); e.Node != "a" || e.Token != term.Token || e.Jobs != 2 {
		t.Fatalf("epoch %+v", e)
	}
	// A stale term cannot record one.
	a.close()
	if err := a.c.RecordEpoch(ctx, term, s1, time.Now()); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("stale term recorded an epoch: %v", err)
	}
}

// manualGate is a Gate a test opens and closes.
type manualGate struct {
	mu      sync.Mutex
	ok      bool
	changed chan struct{}
}

func newManualGate(ok bool) *manualGate { return &manualGate{ok: ok, changed: make(chan struct{})} }

//lint:ignore ST1008 the error is why the gate is closed, not a failure (Gate.MayLead's order)
func (g *manualGate) MayLead() (bool, error, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ok, coord.ErrJobSetMismatch, g.changed
}

func (g *manualGate) set(ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ok = ok
	close(g.changed)
	g.changed = make(chan struct{})
}

// A leader whose gate closes ends its term (cancelling it), drains, and
// resigns at once, so a standby leads without waiting for the lease; a
// standby whose gate closes stops campaigning; a reopened gate campaigns
// again.
func TestClosedGateStepsDownAndStopsCampaigning(t *testing.T) {
	b := setup(t)
	type rep struct {
		c       *coord.Coordinator
		gate    *manualGate
		drained chan int64
		stop    context.CancelFunc
		done    chan struct{}
		ctx     context.Context
	}
	stopping := func(r *rep) bool { return r.ctx.Err() != nil }
	start := func(node string) *rep {
		r := &rep{gate: newManualGate(true), drained: make(chan int64, 4), done: make(chan struct{})}
		r.c = coord.New(coord.Options{Client: b.client(t), Cluster: "test", Node: node, LeaseTTL: 10 * time.Second,
			RequestTimeout: 2 * time.Second, Gate: r.gate,
			Drain: func(ctx context.Context, term *coord.Term) {
				// A term handed over because its gate closed has ended
				// (its runs were cancelled) when Drain waits for their
				// records; one handed over gracefully (the stop at the
				// end of this test) first drains while it lives, having
				// stopped firing.
				switch {
				case !term.Draining():
					t.Error("drained a term that still fires")
				case term.Context().Err() == nil && !stopping(r):
					t.Error("the gate closed, but its term was drained before it ended")
				}
				select {
				case r.drained <- term.Token:
				default:
				}
			}})
		ctx, cancel := context.WithCancel(context.Background())
		r.stop, r.ctx = cancel, ctx
		go func() { defer close(r.done); _ = r.c.Run(ctx) }()
		t.Cleanup(func() { r.stop(); <-r.done })
		return r
	}
	a := start("a")
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	term := a.c.Term()
	s := start("s")
	waitFor(t, "s to campaign", 10*time.Second, func() bool {
		st, err := a.c.State(context.Background())
		return err == nil && len(st.Members) == 2
	})

	closed := time.Now()
	a.gate.set(false)
	// Well within the 10 s lease: s leads because a resigned.
	waitFor(t, "s to lead", 5*time.Second, func() bool { return s.c.Term() != nil })
	t.Logf("standby led %s after the leader's gate closed", time.Since(closed).Round(time.Millisecond))
	if !errors.Is(context.Cause(term.Context()), coord.ErrJobSetMismatch) {
		t.Fatalf("a's term ended with %v", context.Cause(term.Context()))
	}
	if got := <-a.drained; got != term.Token {
		t.Fatalf("drained token %d, want %d", got, term.Token)
	}
	st, err := s.c.State(context.Background())
	if err != nil || !slices.Equal(st.Members, []string{"s"}) {
		t.Fatalf("campaigning %v (%v): a still campaigns with its gate closed", st.Members, err)
	}

	// a campaigns again once its gate opens; s's gate closing hands over.
	a.gate.set(true)
	waitFor(t, "a to campaign again", 10*time.Second, func() bool {
		st, err := s.c.State(context.Background())
		return err == nil && len(st.Members) == 2
	})
	sTerm := s.c.Term()
	s.gate.set(false)
	waitFor(t, "a to lead again", 5*time.Second, func() bool { return a.c.Term() != nil })
	if next := a.c.Term(); next.Token <= sTerm.Token || sTerm.Token <= term.Token {
		t.Fatalf("tokens %d, %d, %d: not increasing", term.Token, sTerm.Token, next.Token)
	}
}

// A replica that leaves (it is stopping) keeps its gate as it was: that it
// took itself off the member list must not make it step down, which would
// end its terms and cancel its runs, before its stop hands its shards over,
// draining them for up to shutdown.drain_timeout. Before, a lone replica's
// gate closed as soon as the job-set settle passed (no member had its set
// any more), and its runs were cancelled whatever the drain timeout.
func TestLeavingReplicaKeepsItsGate(t *testing.T) {
	b := setup(t)
	const settle = 200 * time.Millisecond
	g := b.gatedReplica(t, "a", jobSet("x"), settle, coord.MismatchRefuse)
	waitFor(t, "a leads", 10*time.Second, func() bool { return g.c.Term() != nil })
	g.c.Leave(context.Background())
	g.ms.Leave(context.Background()) // as Leave does with Options.Members
	time.Sleep(5 * settle)           // not synchronisation: the gate must not close in this time
	if ok, why, _ := g.ms.MayLead(); !ok {
		t.Fatalf("after leaving: may not lead (%v)", why)
	}
	if g.c.Term() == nil {
		t.Fatalf("after leaving: stopped leading (%v)", g.endCauses())
	}
}

// putPredecessorsRecord publishes the member record of a killed replica
// named "same" under a lease of its own (60 s), as it would still be until
// that lease expires, and returns the lease.
func putPredecessorsRecord(t *testing.T, cli *clientv3.Client, set coord.JobSet) *clientv3.LeaseGrantResponse {
	t.Helper()
	old, err := cli.Grant(context.Background(), 60)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(coord.MemberRecord{Node: "same", JobSet: set.Fingerprint, Jobs: 1, Version: "old", Started: time.Now()})
	if _, err := cli.Put(context.Background(), "/pacer/test/members/same", string(rec), clientv3.WithLease(old.ID)); err != nil {
		t.Fatal(err)
	}
	return old
}

// A candidate whose job set comes to differ from the cluster's stays a
// candidate (its shards stay assigned to it) until the difference has held
// for the settle delay, when its own gate closes too: a difference undone
// within the delay moves no shard. Before, it left the candidates at once,
// and with a shorter shard_settle the assignment handed a leader's shards
// over and back (attack 6, B3).
func TestCandidateWhoseSetDiffersStaysUntilTheSettleDelay(t *testing.T) {
	b := setup(t)
	set, other := jobSet("x", "y"), jobSet("x")
	const settle = 3 * time.Second
	a := b.gatedReplica(t, "a", set, settle, coord.MismatchRefuse)
	bb := b.gatedReplica(t, "b", set, settle, coord.MismatchRefuse)
	c := b.gatedReplica(t, "c", set, settle, coord.MismatchRefuse)
	candidates := func() []string { got, _, _ := c.ms.Candidates(); return got }
	waitFor(t, "three candidates", 10*time.Second, func() bool { return slices.Equal(candidates(), []string{"a", "b", "c"}) })

	bb.ms.SetJobSet(other, "", "", time.Time{})
	waitFor(t, "c to see b's new set", 10*time.Second, func() bool {
		for _, r := range c.ms.View().Replicas {
			if r.Node == "b" {
				return r.JobSet == other.Fingerprint
			}
		}
		return false
	})
	if got := candidates(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("candidates %v as soon as b's set differs, want b still among them for the settle delay", got)
	}
	waitFor(t, "b to leave the candidates once its difference held", 10*time.Second, func() bool {
		return slices.Equal(candidates(), []string{"a", "c"})
	})
	bb.ms.SetJobSet(set, "", "", time.Time{})
	waitFor(t, "b a candidate again", 10*time.Second, func() bool { return slices.Equal(candidates(), []string{"a", "b", "c"}) })
	if a.c.Term() == nil && bb.c.Term() == nil && c.c.Term() == nil {
		t.Fatal("nobody leads")
	}
}

// On a tie, the set the cluster runs stays the cluster's: the replica that
// leads with it restarts (so the differing one is now the longest member),
// and it leads again while the differing one stays refused.
func TestRestartOfTheRunningSetsReplicaKeepsTheClusterOnIt(t *testing.T) {
	b := setup(t)
	good, bad := jobSet("x", "y"), jobSet("x", "y", "stray")
	const settle = 3 * time.Second

	a := b.gatedReplica(t, "a", good, settle, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	if err := a.c.RecordEpoch(context.Background(), a.c.Term(), good, time.Now()); err != nil {
		t.Fatal(err)
	}
	bb := b.gatedReplica(t, "b", bad, settle, coord.MismatchRefuse)
	waitFor(t, "b to see the tie and refuse", 10*time.Second, func() bool {
		ok, why, _ := bb.ms.MayLead()
		return !ok && errors.Is(why, coord.ErrJobSetMismatch) && bb.ms.View().ClusterJobSet == good.Fingerprint
	})

	a.close()
	a2 := b.gatedReplica(t, "a", good, settle, coord.MismatchRefuse)
	waitFor(t, "the restarted a to lead", 15*time.Second, func() bool { return a2.c.Term() != nil })
	if v := a2.ms.View(); !v.JobSetAgreed || v.ClusterJobSet != good.Fingerprint {
		t.Fatalf("a's view after its restart: cluster %s, agreed %v", coord.Short(v.ClusterJobSet), v.JobSetAgreed)
	}
	waitFor(t, "b to see a back", 10*time.Second, func() bool {
		v := bb.ms.View()
		return len(v.Replicas) == 2 && v.ClusterJobSet == good.Fingerprint && !v.MayLead
	})
	if bb.c.Term() != nil || len(bb.endCauses()) != 0 {
		t.Fatalf("b led: term %v, ended %v", bb.c.Term(), bb.endCauses())
	}
}

// Attack 24, V6: after a restart of the replica that embeds etcd, the
// others' member records were gone with their leases and came back half a
// second after its first look. Alone, with a set the cluster had not run,
// it took its own for the cluster's and led every shard for
// job_set_settle. A first decision to lead with a set the cluster did not
// run last, that other replicas led, now waits for the settle delay; a
// replica whose set the cluster ran last does not wait.
func TestFirstLeadWithASetTheClusterDidNotRunWaitsTheSettleDelay(t *testing.T) {
	b := setup(t)
	old, next := jobSet("x", "y"), jobSet("x", "z")
	const settle = time.Second
	a := b.gatedReplica(t, "a", old, settle, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	if err := a.c.RecordEpoch(context.Background(), a.c.Term(), old, time.Now()); err != nil {
		t.Fatal(err)
	}
	a.close() // its member record goes; its epoch stays: the cluster ran old, led by a

	mayLeadAfter := func(g *gated) time.Duration {
		t.Helper()
		<-g.ms.Registered()
		start := time.Now()
		waitFor(t, g.node+" to may lead", 10*time.Second, func() bool { ok, _, _ := g.ms.MayLead(); return ok })
		return time.Since(start)
	}
	c := b.gatedReplica(t, "c", next, settle, coord.MismatchRefuse)
	if d := mayLeadAfter(c); d < settle-100*time.Millisecond {
		t.Fatalf("c, alone with a set the cluster did not run (a led it), may lead %s after its first look; want the settle delay, %s", d, settle)
	}
	c.close()
	// A replica with the set the cluster ran last decides at once.
	a2 := b.gatedReplica(t, "a2", old, settle, coord.MismatchRefuse)
	if d := mayLeadAfter(a2); d >= settle {
		t.Fatalf("a2, with the set the cluster ran last, may lead only %s after its first look; want at once", d)
	}
}
