package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/google/uuid"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	nooptrace "go.opentelemetry.io/otel/trace/noop"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

// slowBefore is a TaskRunner whose runs of slots before cutoff take delay;
// it counts the runs of each slot.
type slowBefore struct {
	cutoff time.Time
	delay  time.Duration
	mu     sync.Mutex
	runs   map[time.Time]int // by slot, in UTC
}

func (s *slowBefore) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	slot := c.Info.ScheduledTime.UTC()
	s.mu.Lock()
	s.runs[slot]++
	s.mu.Unlock()
	if slot.Before(s.cutoff) {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &pluginhost.Result{Output: "ok"}, nil
}

func (s *slowBefore) count() (slots, runs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.runs {
		slots++
		runs += n
	}
	return slots, runs
}

// Misfire policy "all": every missed slot runs, one after the other, even
// while the new term's scheduler claims and finishes many later slots of
// the same job meanwhile, more than the job's claim key keeps: the missed
// slots were claimed together before any of those.
func TestCatchUpAllRunsEveryMissedSlotWhileLaterSlotsRun(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	now := time.Now().Truncate(time.Second).UTC()
	tasks := &slowBefore{cutoff: now, delay: 60 * time.Millisecond, runs: map[time.Time]int{}}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger()})
	defer r.Stop(context.Background())
	j := &runner.Job{ID: "all", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
		Overlap: runner.OverlapAllow, Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	r.SetJobs([]*runner.Job{j})
	// The previous leader's last claim was 40 s ago.
	if err := b.coord.Claim(context.Background(), term, "all", now.Add(-40*time.Second), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r.OnTerm(term) // claims the missed slots, starts running them (60 ms each)
	// The catch-up looks up to the instant the term started: under load
	// that may be a second or more after now, so the missed slots end at
	// the latest it claimed (its claims are written when OnTerm returns).
	claims, err := b.coord.Claims(context.Background(), term)
	if err != nil {
		t.Fatal(err)
	}
	last := claims["all"].Last(time.Time{})
	if last.Before(now) || last.After(time.Now()) {
		t.Fatalf("the catch-up claimed up to %s, want from %s up to now", last.Format(time.TimeOnly), now.Format(time.TimeOnly))
	}
	missed := int(last.Sub(now)/time.Second) + 40
	// Meanwhile the scheduler fires 40 later slots, one after the other
	// (as it does, a second apart), each run at once.
	for i := range 40 {
		s := now.Add(time.Hour + time.Duration(i)*time.Second)
		r.Fire(runner.Slot{Job: j, Time: s})
		waitCount(t, "a later slot's run", func() float64 {
			tasks.mu.Lock()
			defer tasks.mu.Unlock()
			return float64(tasks.runs[s])
		}, 1)
	}
	// The missed slots (now-39s … last) and 40 later ones.
	want := missed + 40
	deadline := time.Now().Add(20 * time.Second)
	for _, runs := tasks.count(); runs < want && time.Now().Before(deadline); _, runs = tasks.count() {
		time.Sleep(20 * time.Millisecond)
	}
	slots, runs := tasks.count()
	if slots != runs {
		t.Fatalf("%d runs of %d slots: a slot ran twice", runs, slots)
	}
	for s := now.Add(-39 * time.Second); !s.After(last); s = s.Add(time.Second) {
		tasks.mu.Lock()
		n := tasks.runs[s]
		tasks.mu.Unlock()
		if n != 1 {
			t.Errorf("missed slot %s ran %d times, want 1", s.Format(time.TimeOnly), n)
		}
	}
	if got := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("all", runner.SkipTooOld)); got != 0 {
		t.Fatalf("%v slots refused as too old", got)
	}
	if runs != want {
		t.Fatalf("%d runs, want %d (%d missed, 40 later)", runs, want, missed)
	}
}

// Slots fired under a shard's new term before its catch-up is done do not
// run: the scheduler gets the shard's jobs only once it is done, from the
// instant it looked up to, and the slots due before that are the
// catch-up's, so none is run a second time and no claim of the scheduler
// comes before the catch-up's.
func TestSlotsFiredBeforeTheCatchUpDoNotRun(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	tasks := &slowBefore{runs: map[time.Time]int{}}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger()})
	defer r.Stop(context.Background())
	j := &runner.Job{ID: "h", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
		Overlap: runner.OverlapAllow, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	r.SetJobs([]*runner.Job{j})
	now := time.Now().Truncate(time.Second).UTC()
	if err := b.coord.Claim(context.Background(), term, "h", now.Add(-5*time.Second), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	early, late := now.Add(-2*time.Second), now.Add(time.Hour)
	r.Fire(runner.Slot{Job: j, Time: early}) // due before the term started: misfire policy skip
	r.Fire(runner.Slot{Job: j, Time: late})
	time.Sleep(100 * time.Millisecond) // not synchronisation: nothing may run in this time
	if _, runs := tasks.count(); runs != 0 {
		t.Fatalf("%d runs before the catch-up", runs)
	}
	r.OnTerm(term)
	r.Fire(runner.Slot{Job: j, Time: late}) // as the scheduler does once the catch-up is done
	waitCount(t, "runs", func() float64 { _, runs := tasks.count(); return float64(runs) }, 1)
	tasks.mu.Lock()
	ranLate, ranEarly := tasks.runs[late], tasks.runs[early]
	tasks.mu.Unlock()
	if ranLate != 1 || ranEarly != 0 {
		t.Fatalf("late slot ran %d times, early %d; want 1 and 0 (skipped by the misfire policy)", ranLate, ranEarly)
	}
	waitCount(t, "a skip record for the early slot", func() float64 {
		for _, rec := range records(t, b, "h") {
			until := rec.ScheduledUntil
			if until.IsZero() {
				until = rec.ScheduledTime
			}
			if rec.State == "skipped" && rec.Reason == runner.SkipMisfire && !early.Before(rec.ScheduledTime) && !early.After(until) {
				return 1
			}
		}
		return 0
	}, 1)
}

// The leader removes the keys of a job that is no longer configured, once
// it was missing at two sweeps in a row; configured jobs keep theirs. Its
// trigger requests and idempotency receipts go too, but a request waiting
// for a decision is decided first (here: expired, as the job is not in the
// leader's job set), not deleted unseen.
func TestSweepRemovesKeysOfRemovedJobs(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	slot := slotAhead()
	for _, job := range []string{"kept", "gone"} {
		if err := b.coord.Claim(ctx, term, job, slot, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := b.coord.FinishSlot(ctx, term, job, slot, "run-1", []byte(`{}`), time.Time{}, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := json.Marshal(runner.TriggerRequest{CorrelationID: "c-1", RequestedAt: time.Now().UTC(), By: "test"})
	if _, err := b.coord.RequestTrigger(ctx, "gone", "tr-1", body, coord.Idempotency{Key: "k-1", Receipt: []byte("{}")}, coord.TriggerLimits{}); err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: &slowBefore{runs: map[time.Time]int{}},
		Metrics: b.metrics, Tracer: b.tp.Tracer("t"), Logger: discardLogger(), SweepInterval: 200 * time.Millisecond,
		TriggerExpiry: 2 * time.Second})
	defer r.Stop(context.Background())
	r.SetJobs([]*runner.Job{job("kept", "")})
	stored, err := b.coord.Triggers(ctx, "gone")
	if err != nil || len(stored) != 1 {
		t.Fatalf("trigger requests %v, %v", stored, err)
	}
	r.HandleTriggers(stored) // as the watch below does after every change
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go b.coord.WatchTriggers(wctx, r.HandleTriggers)
	r.OnTerm(term)
	keys := func() string {
		resp, err := b.admin.Get(ctx, "/pacer/t/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, kv := range resp.Kvs {
			if k := string(kv.Key); !strings.Contains(k, "/leader/") && !strings.Contains(k, "/counts/") {
				out += k + " "
			}
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(keys(), "gone") {
		if time.Now().After(deadline) {
			t.Fatalf("keys of the removed job still there: %s", keys())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := keys(); got != "/pacer/t/claims/kept /pacer/t/runs/kept/run-1 " {
		t.Fatalf("keys after the sweep: %q", got)
	}
	if n := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("gone", runner.SkipExpired)); n != 1 {
		t.Fatalf("the removed job's trigger request was deleted before it was decided (%v expired skips, want 1)", n)
	}
}

// While the live replicas' job sets differ, a job missing from the
// leader's may be another replica's, which may lead next: the sweep keeps
// its keys, however many sweeps pass, and removes them two sweeps after the
// sets agree.
func TestSweepKeepsKeysWhileJobSetsDiffer(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	slot := slotAhead()
	for _, job := range []string{"kept", "elsewhere"} {
		if err := b.coord.Claim(ctx, term, job, slot, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := b.coord.FinishSlot(ctx, term, job, slot, "run-1", []byte(`{}`), time.Time{}, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	var agree atomic.Bool
	var asked atomic.Int32
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: &slowBefore{runs: map[time.Time]int{}},
		Metrics: b.metrics, Tracer: b.tp.Tracer("t"), Logger: discardLogger(), SweepInterval: 100 * time.Millisecond,
		JobSetsAgree: func() bool { asked.Add(1); return agree.Load() }})
	defer r.Stop(context.Background())
	r.SetJobs([]*runner.Job{job("kept", "")})
	r.OnTerm(term)
	has := func() bool {
		resp, err := b.admin.Get(ctx, "/pacer/t/claims/elsewhere", clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count == 1
	}
	for deadline := time.Now().Add(10 * time.Second); asked.Load() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sweeps in 10 s, want 4", asked.Load())
		}
	}
	if !has() {
		t.Fatal("the keys of a job missing from the leader's job set were removed while the replicas' job sets differed")
	}
	agree.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for has() {
		if time.Now().After(deadline) {
			t.Fatal("keys of the removed job still there after the job sets agreed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkCatchUpAfterFailover: a new leader catching up on 10,000 jobs
// @every 1s whose previous leader died 5 s before (misfire policy "once":
// each job's latest missed slot runs, 4 get skip records) next to a normal
// burst of the same 10,000 jobs due at one instant, in one run, on one
// embedded etcd with a task that returns at once. Both are timed from the
// terms' start (catch-up) or the instant (burst) until every run's final
// record is written. It runs with the default number of shards (one
// replica leading them all, each term caught up at once, as OnTransition
// does) and with one shard. Besides wall time it reports the CPU time of
// each burst (burst-cpu-s, warm-burst-cpu-s: runner and embedded etcd,
// which a shared machine disturbs less) and the write transactions of the
// first burst and of the catch-up (burst-txns, catchup-txns: etcd's
// revision moves one per transaction), so that batches split by shard, or
// smaller, would show, and how long after its start
// the first burst and the catch-up each ran their first task
// (burst-first-run-s, catchup-first-run-s: what a catch-up does before its
// first run, reading the claims, deciding, the term's series, a burst
// does not), and the bytes the first burst and the catch-up allocated
// (burst-alloc-MiB, catchup-alloc-MiB: they drive the collector's share
// of the CPU time, and the machine's load does not change them). With
// PACER_BENCH_PROFILES set to a directory, each phase writes a CPU profile
// and allocation profiles there (phaseProfile).
//
//	go test -run '^$' -bench CatchUpAfterFailover -benchtime 1x -count 3 ./runner/
func BenchmarkCatchUpAfterFailover(b *testing.B) {
	for _, shards := range []int{shard.Default, 1} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) { benchCatchUp(b, shards) })
	}
}

func benchCatchUp(b *testing.B, shards int) {
	const n = 10000
	bb := setupBench(b)
	bb.shards = shards
	jobs := make([]*runner.Job, n)
	for i := range jobs {
		jobs[i] = &runner.Job{ID: fmt.Sprintf("job-%05d", i), Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second),
			Timeout: time.Minute, Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Minute}}
	}
	newRunner := func(tasks *countTasks) *runner.Runner {
		r := runner.New(runner.Options{Node: "n1", Coord: bb.coord, Tasks: tasks, Metrics: bb.metrics, Shards: shards,
			Logger: discardLogger(), Tracer: nooptrace.NewTracerProvider().Tracer("")})
		r.SetJobs(jobs)
		return r
	}
	// onTerms starts every term at once, as OnTransition does.
	onTerms := func(r *runner.Runner, terms []*coord.Term) {
		var wg sync.WaitGroup
		for _, t := range terms {
			wg.Go(func() { r.OnTerm(t) })
		}
		wg.Wait()
	}
	var burst, warmBurst, catchUp, burstCPU, warmBurstCPU, catchUpCPU, burstFirst, catchUpFirst time.Duration
	var burstTxns, catchUpTxns int64
	var burstAlloc, catchUpAlloc uint64
	for i := range b.N {
		bb.cluster = fmt.Sprintf("bench-%d", i) // nothing left of the last round
		// Burst: the 10,000 jobs due at once, in fresh terms.
		terms := bb.newTerms(b)
		tasks := &countTasks{}
		r := newRunner(tasks)
		onTerms(r, terms)
		// The first burst on an empty cluster (timed against the
		// catch-up, as before shards), then a second one of the same
		// runner: jobs that ran before, with claim keys in etcd and a
		// warm runner and coordinator.
		for k, slot := range []time.Time{time.Now().Add(time.Hour).Truncate(time.Second), time.Now().Add(2 * time.Hour).Truncate(time.Second)} {
			done := r.Stop
			if k == 0 { // the runs are tracked from Fire until their records are written
				done = func(ctx context.Context) {
					for _, t := range terms {
						r.WaitIdle(ctx, t)
					}
				}
			}
			rev := bb.revision(b)
			tasks.resetFirst()
			stopProfile := phaseProfile(b, fmt.Sprintf("shards%d-burst%d-%d", shards, k, i))
			start, cpu, alloc := time.Now(), cpuTime(b), allocated()
			for _, j := range jobs {
				r.Fire(runner.Slot{Job: j, Time: slot})
			}
			done(context.Background()) // returns when every run's record is written
			wall, used := time.Since(start), cpuTime(b)-cpu
			stopProfile()
			if k == 1 {
				warmBurst += wall
				warmBurstCPU += used
				continue
			}
			burst += wall
			burstCPU += used
			burstAlloc += allocated() - alloc
			burstFirst += tasks.firstSince(start)
			burstTxns += bb.revision(b) - rev // one revision per write transaction
		}
		if tasks.n.Load() != 2*n {
			for _, t := range terms {
				if t.Context().Err() != nil {
					b.Errorf("bursts: the term of shard %d ended: %v", t.Shard, context.Cause(t.Context()))
				}
			}
			b.Fatalf("bursts: %d runs, want %d", tasks.n.Load(), 2*n)
		}

		// Catch-up: every job's last claim 5 s before the terms.
		now := time.Now().Truncate(time.Second)
		var wg sync.WaitGroup
		for _, j := range jobs {
			wg.Go(func() { // the previous leader's last slot, finished
				t := bb.coord.TermOf(shard.Of(j.ID, shards))
				last := now.Add(-5 * time.Second)
				if err := bb.coord.Claim(context.Background(), t, j.ID, last, []byte(`{}`)); err != nil {
					b.Error(err)
				}
				if err := bb.coord.CloseSlot(context.Background(), t, j.ID, last); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		bb.die(b) // no hand-over: the slots since were missed
		terms = bb.newTerms(b)
		tasks = &countTasks{}
		r = newRunner(tasks)
		stopProfile := phaseProfile(b, fmt.Sprintf("shards%d-catchup-%d", shards, i))
		rev := bb.revision(b)
		start, cpu, alloc := time.Now(), cpuTime(b), allocated()
		onTerms(r, terms)
		r.Stop(context.Background())
		catchUp += time.Since(start)
		catchUpCPU += cpuTime(b) - cpu
		catchUpAlloc += allocated() - alloc
		catchUpFirst += tasks.firstSince(start)
		catchUpTxns += bb.revision(b) - rev
		stopProfile()
		for _, t := range terms {
			if t.Context().Err() != nil { // a starved machine can end the session
				b.Fatalf("catch-up: the term of shard %d ended: %v", t.Shard, context.Cause(t.Context()))
			}
		}
		if tasks.n.Load() != n {
			b.Fatalf("catch-up: %d runs, want %d", tasks.n.Load(), n)
		}
	}
	b.ReportMetric(burst.Seconds()/float64(b.N), "burst-s")
	b.ReportMetric(warmBurst.Seconds()/float64(b.N), "warm-burst-s")
	b.ReportMetric(catchUp.Seconds()/float64(b.N), "catchup-s")
	b.ReportMetric(catchUp.Seconds()/burst.Seconds(), "catchup/burst")
	b.ReportMetric(catchUp.Seconds()/warmBurst.Seconds(), "catchup/warm-burst")
	b.ReportMetric(catchUpCPU.Seconds()/burstCPU.Seconds(), "cpu-catchup/burst")
	b.ReportMetric(burstCPU.Seconds()/float64(b.N), "burst-cpu-s")
	b.ReportMetric(warmBurstCPU.Seconds()/float64(b.N), "warm-burst-cpu-s")
	b.ReportMetric(float64(burstTxns)/float64(b.N), "burst-txns")
	b.ReportMetric(float64(catchUpTxns)/float64(b.N), "catchup-txns")
	b.ReportMetric(float64(burstAlloc)/(1<<20)/float64(b.N), "burst-alloc-MiB")
	b.ReportMetric(float64(catchUpAlloc)/(1<<20)/float64(b.N), "catchup-alloc-MiB")
	b.ReportMetric(burstFirst.Seconds()/float64(b.N), "burst-first-run-s")
	b.ReportMetric(catchUpFirst.Seconds()/float64(b.N), "catchup-first-run-s")
}

// phaseProfile writes a CPU profile of one phase of the benchmark (a
// burst or a catch-up) to $PACER_BENCH_PROFILES/name-*.prof when that
// variable names a directory, so that the phases can be compared (go test's
// -cpuprofile mixes them); it returns the function that ends it.
func phaseProfile(b *testing.B, name string) func() {
	dir := os.Getenv("PACER_BENCH_PROFILES")
	if dir == "" {
		return func() {}
	}
	f, err := os.CreateTemp(dir, name+"-*.prof")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	allocs := func(suffix string) {
		runtime.GC() // the allocation profile is as of the last GC
		a, err := os.Create(strings.TrimSuffix(f.Name(), ".prof") + suffix)
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		if err := pprof.Lookup("allocs").WriteTo(a, 0); err != nil {
			b.Fatal(err)
		}
	}
	allocs(".allocs-before")
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		allocs(".allocs-after")
	}
}

// revision is the etcd store's current revision: each write transaction
// adds one.
func (bb *benchBundle) revision(b *testing.B) int64 {
	b.Helper()
	resp, err := bb.cli.Get(context.Background(), "revision")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// cpuTime is the CPU time the process (runner and embedded etcd) has used:
// on a shared machine it says more than wall time about the work done.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// allocated is how many bytes the process (runner and embedded etcd) has
// allocated on the heap: what a phase allocates drives its garbage
// collection, and a loaded machine does not change it.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// countTasks is a TaskRunner that returns at once and counts its calls.
// It keeps the time of its first call since the last resetFirst.
type countTasks struct {
	n     atomic.Int64
	first atomic.Int64 // unix nanoseconds; 0: no call yet
}

func (c *countTasks) Run(context.Context, pluginhost.Call) (*pluginhost.Result, error) {
	c.n.Add(1)
	c.first.CompareAndSwap(0, time.Now().UnixNano())
	return &pluginhost.Result{}, nil
}

// firstSince is how long after start the first call came (0: none).
func (c *countTasks) firstSince(start time.Time) time.Duration {
	if f := c.first.Load(); f != 0 {
		return time.Unix(0, f).Sub(start)
	}
	return 0
}

func (c *countTasks) resetFirst() { c.first.Store(0) }

type benchBundle struct {
	cli     *clientv3.Client
	coord   *coord.Coordinator
	cluster string
	shards  int // below 1: 1
	stop    func()
	metrics *observability.Metrics
}

func setupBench(b *testing.B) *benchBundle {
	b.Helper()
	l1, l2 := benchAddr(b), benchAddr(b)
	e, err := etcdembed.Start(context.Background(), etcdembed.Options{Name: "b", Dir: b.TempDir(), ClientListen: l1, PeerListen: l2})
	if err != nil {
		b.Fatal(err)
	}
	// The testing package keeps a finished benchmark's cleanup functions
	// until the next round's (with -count N, in one process): each one
	// drops what it closed, so that a round does not start with the last
	// one's etcd, client and 10,000 jobs' metric series (about 200 MiB)
	// still live on the heap, which made both phases of every later round
	// dearer (docs/guarantees.md, "Where the drift came from").
	b.Cleanup(func() { e.Close(); e = nil })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close(); cli = nil })
	m, err := observability.NewMetrics("bench")
	if err != nil {
		b.Fatal(err)
	}
	bb := &benchBundle{cli: cli, cluster: "bench", metrics: m}
	b.Cleanup(func() {
		if bb.stop != nil {
			bb.stop()
		}
		*bb = benchBundle{}
	})
	return bb
}

// newTerms stops the current coordinator (if any; it hands its shards
// over) and returns the first term of each shard of a new one.
func (bb *benchBundle) newTerms(b *testing.B) []*coord.Term {
	b.Helper()
	if bb.stop != nil {
		bb.stop()
	}
	bb.coord = coord.New(coord.Options{Client: bb.cli, Cluster: bb.cluster, Node: "n1", LeaseTTL: 10 * time.Second,
		RequestTimeout: 10 * time.Second, Shards: bb.shards})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = bb.coord.Run(ctx) }()
	bb.stop = func() { cancel(); <-done }
	want := max(bb.shards, 1)
	deadline := time.Now().Add(30 * time.Second)
	for len(bb.coord.Terms()) < want {
		if time.Now().After(deadline) {
			b.Fatalf("leading %d of %d shards", len(bb.coord.Terms()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return bb.coord.Terms()
}

// die stops the current coordinator as a leader that died would: it leaves
// no hand-over mark, so the next terms find the slots since missed.
func (bb *benchBundle) die(b *testing.B) {
	b.Helper()
	bb.stop()
	bb.stop = nil
	if _, err := bb.cli.Delete(context.Background(), "/pacer/"+bb.cluster+"/handovers/", clientv3.WithPrefix()); err != nil {
		b.Fatal(err)
	}
}

func benchAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A run the catch-up started is one of the job's runs: the overlap policy
// sees it, and a stop whose drain times out cancels it (it does not wait
// for the term to end, which comes after the runner stops).
func TestCatchUpRunsAreRunsOfTheJob(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	tasks := &blockingTasks{started: make(chan string, 16), release: make(chan struct{})}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger()})
	j := &runner.Job{ID: "c", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Hour,
		Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Hour}}
	r.SetJobs([]*runner.Job{j})
	now := time.Now().Truncate(time.Second).UTC()
	if err := b.coord.Claim(context.Background(), term, "c", now.Add(-3*time.Second), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r.OnTerm(term)
	<-tasks.started // the latest missed slot runs, and blocks
	if _, running := r.JobState("c"); running != 1 {
		t.Fatalf("%d runs of c counted, want the catch-up's", running)
	}
	r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	waitCount(t, "overlap skips", func() float64 {
		return testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("c", runner.SkipOverlap))
	}, 1)
	stop, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { r.Stop(stop); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waits for a catch-up run past its drain timeout")
	}
}

// Caught-up slots are claimed together and run one after the other as one
// run of the job. A slot with overlap "replace" ends that run: the slots
// claimed and not started are closed, each with a skip record that says
// so, rather than left open for the next leader or run beside the slot
// that replaced them.
func TestCatchUpSlotsNotStartedAreClosedWhenReplaced(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	tasks := &blockingTasks{started: make(chan string, 16), release: make(chan struct{})}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger()})
	defer func() {
		close(tasks.release)
		r.Stop(context.Background())
	}()
	j := &runner.Job{ID: "c", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Hour,
		Overlap: runner.OverlapReplace, Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	r.SetJobs([]*runner.Job{j})
	last := time.Now().Truncate(time.Second).UTC().Add(-4 * time.Second)
	if err := b.coord.Claim(context.Background(), term, "c", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(context.Background(), term, "c", last, "run-0", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	r.OnTerm(term) // claims the missed slots; the first runs, and blocks
	<-tasks.started
	claims, err := b.coord.Claims(context.Background(), term)
	if err != nil {
		t.Fatal(err)
	}
	missed := len(claims["c"].Open)
	if missed < 3 {
		t.Fatalf("%d caught-up slots claimed, want at least 3", missed)
	}
	r.Fire(runner.Slot{Job: j, Time: slotAhead()}) // replaces the catch-up's run
	<-tasks.started
	var closed []runner.Record
	for deadline := time.Now().Add(10 * time.Second); len(closed) < missed-1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d caught-up slots not started were closed: %+v", len(closed), missed-1, records(t, b, "c"))
		}
		closed = closed[:0]
		for _, rec := range records(t, b, "c") {
			if rec.State == "skipped" && rec.Reason == runner.SkipOverlap && strings.Contains(rec.Error, "before it ran") {
				closed = append(closed, rec)
			}
		}
	}
	claims, err = b.coord.Claims(context.Background(), term)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range claims["c"].Open {
		for _, rec := range closed {
			if o.Time.Equal(rec.ScheduledTime) {
				t.Errorf("caught-up slot %s has a skip record and is left open", o.Time)
			}
		}
	}
}

// A job paused while nobody led stays paused through the next leader's
// catch-up: the missed slots its misfire policy would run, and a slot the
// previous leader left running that at-least-once would run again, do not
// start; each is recorded as skipped, reason "paused", and its claim
// closed, as a slot that comes due while the job is paused is.
func TestCatchUpDoesNotRunAPausedJob(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	all := &runner.Job{ID: "all", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	again := &runner.Job{ID: "again", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Timeout: time.Minute,
		Delivery: runner.DeliveryAtLeastOnce, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{all, again})
	b.r.SetPaused(map[string]bool{"all": true, "again": true})

	last := time.Now().Truncate(time.Second).UTC().Add(-5 * time.Second)
	if err := b.coord.Claim(context.Background(), term, "all", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(context.Background(), term, "all", last, "run-0", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	// A claim of an older term, left running (its leader died mid-run).
	open := time.Now().Truncate(time.Hour).UTC()
	left := fmt.Sprintf(`{"job":"again","scheduled_time":%q,"run_id":"run-left","correlation_id":"corr-left","node":"gone","fencing_token":%d,"attempt":1,"state":"running"}`,
		open.Format(time.RFC3339Nano), term.Token-1)
	if err := b.coord.Claim(context.Background(), term, "again", open, []byte(left)); err != nil {
		t.Fatal(err)
	}

	b.r.CatchUp(term)
	stop, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, term)

	if called := tasks.called(); len(called) != 0 {
		t.Fatalf("the catch-up ran %d slots of paused jobs: %v", len(called), called)
	}
	paused := 0
	for _, rec := range records(t, b, "all") {
		if rec.State == "" {
			continue // the previous leader's last slot, finished above
		}
		if rec.State != "skipped" || rec.Reason != runner.SkipPaused {
			t.Errorf("all: %s recorded %s (%s), want skipped, reason paused", rec.ScheduledTime.Format(time.TimeOnly), rec.State, rec.Reason)
		}
		paused++
	}
	if paused < 4 {
		t.Errorf("all: %d missed slots recorded as paused, want the 4 or more missed", paused)
	}
	recs := records(t, b, "again")
	if len(recs) != 1 || recs[0].Reason != runner.SkipPaused || recs[0].CorrelationID != "corr-left" || !recs[0].ScheduledTime.Equal(open) {
		t.Errorf("again: records %+v, want one skipped (paused) for the slot left running, with its correlation ID", recs)
	}
	for _, id := range []string{"all", "again"} {
		jc, err := b.coord.JobClaims(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(jc.Open) != 0 {
			t.Errorf("%s: %d claims left open, want each closed by its record", id, len(jc.Open))
		}
	}
}

// A job that writes no records any more (here: an hourly job that never
// comes due) still has its records older than MaxRunAge removed, by the
// leader's periodic pass; younger ones stay.
func TestIdleJobsRecordsAgeOut(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	old := "00000001-0000-7000-8000-000000000000" // UUIDv7 of 1970: long past any max age
	fresh := uuid.Must(uuid.NewV7()).String()
	for _, id := range []string{old, fresh} {
		// Written as an earlier leader did: this one has pruned nothing yet.
		if _, err := b.admin.Put(ctx, "/pacer/t/runs/idle/"+id, `{}`); err != nil {
			t.Fatal(err)
		}
	}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: &slowBefore{runs: map[time.Time]int{}},
		Metrics: b.metrics, Tracer: b.tp.Tracer("t"), Logger: discardLogger(), SweepInterval: 100 * time.Millisecond,
		MaxRunAge: time.Hour})
	defer r.Stop(context.Background())
	r.SetJobs([]*runner.Job{job("idle", "")})
	r.OnTerm(term)
	keys := func() string {
		resp, err := b.admin.Get(ctx, "/pacer/t/runs/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, kv := range resp.Kvs {
			out += string(kv.Key) + " "
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(keys(), old) {
		if time.Now().After(deadline) {
			t.Fatalf("the idle job's aged record is still there: %s", keys())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, want := keys(), "/pacer/t/runs/idle/"+fresh+" "; got != want {
		t.Fatalf("records after the pass: %q, want %q", got, want)
	}
}

// oneAtATime is a TaskRunner whose calls block until released (or their
// context ends); it keeps the calls and the most that ran at once.
type oneAtATime struct {
	mu      sync.Mutex
	active  int
	most    int
	calls   []pluginhost.Call
	started chan struct{}
	release chan struct{}
}

func (k *oneAtATime) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	k.mu.Lock()
	k.active++
	k.most = max(k.most, k.active)
	k.calls = append(k.calls, c)
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.active--
		k.mu.Unlock()
	}()
	k.started <- struct{}{}
	select {
	case <-k.release:
		return &pluginhost.Result{Output: "ok"}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (k *oneAtATime) seen() (calls []pluginhost.Call, most int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls), k.most
}

// Attack 10, F14: a dead leader left three open claims of an overlap-forbid,
// at-least-once job (the first started, two queued behind it, never
// started), and a slot was missed after them. The new leader runs them one
// after the other in slot order, then the missed slot, never two at once;
// the queued claims run as attempt 1; a slot the scheduler fires meanwhile
// is skipped as an overlap. Before, the three re-runs and the missed slot
// all started at once, the queued ones as "attempt 2".
func TestRedeliveredSlotsOfAForbidJobRunOneAfterTheOther(t *testing.T) {
	b := setup(t)
	tasks := &oneAtATime{started: make(chan struct{}, 16), release: make(chan struct{})}
	b.useRunner(t, tasks)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	open := []time.Time{now.Add(-4 * time.Second), now.Add(-3 * time.Second), now.Add(-2 * time.Second)}
	missed, next := now.Add(-time.Second), now.Add(time.Hour)
	j := &runner.Job{ID: "f", Plugin: "p", Task: "t", Schedule: slotList{open[0], open[1], open[2], missed, next},
		Spec: "test: five slots", Timeout: time.Minute, Delivery: runner.DeliveryAtLeastOnce,
		Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	for i, s := range open {
		// Run IDs as the dead leader made them (UUIDv7: older than the
		// re-runs'), so that a slot's newest record is its re-run's, not
		// that of the attempt taken over (attack 25, W6).
		c, _ := json.Marshal(runner.Record{Job: j.ID, ScheduledTime: s, RunID: observability.NewRunID(), CorrelationID: fmt.Sprint("c", i),
			Node: "dead", FencingToken: first.Token, Attempt: 1, State: "running", Start: s, Queued: i > 0})
		if err := b.coord.Claim(ctx, first, j.ID, s, c); err != nil {
			t.Fatal(err)
		}
	}
	failover(t, b, first)
	// The catch-up is done: the scheduler may fire the job's next slot.
	b.r.Fire(runner.Slot{Job: j, Time: next})
	recordOf := func(s time.Time) (runner.Record, bool) {
		for _, rec := range records(t, b, j.ID) {
			if rec.ScheduledTime.Equal(s) {
				return rec, true
			}
		}
		return runner.Record{}, false
	}
	waitUntil(t, "the fired slot decided", func() bool { _, ok := recordOf(next); return ok })
	for i := range 4 {
		select {
		case <-tasks.started:
		case <-time.After(15 * time.Second):
			t.Fatalf("run %d never started", i+1)
		}
		select {
		case tasks.release <- struct{}{}:
		case <-time.After(15 * time.Second):
			t.Fatalf("run %d never released", i+1)
		}
	}
	want := append(slices.Clone(open), missed)
	waitUntil(t, "the four slots finished", func() bool {
		for _, s := range want {
			if rec, ok := recordOf(s); !ok || rec.State != observability.OutcomeSuccess {
				return false
			}
		}
		return true
	})
	calls, most := tasks.seen()
	if most != 1 {
		t.Errorf("%d attempts of the forbid job ran at once, want 1", most)
	}
	if len(calls) != len(want) {
		t.Fatalf("%d task calls, want %d", len(calls), len(want))
	}
	for i, c := range calls {
		attempt, corr := 1, ""
		if i == 0 {
			attempt = 2 // attempt 1 started under the dead leader
		}
		if i < len(open) {
			corr = fmt.Sprint("c", i)
		}
		if !c.Info.ScheduledTime.Equal(want[i]) || c.Info.Attempt != attempt || (corr != "" && c.Info.CorrelationID != corr) {
			t.Errorf("call %d: slot %s attempt %d correlation %s; want slot %s attempt %d correlation %q", i,
				c.Info.ScheduledTime.Format(time.TimeOnly), c.Info.Attempt, c.Info.CorrelationID, want[i].Format(time.TimeOnly), attempt, corr)
		}
	}
	if rec, _ := recordOf(next); rec.State != "skipped" || rec.Reason != runner.SkipOverlap {
		t.Errorf("slot fired while the re-runs ran: %s %s %q, want skipped overlap", rec.State, rec.Reason, rec.Error)
	}
}

// Under overlap replace, the re-runs of a dead leader's open claims are one
// run of the job too: the scheduler's next slot replaces it, and the claims
// it had not started are closed as replaced, not run beside the new slot.
func TestRedeliveredSlotsOfAReplaceJobAreReplacedByTheNextSlot(t *testing.T) {
	b := setup(t)
	tasks := &oneAtATime{started: make(chan struct{}, 16), release: make(chan struct{})}
	b.useRunner(t, tasks)
	first := b.waitLeader(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	open := []time.Time{now.Add(-3 * time.Second), now.Add(-2 * time.Second)}
	next := now.Add(time.Hour)
	j := &runner.Job{ID: "r", Plugin: "p", Task: "t", Schedule: slotList{open[0], open[1], next}, Spec: "test: three slots",
		Timeout: time.Minute, Delivery: runner.DeliveryAtLeastOnce, Overlap: runner.OverlapReplace,
		Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	for i, s := range open {
		c, _ := json.Marshal(runner.Record{Job: j.ID, ScheduledTime: s, RunID: fmt.Sprint("r", i), CorrelationID: fmt.Sprint("c", i),
			Node: "dead", FencingToken: first.Token, Attempt: 1, State: "running", Start: s, Queued: i > 0})
		if err := b.coord.Claim(ctx, first, j.ID, s, c); err != nil {
			t.Fatal(err)
		}
	}
	failover(t, b, first)
	select {
	case <-tasks.started: // the first re-run
	case <-time.After(15 * time.Second):
		t.Fatal("the re-run never started")
	}
	b.r.Fire(runner.Slot{Job: j, Time: next})
	select {
	case <-tasks.started: // the replacing slot
	case <-time.After(15 * time.Second):
		t.Fatal("the replacing slot never started")
	}
	select {
	case tasks.release <- struct{}{}:
	case <-time.After(15 * time.Second):
		t.Fatal("the replacing slot never released")
	}
	byslot := map[time.Time]runner.Record{}
	waitUntil(t, "three slots decided", func() bool {
		clear(byslot)
		for _, rec := range records(t, b, j.ID) {
			byslot[rec.ScheduledTime] = rec
		}
		return len(byslot) == 3 && byslot[next].State == observability.OutcomeSuccess
	})
	calls, most := tasks.seen()
	if most != 1 || len(calls) != 2 {
		t.Errorf("%d calls, %d at once; want 2, one at a time", len(calls), most)
	}
	if rec := byslot[open[0]]; rec.State != observability.OutcomeCanceled || rec.Attempt != 2 {
		t.Errorf("re-run slot: %s attempt %d, want canceled attempt 2 (replaced)", rec.State, rec.Attempt)
	}
	if rec := byslot[open[1]]; rec.State != "skipped" || rec.Reason != runner.SkipOverlap || rec.CorrelationID != "c1" {
		t.Errorf("queued slot: %s %s %q (correlation %s), want skipped overlap (replaced before it ran)", rec.State, rec.Reason, rec.Error, rec.CorrelationID)
	}
}
