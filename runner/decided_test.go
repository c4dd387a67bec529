package runner_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/sdk/trace"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

// firstBlocks is a TaskRunner whose first run, if block, blocks until its
// context ends (a long run that the next slots overlap); it counts the
// runs of each slot, across every replica that shares it.
type firstBlocks struct {
	block   bool
	mu      sync.Mutex
	started bool
	runs    map[time.Time]int // by slot, in UTC
}

func (f *firstBlocks) Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	f.mu.Lock()
	first := f.block && !f.started
	f.started = true
	f.runs[c.Info.ScheduledTime.UTC()]++
	f.mu.Unlock()
	if first {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &pluginhost.Result{Output: "ok"}, nil
}

func (f *firstBlocks) ran(slot time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[slot.UTC()]
}

// roster is a coord.Roster the test changes.
type roster struct {
	mu      sync.Mutex
	nodes   []string
	since   time.Time
	changed chan struct{}
}

func newRoster(nodes ...string) *roster {
	return &roster{nodes: nodes, since: time.Now(), changed: make(chan struct{})}
}

func (r *roster) Candidates() ([]string, time.Time, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes, r.since, r.changed
}

func (r *roster) set(nodes ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes, r.since = nodes, time.Now()
	close(r.changed)
	r.changed = make(chan struct{})
}

// decisionReplica is one runner and its coordinator as fxmodule wires them
// for shards: OnTerm on every new term, WaitIdle as the hand-over's drain.
type decisionReplica struct {
	c       *coord.Coordinator
	r       *runner.Runner
	cli     *clientv3.Client
	metrics *observability.Metrics
	stop    func()
}

func startDecisionReplica(t *testing.T, endpoint, node string, tasks runner.TaskRunner, shards int, ro coord.Roster, jobs []*runner.Job) *decisionReplica {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	var r *runner.Runner
	var rmu sync.Mutex
	o := coord.Options{Client: cli, Cluster: "t", Node: node, LeaseTTL: 2 * time.Second, RequestTimeout: time.Second,
		Shards: shards, DrainTimeout: 300 * time.Millisecond,
		OnTransition: func(leading bool, term *coord.Term) {
			rmu.Lock()
			defer rmu.Unlock()
			if leading && r != nil {
				go r.OnTerm(term)
			}
		},
		Drain: func(ctx context.Context, term *coord.Term) {
			rmu.Lock()
			defer rmu.Unlock()
			r.WaitIdle(ctx, term)
		}}
	if ro != nil {
		o.Roster, o.Settle = ro, 200*time.Millisecond
	}
	c := coord.New(o)
	rmu.Lock()
	r = runner.New(runner.Options{Node: node, Coord: c, Tasks: tasks, Metrics: m, Logger: discardLogger(),
		Tracer: trace.NewTracerProvider().Tracer("t"), Shards: shards})
	r.SetJobs(jobs)
	rmu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	wg.Go(func() { r.Start(ctx) })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			drain, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			r.Stop(drain)
			dcancel()
			cancel()
			wg.Wait()
			cli.Close()
		})
	}
	t.Cleanup(stop)
	return &decisionReplica{c: c, r: r, cli: cli, metrics: m, stop: stop}
}

// decisions returns, for each slot of job with a record, the records that
// decide it (a misfire record of several slots decides each of them),
// with the number of skip records for reason.
func decisions(t *testing.T, cli *clientv3.Client, job, reason string) (map[time.Time][]runner.Record, int) {
	t.Helper()
	out := map[time.Time][]runner.Record{}
	skips := 0
	for _, rec := range recordsOf(t, cli, job) {
		if rec.State == "skipped" && rec.Reason == reason {
			skips++
		}
		s := rec.ScheduledTime.UTC()
		out[s] = append(out[s], rec)
		for s = s.Add(time.Second); rec.Slots > 1 && !s.After(rec.ScheduledUntil); s = s.Add(time.Second) {
			out[s] = append(out[s], rec)
		}
	}
	return out, skips
}

func describe(recs []runner.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "\n\t%s by %s (token %d) %s %s", r.State, r.Node, r.FencingToken, r.Reason, r.Error)
	}
	return b.String()
}

// Issue 13, attack B3: a slot skipped under one term (overlap: its job's
// previous run still running; or paused) is decided: the next leader of
// its shard, whether it took over after a failover (as on a single leader
// without shards) or by a hand-over, neither runs it nor records it again.
// Every slot has one decision, one record, across leaders, and none is
// left without one; the skip counter counts the skips recorded.
func TestSkippedSlotIsNotDecidedAgainByTheNextLeader(t *testing.T) {
	for _, how := range []string{"failover", "hand-over"} {
		for _, why := range []string{runner.SkipOverlap, runner.SkipPaused} {
			t.Run(how+"/"+why, func(t *testing.T) { testSkippedSlotDecidedOnce(t, how, why) })
		}
	}
}

func testSkippedSlotDecidedOnce(t *testing.T, how, why string) {
	ep := startEtcd(t)
	tasks := &firstBlocks{block: why == runner.SkipOverlap, runs: map[time.Time]int{}}
	shards, jobID := 1, "b3"
	var ro *roster
	if how == "hand-over" {
		// Two shards; the job's is the one b gets when it joins.
		shards, ro = 2, newRoster("a")
		owned := shard.Owned(shard.Assign(shards, []string{"a", "b"}), "b")
		for i := 0; shard.Of(jobID, shards) != owned[0]; i++ {
			jobID = fmt.Sprintf("b3-%d", i)
		}
	}
	// Misfire "all" within an hour: a slot the next leader takes for
	// missed runs late, as one held back by a hand-over does.
	jobs := func() []*runner.Job { // each runner has its own
		return []*runner.Job{{ID: jobID, Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
			Overlap: runner.OverlapForbid, Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}}
	}
	var roA, roB coord.Roster
	if ro != nil {
		roA, roB = ro, ro
	}
	a := startDecisionReplica(t, ep, "a", tasks, shards, roA, jobs())
	var old *coord.Term
	waitUntil(t, "a to lead the job's shard", func() bool { old = a.c.TermOf(shard.Of(jobID, shards)); return old != nil })
	b := startDecisionReplica(t, ep, "b", tasks, shards, roB, jobs())

	// Overlap: a's first run blocks, the slots after it are skipped.
	// Paused: a slot runs (the job has a claim), then the job is paused.
	if why == runner.SkipPaused {
		waitUntil(t, "a run by a", func() bool {
			tasks.mu.Lock()
			defer tasks.mu.Unlock()
			return tasks.started
		})
		a.r.SetPaused(map[string]bool{jobID: true})
		b.r.SetPaused(map[string]bool{jobID: true})
	}
	waitUntil(t, "three skips recorded by a", func() bool {
		_, n := decisions(t, a.cli, jobID, why)
		return n >= 3
	})
	switch how {
	case "failover":
		// The server deletes a's election key, as when its lease expires.
		expireLeaderLease(t, a.cli)
	case "hand-over":
		ro.set("a", "b")
	}
	<-old.Context().Done()
	ended := time.Now()
	// The next leader (b, or a again after the failover) caught up: its
	// scheduler, which starts after the catch-up, decided a slot.
	waitUntil(t, "a slot decided by the next term's scheduler", func() bool {
		for _, rec := range recordsOf(t, a.cli, jobID) {
			if rec.FencingToken > old.Token && rec.ScheduledTime.After(ended) {
				return true
			}
		}
		return false
	})
	b.stop()
	a.stop()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	byslot, skips := decisions(t, cli, jobID, why)
	slots := make([]time.Time, 0, len(byslot))
	for s := range byslot {
		slots = append(slots, s)
	}
	sort.Slice(slots, func(i, k int) bool { return slots[i].Before(slots[k]) })
	for _, s := range slots {
		recs := byslot[s]
		if len(recs) != 1 {
			t.Errorf("slot %s decided %d times:%s", s.Format(time.TimeOnly), len(recs), describe(recs))
		}
		// lock_lost: the slot started, and its leader was gone before it ended.
		if recs[0].State == "skipped" && recs[0].Reason != runner.SkipLockLost && tasks.ran(s) > 0 {
			t.Errorf("slot %s recorded skipped (%s) and ran %d times", s.Format(time.TimeOnly), recs[0].Reason, tasks.ran(s))
		}
	}
	// And none is left undecided: every slot from the first to the last
	// has its record.
	for s := slots[0]; s.Before(slots[len(slots)-1]); s = s.Add(time.Second) {
		if len(byslot[s]) == 0 {
			t.Errorf("slot %s has no record: never decided", s.Format(time.TimeOnly))
		}
	}
	if skips < 3 {
		t.Fatalf("%d skip records (%s), want at least 3", skips, why)
	}
	counted := testutil.ToFloat64(a.metrics.JobSkipped.WithLabelValues(jobID, why)) +
		testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues(jobID, why))
	if int(counted) != skips {
		t.Errorf("pacer_job_skipped_total{reason=%s} = %v across replicas, but %d such skip records", why, counted, skips)
	}
}

// The misfire catch-up marks the latest missed slot decided when it skips
// it, also when earlier missed slots run (here more missed slots than
// misfire "all" runs): the job's claims then say every missed slot is
// decided, so the next leader does not decide the skipped ones again.
func TestCatchUpMarksTheLatestSkippedSlotDecided(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	j := &runner.Job{ID: "m", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	// The previous leader's last claim was 110 s ago: 100 missed slots
	// run, the ~10 latest are skipped.
	last := time.Now().Truncate(time.Second).Add(-110 * time.Second)
	if err := b.coord.Claim(context.Background(), term, "m", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	b.r.CatchUp(term)
	stop, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, term)

	if n := len(tasks.called()); n != 100 {
		t.Fatalf("%d missed slots ran, want 100 (maxCatchUpRuns)", n)
	}
	// Slots are a second apart: the latest skipped is as many seconds
	// after the latest run as were skipped.
	skipped := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("m", runner.SkipMisfire))
	if skipped < 1 {
		t.Fatalf("%v missed slots skipped, want some beyond the 100 run", skipped)
	}
	latest := last.Add(time.Duration(100+int(skipped)) * time.Second)
	jc, err := b.coord.JobClaims(context.Background(), "m")
	if err != nil {
		t.Fatal(err)
	}
	if got := jc.Last(time.Time{}); !got.Equal(latest) {
		t.Fatalf("the job's claims are decided through %s, but the latest skipped slot is %s: the next leader would decide %s again",
			got.Format(time.TimeOnly), latest.Format(time.TimeOnly), latest.Format(time.TimeOnly))
	}
}
