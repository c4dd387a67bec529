package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// gatedTasks is a TaskRunner that records each call's correlation ID and
// holds it until the gate opens (closed) or its context ends.
type gatedTasks struct {
	mu    sync.Mutex
	calls []*pluginhost.Call
	gate  chan struct{}
	// okOnCancel makes a cancelled call answer success at once, as a task
	// that returns when its context ends (an SDK's ctx.wait) does.
	okOnCancel bool
}

func newGatedTasks() *gatedTasks { return &gatedTasks{gate: make(chan struct{})} }

func (g *gatedTasks) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	g.mu.Lock()
	g.calls = append(g.calls, &c)
	g.mu.Unlock()
	select {
	case <-g.gate:
		return &pluginhost.Result{Output: "ok"}, nil
	case <-ctx.Done():
		if g.okOnCancel {
			return &pluginhost.Result{Output: "stopped early"}, nil
		}
		return nil, ctx.Err()
	}
}

// correlations returns the correlation IDs of the calls so far, in order.
func (g *gatedTasks) correlations() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, c := range g.calls {
		out = append(out, c.Info.CorrelationID)
	}
	return out
}

// replica is one runner with its coordinator against a shared etcd, wired
// as fxmodule wires them: the trigger watch, and OnTerm on every new term.
type replica struct {
	c       *coord.Coordinator
	r       *runner.Runner
	cli     *clientv3.Client
	metrics *observability.Metrics
	stop    func()
}

// startEtcd starts an embedded etcd for one test and returns its endpoint.
func startEtcd(t *testing.T) string {
	t.Helper()
	return etcdtest.Start(t, etcdembed.Options{Name: "t"}).Endpoint()
}

func startReplica(t *testing.T, endpoint, node string, tasks runner.TaskRunner, o runner.Options, dial ...grpc.DialOption) *replica {
	t.Helper()
	return startReplicaHow(t, endpoint, node, tasks, o, false, dial...)
}

// startHandingReplica is startReplica wired as fxmodule wires a replica:
// its coordinator drains the runner's runs (WaitIdle, for up to a minute)
// before a hand-over, and stop stops it as a SIGTERM does (Leave, the
// coordinator's end, which hands each shard over, then the runner's stop).
func startHandingReplica(t *testing.T, endpoint, node string, tasks runner.TaskRunner) *replica {
	t.Helper()
	return startReplicaHow(t, endpoint, node, tasks, runner.Options{}, true)
}

// wrapCoord, given as startReplica's Options.Coord, has the runner call
// wrap of the replica's coordinator.
type wrapCoord struct {
	runner.Coordinator
	wrap func(*coord.Coordinator) runner.Coordinator
}

func startReplicaHow(t *testing.T, endpoint, node string, tasks runner.TaskRunner, o runner.Options, handing bool, dial ...grpc.DialOption) *replica {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialOptions: dial})
	if err != nil {
		t.Fatal(err)
	}
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	var r *runner.Runner
	var rmu sync.Mutex
	co := coord.Options{Client: cli, Cluster: "t", Node: node, LeaseTTL: 2 * time.Second, RequestTimeout: time.Second,
		OnTransition: func(leading bool, term *coord.Term) {
			rmu.Lock()
			defer rmu.Unlock()
			if leading && r != nil {
				go r.OnTerm(term)
			}
		}}
	if handing {
		co.DrainTimeout = time.Minute
		co.Drain = func(ctx context.Context, term *coord.Term) {
			rmu.Lock()
			rr := r
			rmu.Unlock()
			rr.WaitIdle(ctx, term)
		}
	}
	c := coord.New(co)
	var rc runner.Coordinator = c
	if w, ok := o.Coord.(wrapCoord); ok {
		rc = w.wrap(c)
	}
	o.Node, o.Coord, o.Tasks, o.Metrics, o.Logger, o.Tracer = node, rc, tasks, m, discardLogger().With("node", node), trace.NewTracerProvider().Tracer("t")
	if handing {
		o.JobSets = c
	}
	rmu.Lock()
	r = runner.New(o)
	rmu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	wctx, wcancel := context.WithCancel(context.Background())
	wg.Go(func() { c.WatchTriggers(wctx, r.HandleTriggers) })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			wcancel()
			drainFor := time.Second
			if handing { // as a SIGTERM: leave, hand each shard over, then stop
				c.Leave(context.Background())
				cancel()
				wg.Wait()
				drainFor = time.Minute
			}
			drain, dcancel := context.WithTimeout(context.Background(), drainFor)
			r.Stop(drain)
			dcancel()
			cancel()
			wg.Wait()
			cli.Close()
		})
	}
	t.Cleanup(stop)
	return &replica{c: c, r: r, cli: cli, metrics: m, stop: stop}
}

func (p *replica) waitLeader(t *testing.T) *coord.Term {
	t.Helper()
	waitUntil(t, "leadership", func() bool { return p.c.Term() != nil })
	return p.c.Term()
}

func (p *replica) control() *runner.Control { return &runner.Control{Runner: p.r, Store: p.c} }

// recordsOf reads a job's run and skip records straight from etcd.
func recordsOf(t *testing.T, cli *clientv3.Client, job string) []runner.Record {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/pacer/t/runs/"+job+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]runner.Record, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// storedTriggers counts the trigger requests kept in etcd for job.
func storedTriggers(t *testing.T, cli *clientv3.Client, job string) int {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/pacer/t/triggers/"+job+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func byCorrelation(recs []runner.Record) map[string][]runner.Record {
	out := map[string][]runner.Record{}
	for _, r := range recs {
		out[r.CorrelationID] = append(out[r.CorrelationID], r)
	}
	return out
}

// Issue 10 item 2: 8 triggers on a busy overlap: forbid job give 1 run and
// 7 skip records with their callers' correlation IDs, each decided in one
// fenced transaction with its request's removal; after a restart nothing
// more runs.
func TestManualTriggersOnBusyJobAreDecidedOnce(t *testing.T) {
	ep := startEtcd(t)
	tasks := newGatedTasks()
	a := startReplica(t, ep, "a", tasks, runner.Options{})
	a.waitLeader(t)
	busy := job("busy", runner.OverlapForbid)
	a.r.SetJobs([]*runner.Job{busy})
	ctl := a.control()

	ids := map[string]string{} // correlation ID -> trigger ID
	first, err := ctl.Trigger(context.Background(), "busy", "corr-0", "test", "")
	if err != nil || first.State != runner.StateAccepted {
		t.Fatalf("trigger: %+v %v", first, err)
	}
	ids["corr-0"] = first.TriggerID
	waitUntil(t, "the first trigger to run", func() bool { return len(tasks.correlations()) == 1 })
	for i := 1; i < 8; i++ {
		corr := fmt.Sprintf("corr-%d", i)
		tr, err := ctl.Trigger(context.Background(), "busy", corr, "test", "")
		if err != nil {
			t.Fatal(err)
		}
		ids[corr] = tr.TriggerID
	}
	waitUntil(t, "7 skip records", func() bool { return len(recordsOf(t, a.cli, "busy")) == 7 })
	// Decided and removed together: only the running request is kept.
	if n := storedTriggers(t, a.cli, "busy"); n != 1 {
		t.Fatalf("%d trigger requests kept while one runs, want 1 (its claim)", n)
	}
	waitUntil(t, "pacer_trigger_requests_stored to follow", func() bool {
		return testutil.ToFloat64(a.metrics.TriggersStored) == 1
	})
	close(tasks.gate)
	waitUntil(t, "the run's record", func() bool { return len(recordsOf(t, a.cli, "busy")) == 8 })
	if n := storedTriggers(t, a.cli, "busy"); n != 0 {
		t.Fatalf("%d trigger requests kept after every one was decided, want 0", n)
	}
	got := byCorrelation(recordsOf(t, a.cli, "busy"))
	for corr, tid := range ids {
		recs := got[corr]
		if len(recs) != 1 {
			t.Fatalf("%s: %d records, want 1: %+v", corr, len(recs), recs)
		}
		rec := recs[0]
		want := "skipped"
		if corr == "corr-0" {
			want = observability.OutcomeSuccess
		}
		if rec.State != want || !rec.Manual || rec.TriggerID != tid || (want == "skipped" && rec.Reason != runner.SkipOverlap) {
			t.Errorf("%s: record %+v, want state %s, manual, trigger %s", corr, rec, want, tid)
		}
	}
	if n := testutil.ToFloat64(a.metrics.JobSkipped.WithLabelValues("busy", runner.SkipOverlap)); n != 7 {
		t.Errorf("pacer_job_skipped_total{reason=overlap} = %v, want 7", n)
	}

	// A restart: another replica leads. Requests are decided oldest
	// first, so a request left over would run before this new one.
	a.stop()
	tasksB := newGatedTasks()
	close(tasksB.gate)
	b := startReplica(t, ep, "b", tasksB, runner.Options{})
	b.r.SetJobs([]*runner.Job{busy})
	b.waitLeader(t)
	if _, err := b.control().Trigger(context.Background(), "busy", "after-restart", "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the trigger after the restart", func() bool { return len(recordsOf(t, b.cli, "busy")) == 9 })
	if got := tasksB.correlations(); !slices.Equal(got, []string{"after-restart"}) {
		t.Fatalf("after the restart ran %q, want only the new trigger", got)
	}
}

// A trigger whose leader lost leadership mid-run is decided by the next
// term's delivery policy: at-most-once records it as lost (with its
// correlation ID), at-least-once runs it again as the next attempt, and
// records the attempt it took over with the claim that runs it again: here
// the replica writes no record on its own (lostBeforeRecords), as a leader
// lost right after that claim could not.
func TestManualTriggerLeftRunningFollowsDelivery(t *testing.T) {
	for _, policy := range []string{runner.DeliveryAtMostOnce, runner.DeliveryAtLeastOnce} {
		t.Run(policy, func(t *testing.T) {
			ep := startEtcd(t)
			tasks := newGatedTasks()
			var o runner.Options
			if policy == runner.DeliveryAtLeastOnce {
				o.Coord = wrapCoord{wrap: func(c *coord.Coordinator) runner.Coordinator { return lostBeforeRecords{c} }}
			}
			a := startReplica(t, ep, "a", tasks, o)
			old := a.waitLeader(t)
			j := job("d", runner.OverlapForbid)
			j.Delivery = policy
			a.r.SetJobs([]*runner.Job{j})
			tr, err := a.control().Trigger(context.Background(), "d", "corr-d", "test", "")
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the run", func() bool { return len(tasks.correlations()) == 1 })
			// The server deletes the election key, as when the lease
			// expires: the run is cancelled and cannot record its end.
			expireLeaderLease(t, a.cli)
			<-old.Context().Done()
			waitUntil(t, "a new term", func() bool { t2 := a.c.Term(); return t2 != nil && t2.Token != old.Token })
			if policy == runner.DeliveryAtLeastOnce {
				waitUntil(t, "the run again", func() bool { return len(tasks.correlations()) == 2 })
				// Attempt 1's record is written with attempt 2's claim, in
				// one transaction: it is there as attempt 2 runs.
				if recs := recordsOf(t, a.cli, "d"); len(recs) != 1 || recs[0].Attempt != 1 {
					t.Fatalf("records as attempt 2 runs: %+v, want attempt 1's", recs)
				}
				close(tasks.gate)
				waitUntil(t, "its record and attempt 1's", func() bool {
					recs := recordsOf(t, a.cli, "d")
					return len(recs) == 2 && slices.ContainsFunc(recs, func(r runner.Record) bool { return r.State == observability.OutcomeSuccess })
				})
				recs := recordsOf(t, a.cli, "d") // oldest first
				if len(recs) != 2 || recs[1].CorrelationID != "corr-d" || recs[1].Attempt != 2 || recs[1].TriggerID != tr.TriggerID {
					t.Fatalf("records %+v, want attempt 1's, then a success of attempt 2 with corr-d", recs)
				}
				// Attack 25, W6: the attempt lost with its leader is
				// recorded by the next (before, it had no record).
				if lost := recs[0]; lost.State != "skipped" || lost.Reason != runner.SkipLockLost || lost.Attempt != 1 ||
					lost.CorrelationID != "corr-d" || !lost.Manual || lost.TriggerID != tr.TriggerID || !strings.Contains(lost.Error, "run again as attempt 2") {
					t.Fatalf("attempt 1's record %+v, want skipped lock_lost with corr-d and the trigger ID, saying it runs attempt 2", lost)
				}
			} else {
				waitUntil(t, "the lost record", func() bool { return len(recordsOf(t, a.cli, "d")) == 1 })
				rec := recordsOf(t, a.cli, "d")[0]
				if rec.State != "skipped" || rec.Reason != runner.SkipLockLost || rec.CorrelationID != "corr-d" || !rec.Manual || rec.TriggerID != tr.TriggerID {
					t.Fatalf("record %+v, want skipped lock_lost with corr-d", rec)
				}
				if n := len(tasks.correlations()); n != 1 {
					t.Fatalf("%d runs under at-most-once, want 1", n)
				}
				close(tasks.gate)
			}
			waitUntil(t, "no request kept", func() bool { return storedTriggers(t, a.cli, "d") == 0 })
		})
	}
}

// A request not decided within the expiry is recorded as skipped, reason
// expired: here one for a job the leader does not have (an API replica
// with another config took it), and one that waited for a leader longer
// than the expiry. A request whose job a reload adds before it expires
// runs.
func TestManualTriggerExpires(t *testing.T) {
	ep := startEtcd(t)
	tasks := newGatedTasks()
	close(tasks.gate)
	// Long enough for the reload below to add "added" before its request
	// expires, on a loaded machine too (500 ms was not, once).
	leader := startReplica(t, ep, "leader", tasks, runner.Options{TriggerExpiry: 3 * time.Second})
	leader.waitLeader(t)
	leader.r.SetJobs([]*runner.Job{job("known", "")})

	// Another replica's API knows jobs the leader does not.
	api := runner.New(runner.Options{Logger: discardLogger()})
	api.SetJobs([]*runner.Job{job("gone", ""), job("added", ""), job("known", "")})
	ctl := &runner.Control{Runner: api, Store: leader.c}
	gone, err := ctl.Trigger(context.Background(), "gone", "corr-gone", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Trigger(context.Background(), "added", "corr-added", "test", ""); err != nil {
		t.Fatal(err)
	}
	// A request stored an hour ago, while no replica led.
	body, _ := json.Marshal(runner.TriggerRequest{CorrelationID: "corr-old", RequestedAt: time.Now().Add(-time.Hour), By: "test"})
	if _, err := leader.c.RequestTrigger(context.Background(), "known", "old-request", body,
		coord.Idempotency{Key: "old", Receipt: []byte(`{}`)}, coord.TriggerLimits{}); err != nil {
		t.Fatal(err)
	}
	leader.r.SetJobs([]*runner.Job{job("known", ""), job("added", "")}) // a reload adds "added"

	waitUntil(t, "the expired records", func() bool {
		return len(recordsOf(t, leader.cli, "gone")) == 1 && len(recordsOf(t, leader.cli, "known")) == 1
	})
	for _, c := range []struct{ job, corr, detail string }{
		{"gone", "corr-gone", "job not in the leader's job set"},
		{"known", "corr-old", "no replica led"},
	} {
		rec := recordsOf(t, leader.cli, c.job)[0]
		if rec.State != "skipped" || rec.Reason != runner.SkipExpired || rec.CorrelationID != c.corr || !rec.Manual ||
			!strings.Contains(rec.Error, c.detail) {
			t.Errorf("%s: record %+v, want skipped, expired, %s, saying %q", c.job, rec, c.corr, c.detail)
		}
	}
	if rec := recordsOf(t, leader.cli, "gone")[0]; rec.TriggerID != gone.TriggerID {
		t.Errorf("expired record names trigger %q, want %q", rec.TriggerID, gone.TriggerID)
	}
	waitUntil(t, "the added job's run", func() bool { return len(recordsOf(t, leader.cli, "added")) == 1 })
	if rec := recordsOf(t, leader.cli, "added")[0]; rec.State != observability.OutcomeSuccess || rec.CorrelationID != "corr-added" {
		t.Errorf("added: %+v", rec)
	}
	if n := testutil.ToFloat64(leader.metrics.JobSkipped.WithLabelValues("gone", runner.SkipExpired)); n != 1 {
		t.Errorf("pacer_job_skipped_total{reason=expired} = %v", n)
	}
}

// Requests beyond the bounds are refused, with the bound they hit, and
// nothing is stored for them.
func TestTriggerRequestsAreBounded(t *testing.T) {
	ep := startEtcd(t)
	// No coordinator runs: nobody decides, so requests stay pending.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	store := coord.New(coord.Options{Client: cli, Cluster: "t", Node: "api"})
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Logger: discardLogger(), Metrics: m})
	r.SetJobs([]*runner.Job{job("a", ""), job("b", ""), job("c", "")})
	ctl := &runner.Control{Runner: r, Store: store, TriggerLimits: coord.TriggerLimits{PerJob: 3, Total: 5}}
	for range 3 {
		if _, err := ctl.Trigger(context.Background(), "a", "", "test", ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ctl.Trigger(context.Background(), "a", "", "test", "")
	var full *coord.LimitError
	if !errors.As(err, &full) || !full.PerJob || full.Limit != 3 || !errors.Is(err, coord.ErrNotStored) {
		t.Fatalf("4th request for a: %v, want the per-job bound", err)
	}
	for range 2 {
		if _, err := ctl.Trigger(context.Background(), "b", "", "test", ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ctl.Trigger(context.Background(), "c", "", "test", "")
	if !errors.As(err, &full) || full.PerJob || full.Limit != 5 {
		t.Fatalf("6th request: %v, want the total bound", err)
	}
	if n := storedTriggers(t, cli, "a") + storedTriggers(t, cli, "b") + storedTriggers(t, cli, "c"); n != 5 {
		t.Fatalf("%d requests stored, want 5", n)
	}
	for result, want := range map[string]float64{
		observability.TriggerAccepted: 5, observability.TriggerRefusedJob: 1, observability.TriggerRefusedCluster: 1,
	} {
		if got := testutil.ToFloat64(m.TriggerRequests.WithLabelValues(result)); got != want {
			t.Errorf("pacer_trigger_requests_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	t.Logf("refused: %v", err)
}

// lossyLink is a gRPC client interceptor between a replica and etcd. While
// lose is set, etcd applies write transactions but their answers are lost
// (a stall after the request went out); while mute is also set, reads fail
// too (etcd does not answer at all).
type lossyLink struct {
	lose, mute atomic.Bool
	lost       atomic.Int32
}

func (l *lossyLink) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	write := isWrite(req)
	if l.mute.Load() && !write && (method == "/etcdserverpb.KV/Range" || method == "/etcdserverpb.KV/Txn") {
		return status.Error(codes.DeadlineExceeded, "injected: etcd did not answer")
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil && write && l.lose.Load() {
		l.lost.Add(1)
		return status.Error(codes.DeadlineExceeded, "injected: the answer was lost")
	}
	return err
}

// isWrite reports whether req is a transaction that may write.
func isWrite(req any) bool {
	txn, ok := req.(*etcdserverpb.TxnRequest)
	if !ok {
		return false
	}
	for _, op := range append(slices.Clone(txn.Success), txn.Failure...) {
		if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil {
			return true
		}
	}
	return false
}

// Issue 18: a trigger whose write etcd applied but whose answer was lost
// (the old code answered 503 "context deadline exceeded", and a client
// that retried got two runs) is settled by repeating the write under its
// idempotency key: the answer is "accepted", and it is stored once.
func TestTriggerWithALostAnswerIsStoredOnce(t *testing.T) {
	ep := startEtcd(t)
	link := &lossyLink{}
	// An API replica that does not lead: requests stay pending, to count.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(link.intercept)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Logger: discardLogger(), Metrics: m})
	r.SetJobs([]*runner.Job{job("j", "")})
	ctl := &runner.Control{Runner: r, Store: coord.New(coord.Options{Client: cli, Cluster: "t", Node: "api", RequestTimeout: time.Second}),
		Settle: 3 * time.Second}

	link.lose.Store(true)
	stopLosing := make(chan struct{})
	go func() { // the stall ends after the first lost answer
		defer close(stopLosing)
		for link.lost.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		link.lose.Store(false)
	}()
	tr, err := ctl.Trigger(context.Background(), "j", "corr-lost", "test", "")
	<-stopLosing
	if err != nil || tr.State != runner.StateAccepted || tr.Replayed {
		t.Fatalf("trigger with a lost answer: %+v, %v; want accepted (its own write, found)", tr, err)
	}
	if n := storedTriggers(t, admin, "j"); n != 1 {
		t.Fatalf("%d requests stored, want 1", n)
	}

	// etcd answers nothing after a write went out: the answer says the
	// outcome is unknown, not an error; repeating with the key settles it.
	lost := link.lost.Load()
	link.lose.Store(true)
	muted := make(chan struct{})
	go func() { // etcd stops answering after the write went out
		defer close(muted)
		for link.lost.Load() == lost {
			time.Sleep(time.Millisecond)
		}
		link.mute.Store(true)
	}()
	tr, err = ctl.Trigger(context.Background(), "j", "corr-unknown", "test", "client-key-1")
	if err != nil || tr.State != runner.StateUnconfirmed || tr.IdempotencyKey != "client-key-1" ||
		!strings.Contains(tr.Detail, "Idempotency-Key: client-key-1") || !strings.Contains(tr.Detail, tr.TriggerID) ||
		!strings.Contains(tr.Detail, "outcome unknown") {
		t.Fatalf("trigger during a stall: %+v, %v; want unconfirmed, saying how to find out", tr, err)
	}
	<-muted
	link.lose.Store(false)
	link.mute.Store(false)
	again, err := ctl.Trigger(context.Background(), "j", "corr-retry", "test", "client-key-1")
	if err != nil || again.State != runner.StateAccepted || !again.Replayed || again.TriggerID != tr.TriggerID || again.CorrelationID != "corr-unknown" {
		t.Fatalf("retry with the same key: %+v, %v; want the first request's trigger %s, replayed", again, err, tr.TriggerID)
	}
	if n := storedTriggers(t, admin, "j"); n != 2 {
		t.Fatalf("%d requests stored, want 2", n)
	}
	for result, want := range map[string]float64{
		observability.TriggerAccepted: 1, observability.TriggerUnconfirmed: 1, observability.TriggerReplayed: 1,
	} {
		if got := testutil.ToFloat64(m.TriggerRequests.WithLabelValues(result)); got != want {
			t.Errorf("pacer_trigger_requests_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// A manual trigger is an operator's explicit instruction: it runs while
// the job is paused, whose scheduled slots are skipped.
func TestManualTriggerRunsWhilePaused(t *testing.T) {
	ep := startEtcd(t)
	tasks := newGatedTasks()
	close(tasks.gate)
	a := startReplica(t, ep, "a", tasks, runner.Options{})
	a.waitLeader(t)
	a.r.SetJobs([]*runner.Job{job("p", "")})
	a.r.SetPaused(map[string]bool{"p": true})
	if _, err := a.control().Trigger(context.Background(), "p", "corr-paused", "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the run's record", func() bool { return len(recordsOf(t, a.cli, "p")) == 1 })
	if rec := recordsOf(t, a.cli, "p")[0]; rec.State != observability.OutcomeSuccess || rec.CorrelationID != "corr-paused" || !rec.Manual {
		t.Fatalf("record %+v, want the triggered run", rec)
	}
}
