package runner_test

import (
	"bufio"
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
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blockingTasks is a TaskRunner whose calls block until released or
// cancelled; with stubborn set, until released (a task slow to stop).
type blockingTasks struct {
	started  chan string // job IDs, as calls start
	release  chan struct{}
	stubborn atomic.Bool
}

func (b *blockingTasks) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	b.started <- c.Info.JobID
	done := ctx.Done()
	if b.stubborn.Load() {
		done = nil
	}
	select {
	case <-b.release:
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return &pluginhost.Result{Output: "ok"}, nil
	case <-done:
		return nil, ctx.Err()
	}
}

type bundle struct {
	tp      *trace.TracerProvider
	r       *runner.Runner
	coord   *coord.Coordinator
	tasks   *blockingTasks
	metrics *observability.Metrics
	spans   *tracetest.SpanRecorder
	admin   *clientv3.Client
	hook    *termHook
}

func setup(t *testing.T) *bundle {
	t.Helper()
	cli := etcdtest.Client(t, etcdtest.Start(t, etcdembed.Options{Name: "t"}), clientv3.Config{})
	// As runner/fxmodule does: a new term runs the runner's OnTerm.
	hook := &termHook{}
	c := coord.New(coord.Options{Client: cli, Cluster: "t", Node: "n1", LeaseTTL: 2 * time.Second,
		OnTransition: func(leading bool, t *coord.Term) {
			if leading {
				hook.call(t)
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
	tasks := &blockingTasks{started: make(chan string, 16), release: make(chan struct{})}
	r := runner.New(runner.Options{Node: "n1", Coord: c, Tasks: tasks, Metrics: m, Tracer: tp.Tracer("t"),
		Logger: discardLogger()})
	hook.set(r)
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Stop(stop)
	})
	return &bundle{tp: tp, r: r, coord: c, tasks: tasks, metrics: m, spans: rec, admin: cli, hook: hook}
}

// useRunner replaces the bundle's runner with one calling tasks (reading
// job sets from the bundle's coordinator), which hears of terms from now
// on and is stopped, waiting a second at most, when the test ends.
func (b *bundle) useRunner(t *testing.T, tasks runner.TaskRunner) {
	t.Helper()
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord})
	b.hook.set(b.r)
	r := b.r
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Stop(stop)
	})
}

// termHook calls the current runner's OnTerm for each new term, and says
// when that is done.
type termHook struct {
	mu     sync.Mutex
	r      *runner.Runner
	term   *coord.Term
	caught chan struct{} // closed when OnTerm(term) returned
}

// set makes r the runner that hears of terms; if a term started already,
// r catches up on it now.
func (h *termHook) set(r *runner.Runner) {
	h.mu.Lock()
	h.r = r
	t := h.term
	h.mu.Unlock()
	if t != nil {
		h.call(t)
	}
}

func (h *termHook) call(t *coord.Term) {
	h.mu.Lock()
	r, done := h.r, make(chan struct{})
	h.term, h.caught = t, done
	h.mu.Unlock()
	go func() {
		defer close(done)
		if r != nil {
			r.OnTerm(t)
		}
	}()
}

// waitLeader waits until the replica leads and its runner caught up.
func (b *bundle) waitLeader(t *testing.T) *coord.Term {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		term := b.coord.Term()
		b.hook.mu.Lock()
		caught := b.hook.caught
		same := b.hook.term == term
		b.hook.mu.Unlock()
		if term != nil && same {
			select {
			case <-caught:
				return term
			case <-time.After(time.Until(deadline)):
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("never became leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopAfterRuns waits until no run of term's shard is in progress on r
// (a catch-up's late runs, one after the other), or ctx ends, then stops r,
// which waits for its records. A stop alone would not wait for them: a
// stopping runner starts no queued late slot (attack 25, W13).
func stopAfterRuns(ctx context.Context, r *runner.Runner, term *coord.Term) {
	r.WaitIdle(ctx, term)
	r.Stop(ctx)
}

func job(id, overlap string) *runner.Job {
	return &runner.Job{ID: id, Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Timeout: time.Minute, Overlap: overlap}
}

func waitCount(t *testing.T, what string, get func() float64, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", what, get(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOverlapForbidSkipsAndAllowRuns(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	slot := slotAhead()
	forbid, allow := job("forbid", runner.OverlapForbid), job("allow", runner.OverlapAllow)

	b.r.Fire(runner.Slot{Job: forbid, Time: slot})
	<-b.tasks.started
	b.r.Fire(runner.Slot{Job: forbid, Time: slot.Add(time.Second)})
	// Counted once decided: the skip record and the slot's mark written.
	waitCount(t, "overlap skips", func() float64 {
		return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("forbid", "overlap"))
	}, 1)
	if jc, err := b.coord.JobClaims(context.Background(), "forbid"); err != nil || !slices.ContainsFunc(jc.Slots, slot.Add(time.Second).Equal) {
		t.Fatalf("claims of forbid %+v (%v): the skipped slot is not marked decided", jc, err)
	}

	b.r.Fire(runner.Slot{Job: allow, Time: slot})
	b.r.Fire(runner.Slot{Job: allow, Time: slot.Add(time.Second)})
	<-b.tasks.started
	<-b.tasks.started
	close(b.tasks.release)
	waitCount(t, "allow successes", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("allow", "p", observability.OutcomeSuccess))
	}, 2)
	waitCount(t, "forbid successes", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("forbid", "p", observability.OutcomeSuccess))
	}, 1)
}

// jitteredJob is an overlap-forbid job with up to an hour of jitter whose
// slot at slot waits out at least ten minutes of it.
func jitteredJob(slot time.Time) *runner.Job {
	for i := 0; ; i++ {
		if id := fmt.Sprintf("jittered-%d", i); schedule.Jitter(id, slot, time.Hour) >= 10*time.Minute {
			j := job(id, runner.OverlapForbid)
			j.Jitter = time.Hour
			return j
		}
	}
}

// Attack 17, K7: a slot skipped under overlap: forbid says what the
// previous slot's run is doing when no attempt of it runs: here, waiting
// out its jitter. Before, every such skip said "previous run still
// running", which sends on-call to the task's duration when the run was
// only waiting for its jitter or for etcd to take its record.
func TestOverlapSkipSaysWhatThePreviousSlotDoes(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	slot := slotAhead()
	j := jitteredJob(slot)
	id := j.ID
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	b.r.Fire(runner.Slot{Job: j, Time: slot.Add(time.Second)})
	waitCount(t, "overlap skips", func() float64 {
		return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(id, "overlap"))
	}, 1)
	recs := records(t, b, id)
	if len(recs) != 1 || recs[0].Reason != runner.SkipOverlap || recs[0].Error != "previous slot not finished: waiting out its jitter" {
		t.Fatalf("records %+v; want one overlap skip saying the previous slot waits out its jitter", recs)
	}
}

func TestSameSlotRunsOnce(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	close(b.tasks.release)
	slot := slotAhead()
	j := job("j", runner.OverlapAllow)
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	waitCount(t, "claimed elsewhere", func() float64 {
		return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("j", "claimed_elsewhere"))
	}, 1)
	waitCount(t, "successes", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("j", "p", observability.OutcomeSuccess))
	}, 1)
}

func TestLosingLeadershipCancelsRuns(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	b.r.Fire(runner.Slot{Job: job("j", ""), Time: slotAhead()})
	<-b.tasks.started
	// The server deletes our election key, as when our lease expires.
	expireLeaderLease(t, b.admin)
	<-term.Context().Done()
	waitCount(t, "canceled runs", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("j", "p", observability.OutcomeCanceled))
	}, 1)
	if errors.Is(context.Cause(term.Context()), context.Canceled) {
		t.Fatalf("term ended without a reason: %v", context.Cause(term.Context()))
	}
}

func TestNoFireWithoutLeadership(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	tasks := &blockingTasks{started: make(chan string, 1)}
	r := runner.New(runner.Options{Coord: notLeader{}, Tasks: tasks, Metrics: m, Logger: discardLogger(),
		Tracer: trace.NewTracerProvider().Tracer("t")})
	r.Fire(runner.Slot{Job: job("j", ""), Time: time.Now()})
	r.Stop(context.Background())
	if len(tasks.started) != 0 {
		t.Fatal("a follower fired a slot")
	}
}

// pacer_job_paused has one series per configured job, so alerts can leave
// paused jobs alone; a removed job's gauges go away, so PacerJobStale does
// not fire forever on a job that no longer exists.
func TestPausedGaugeAndRemovedJobs(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	// No coordinator: every job's series are this runner's (metrics.go).
	r := runner.New(runner.Options{Tasks: &blockingTasks{}, Metrics: m, Logger: discardLogger(),
		Tracer: trace.NewTracerProvider().Tracer("t")})
	r.SetJobs([]*runner.Job{job("a", ""), job("b", "")})
	r.SetPaused(map[string]bool{"a": true, "gone": true})
	m.LastSuccess.WithLabelValues("b").Set(1700000000)
	if a, b := testutil.ToFloat64(m.JobPaused.WithLabelValues("a")), testutil.ToFloat64(m.JobPaused.WithLabelValues("b")); a != 1 || b != 0 {
		t.Fatalf("pacer_job_paused a=%v b=%v, want 1 0", a, b)
	}
	r.SetJobs([]*runner.Job{job("a", "")})
	r.SetPaused(map[string]bool{})
	if n := testutil.CollectAndCount(m.JobPaused); n != 1 {
		t.Fatalf("pacer_job_paused has %d series after b was removed, want 1 (a)", n)
	}
	if n := testutil.CollectAndCount(m.LastSuccess); n != 0 {
		t.Fatalf("pacer_job_last_success_timestamp_seconds has %d series after b was removed, want 0", n)
	}
	if a := testutil.ToFloat64(m.JobPaused.WithLabelValues("a")); a != 0 {
		t.Fatalf("pacer_job_paused a=%v after resume, want 0", a)
	}
	r.Stop(context.Background())
}

// WaitIdle waits for its own shard's runs only: with runs of two shards
// going, one shard's WaitIdle returns when that shard's run ends while the
// other's goes on, and a WaitIdle whose ctx ends first warns with the
// shard's runs still going.
func TestWaitIdleWaitsForItsOwnShardOnly(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t, etcdembed.Options{Name: "t"}), clientv3.Config{})
	c := coord.New(coord.Options{Client: cli, Cluster: "t", Node: "n1", LeaseTTL: 2 * time.Second, Shards: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var terms [2]*coord.Term
	for deadline := time.Now().Add(10 * time.Second); terms[0] == nil || terms[1] == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not leading both shards after 10 s")
		}
		terms[0], terms[1] = c.TermOf(0), c.TermOf(1)
	}
	var ids [2]string // a job of each shard
	for i := 0; ids[0] == "" || ids[1] == ""; i++ {
		if id := fmt.Sprintf("job-%d", i); ids[shard.Of(id, 2)] == "" {
			ids[shard.Of(id, 2)] = id
		}
	}
	tasks := &gateTasks{started: make(chan string, 2), gates: map[string]chan struct{}{ids[0]: make(chan struct{}), ids[1]: make(chan struct{})}}
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	r := runner.New(runner.Options{Node: "n1", Coord: c, Tasks: tasks, Metrics: m, Shards: 2,
		Tracer: trace.NewTracerProvider().Tracer("t"), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	t.Cleanup(func() { r.Stop(context.Background()) })
	var released [2]bool
	release := func(i int) { released[i] = true; close(tasks.gates[ids[i]]) }
	t.Cleanup(func() { // a failed test's runs end before Stop waits for them
		for i := range released {
			if !released[i] {
				release(i)
			}
		}
	})
	var jobs []*runner.Job
	for _, id := range ids { // never due while the test runs: only the slots fired below run
		jobs = append(jobs, &runner.Job{ID: id, Plugin: "p", Task: "t", Schedule: schedule.At(time.Now().Add(48 * time.Hour)), Timeout: time.Minute})
	}
	r.SetJobs(jobs)
	for _, term := range terms {
		r.OnTerm(term)
	}
	slot := slotAhead()
	for _, j := range jobs {
		r.Fire(runner.Slot{Job: j, Time: slot})
		<-tasks.started
	}
	ended, end := context.WithCancel(context.Background())
	end()
	warnings := func() (got [][2]float64) { // shard and runs of each warning so far
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "handing a shard over with runs still going" {
				shard, _ := l["shard"].(float64)
				runs, _ := l["runs"].(float64)
				got = append(got, [2]float64{shard, runs})
			}
		}
		return got
	}
	// Each shard's run is going: a WaitIdle whose ctx ended says so.
	r.WaitIdle(ended, terms[0])
	r.WaitIdle(ended, terms[1])
	if got, want := warnings(), [][2]float64{{0, 1}, {1, 1}}; !slices.Equal(got, want) {
		t.Fatalf("warnings (shard, runs) %v, want %v", got, want)
	}

	var idle [2]chan struct{}
	for i, term := range terms {
		idle[i] = make(chan struct{})
		go func() { defer close(idle[i]); r.WaitIdle(context.Background(), term) }()
	}
	release(1)
	select {
	case <-idle[1]:
	case <-time.After(10 * time.Second):
		t.Fatal("shard 1's WaitIdle still waiting 10 s after its run ended, shard 0's run going")
	}
	select {
	case <-idle[0]:
		t.Fatal("shard 0's WaitIdle returned while its run was going")
	default:
	}
	r.WaitIdle(ended, terms[1]) // idle: no warning
	r.WaitIdle(ended, terms[0])
	if got, want := warnings(), [][2]float64{{0, 1}, {1, 1}, {0, 1}}; !slices.Equal(got, want) {
		t.Fatalf("warnings (shard, runs) %v, want %v: shard 1 is idle, shard 0's run goes on", got, want)
	}

	release(0)
	select {
	case <-idle[0]:
	case <-time.After(10 * time.Second):
		t.Fatal("shard 0's WaitIdle still waiting 10 s after its run ended")
	}
}

// gateTasks is a TaskRunner whose calls of a job block until the job's
// gate is closed, or they are cancelled.
type gateTasks struct {
	started chan string
	gates   map[string]chan struct{} // by job ID
}

func (g *gateTasks) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	g.started <- c.Info.JobID
	select {
	case <-g.gates[c.Info.JobID]:
		return &pluginhost.Result{Output: "ok"}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type notLeader struct{ runner.Coordinator }

func (notLeader) TermOf(int) *coord.Term { return nil }
func (notLeader) Terms() []*coord.Term   { return nil }

// slotAhead is a slot an hour from now: the runner leaves slots due before
// its term started to the misfire catch-up.
// expireLeaderLease has etcd revoke the lease of the shard's election key,
// as when it expires (the leader frozen or cut off through its TTL): its
// term ends, and the keys it held go.
func expireLeaderLease(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/pacer/t/leader/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("no election key to expire: %v", err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
}

func slotAhead() time.Time { return time.Now().Add(time.Hour).Truncate(time.Second).UTC() }

// WaitIdle (a hand-over's drain) waits while a run of the term's shard is
// going, and returns once the last one ended: the runs it counts are let
// go as they end, however many there were.
func TestWaitIdleWaitsForTheShardsRuns(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	slot := slotAhead()
	j := job("idle", runner.OverlapAllow)
	for i := range 2 {
		b.r.Fire(runner.Slot{Job: j, Time: slot.Add(time.Duration(i) * time.Second)})
		<-b.tasks.started
	}
	idle := make(chan struct{})
	go func() { defer close(idle); b.r.WaitIdle(context.Background(), term) }()
	select {
	case <-idle:
		t.Fatal("WaitIdle returned while two runs of the shard were going")
	case <-time.After(100 * time.Millisecond): // not synchronisation: it must not return in this time
	}
	close(b.tasks.release)
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		t.Fatal("WaitIdle still waiting 10 s after the shard's runs ended")
	}
}

// Attack 20, Q3 and Q4: a slot waiting out its jitter when its job is
// paused, or changed by a reload, does not start: it is recorded skipped
// (`paused`, `reloaded`), as a pending retry is. Before, it ran after the
// pause (a jitter of hours ran the job hours after it was paused), or with
// the replaced definition.
func TestPauseOrReloadEndsASlotWaitingOutItsJitter(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		act          func(b *bundle, j *runner.Job)
	}{
		{"pause", runner.SkipPaused, func(b *bundle, j *runner.Job) { b.r.SetPaused(map[string]bool{j.ID: true}) }},
		{"reload", runner.SkipReloaded, func(b *bundle, j *runner.Job) {
			changed := *j
			changed.Timeout = 2 * time.Minute
			b.r.SetJobs([]*runner.Job{&changed})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			b.waitLeader(t)
			slot := slotAhead()
			j := jitteredJob(slot)
			id := j.ID
			b.r.SetJobs([]*runner.Job{j})
			b.r.Fire(runner.Slot{Job: j, Time: slot})
			tc.act(b, j)
			waitCount(t, tc.reason+" skips", func() float64 {
				return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(id, tc.reason))
			}, 1)
			recs := records(t, b, id)
			if len(recs) != 1 || recs[0].Reason != tc.reason || !strings.Contains(recs[0].Error, "while this slot waited out its jitter") ||
				!recs[0].ScheduledTime.Equal(slot) {
				t.Fatalf("records %+v; want one %s skip of the slot saying it waited out its jitter", recs, tc.reason)
			}
			if jc, err := b.coord.JobClaims(context.Background(), id); err != nil || !slices.ContainsFunc(jc.Slots, slot.Equal) && !jc.Floor.Equal(slot) {
				t.Fatalf("claims %+v (%v): the skipped slot is not decided", jc, err)
			}
			select {
			case got := <-b.tasks.started:
				t.Fatalf("the task ran (%s)", got)
			default:
			}
		})
	}
}
