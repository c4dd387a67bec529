package coord_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/runner/coord"
)

// Many claims at one instant are batched; a batch with taken slots is
// split so that exactly the free slots are claimed.
func TestBatchedClaimsSplitAroundTakenSlots(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	// Every third slot is taken beforehand.
	for i := 0; i < 300; i += 3 {
		if err := r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte(`"earlier"`)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 300)
	for i := range 300 {
		wg.Go(func() { errs[i] = r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte(`"now"`)) })
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i%3 == 0 && !errors.Is(err, coord.ErrSlotTaken):
			t.Fatalf("slot %d was taken, got %v", i, err)
		case i%3 != 0 && err != nil:
			t.Fatalf("slot %d was free, got %v", i, err)
		}
	}
	for i := range 300 {
		jc, err := r.c.JobClaims(context.Background(), fmt.Sprintf("job-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{true: `"earlier"`, false: `"now"`}[i%3 == 0]
		if len(jc.Open) != 1 || string(jc.Open[0].Claim) != want {
			t.Fatalf("job-%d: open claims %+v, want one %s", i, jc.Open, want)
		}
	}
}

// A thousand jobs claimed at once for the first time: one key each.
func TestFirstClaimsOfManyJobs(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const n = 1000
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte(`"x"`)) })
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed++; failed <= 3 {
				t.Errorf("job-%d: %v", i, err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d first claims failed", failed, n)
	}
	resp, err := b.client(t).Get(context.Background(), "/pacer/test/claims/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != n {
		t.Fatalf("%d claim keys (%v), want %d", resp.Count, err, n)
	}
}

// Claims that each carry a run record (a catch-up's claims with their
// skip records), made at once: every claim and record lands, and no
// transaction writes more keys than a batch of plain claims does (a claim
// with its record counts two), so a catch-up's transactions are no
// heavier than a burst's.
func TestClaimsWithRecordsAreBatchedByKeysWritten(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	cli := b.client(t)
	start, err := cli.Get(context.Background(), "revision")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const n = 400
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			job := fmt.Sprintf("job-%d", i)
			errs[i] = r.c.ClaimRecording(context.Background(), term, job, t0, []byte(`"claim"`), "skip-"+job, []byte(`"skipped"`), 0, 0)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	// Keys written per transaction: each transaction is one revision.
	resp, err := cli.Get(context.Background(), "/pacer/test/", clientv3.WithPrefix(), clientv3.WithMinModRev(start.Header.Revision+1))
	if err != nil {
		t.Fatal(err)
	}
	perTxn := map[int64]int{}
	claims, records := 0, 0
	for _, kv := range resp.Kvs {
		perTxn[kv.ModRevision]++
		switch k := string(kv.Key); {
		case strings.HasPrefix(k, "/pacer/test/claims/job-"):
			claims++
		case strings.HasPrefix(k, "/pacer/test/runs/job-"):
			records++
		}
	}
	if claims != n || records != n {
		t.Fatalf("%d claim keys and %d records written, want %d of each", claims, records, n)
	}
	most := 0
	for _, k := range perTxn {
		most = max(most, k)
	}
	if most > coord.MaxBatch {
		t.Fatalf("a transaction wrote %d keys; a batch of plain claims writes at most %d", most, coord.MaxBatch)
	}
	t.Logf("%d claims with records in %d transactions, at most %d keys each", n, len(perTxn), most)
}

// Records written at once are batched: every one lands, a record that
// finishes a slot closes its claim, one for a slot never claimed is kept
// alone, and the same record written twice at once is not refused.
func TestBatchedRecords(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const n = 400
	for i := range n {
		if i%4 != 3 { // every fourth slot was never claimed
			if err := r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte(`"claim"`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		job, run := fmt.Sprintf("job-%d", i), fmt.Sprintf("run-%d", i)
		wg.Go(func() {
			errs[i] = r.c.FinishSlot(context.Background(), term, job, t0, run, []byte("result "+run), time.Time{}, 0, 0)
		})
		if i%10 == 0 { // the same record twice
			wg.Go(func() {
				errs[n+i] = r.c.FinishSlot(context.Background(), term, job, t0, run, []byte("result "+run), time.Time{}, 0, 0)
			})
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i := range n {
		job, run := fmt.Sprintf("job-%d", i), fmt.Sprintf("run-%d", i)
		jc, err := r.c.JobClaims(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(jc.Open) != 0:
			t.Fatalf("%s: still open after its record: %+v", job, jc)
		case i%4 == 3 && jc.Claimed():
			t.Fatalf("%s: a never-claimed slot was claimed by its record: %+v", job, jc)
		case i%4 != 3 && !slices.Equal(jc.Slots, []time.Time{t0}):
			t.Fatalf("%s: finished slots %v, want [%s]", job, jc.Slots, t0)
		}
		runs, err := r.c.Runs(context.Background(), job, 10)
		if err != nil || len(runs) != 1 || string(runs[0]) != "result "+run {
			t.Fatalf("%s: run records %q, %v", job, runs, err)
		}
	}
}

// Several jobs and slots claimed at once, after one job's key was moved
// ahead and a slot taken behind the leader's copy: every claim gets
// exactly its own answer (the Else branch's reads are matched to the
// right job).
func TestBatchDecidesEachClaimWhenAKeyChanged(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	jobs := []string{"a", "b", "c", "d", "e"}
	for _, j := range jobs {
		if err := r.c.Claim(context.Background(), term, j, t0, []byte(`"ran"`)); err != nil {
			t.Fatal(err)
		}
	}
	cli := b.client(t)
	if _, err := cli.Txn(context.Background()).Then(
		clientv3.OpPut("/pacer/test/claims/c", fmt.Sprintf(`{"floor":%d}`, t0.Add(10*time.Minute).UnixNano())),
		clientv3.OpPut("/pacer/test/claims/e", fmt.Sprintf(`{"slots":[%d,%d]}`, t0.UnixNano(), t0.Add(time.Minute).UnixNano())),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	type res struct {
		job  string
		slot time.Time
		err  error
	}
	var mu sync.Mutex
	var out []res
	var wg sync.WaitGroup
	for _, j := range jobs {
		for _, d := range []time.Duration{0, time.Minute, 11 * time.Minute} {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				err := r.c.Claim(ctx, term, j, t0.Add(d), []byte(`"x"`))
				mu.Lock()
				out = append(out, res{j, t0.Add(d), err})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, o := range out {
		d := o.slot.Sub(t0)
		var want error
		switch {
		case o.job == "c" && d == 0 && errors.Is(o.err, coord.ErrSlotTaken):
			// Refused from the leader's own copy, before any claim of c
			// read the key again: taken (by the leader) is as right.
			continue
		case o.job == "c" && d < 10*time.Minute:
			want = coord.ErrSlotTooOld
		case d == 0:
			want = coord.ErrSlotTaken
		case o.job == "e" && d == time.Minute:
			want = coord.ErrSlotTaken
		}
		if !errors.Is(o.err, want) && !(want == nil && o.err == nil) {
			t.Errorf("%s +%s: %v, want %v", o.job, d, o.err, want)
		}
	}
}

// Concurrent claims and finishes of many slots of a few jobs, in no order,
// so that each job's key is written by claims and records at once and its
// floor moves while other claims of it wait: no slot is claimed twice, no
// request hangs, and every finished slot stays decided.
func TestConcurrentClaimsAndFinishesClaimEachSlotOnce(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	ok := map[string]int{}
	var wg sync.WaitGroup
	for w := range 40 {
		wg.Go(func() {
			for i := range 60 {
				j := fmt.Sprintf("j%d", (w+i)%7)
				s := t0.Add(time.Duration(i*7+w%5) * 5 * time.Minute)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := r.c.Claim(ctx, term, j, s, []byte(`"x"`))
				if errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("claim hung: %v", err)
				}
				if err == nil {
					mu.Lock()
					ok[j+s.String()]++
					mu.Unlock()
					if ferr := r.c.FinishSlot(ctx, term, j, s, fmt.Sprintf("%s-%d", j, s.Unix()), []byte("{}"), time.Time{}, 0, 0); ferr != nil {
						t.Errorf("finish: %v", ferr)
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	for k, n := range ok {
		if n > 1 {
			t.Errorf("%s claimed %d times", k, n)
		}
	}
	for j := range 7 {
		jc, err := r.c.JobClaims(context.Background(), fmt.Sprintf("j%d", j))
		if err != nil || len(jc.Open) != 0 || len(jc.Slots) > 16 {
			t.Errorf("j%d: %+v, %v; want every claim closed, at most 16 slots kept", j, jc, err)
		}
	}
	t.Logf("%d distinct claims succeeded", len(ok))
}

// BenchmarkClaim: slot claims through the coordinator, next to etcd's own
// ceiling for the same guarded transactions (the fencing guard and a
// compare of the job's claim key's mod revision, then a put of the key),
// in one run. Claims rotate over 50,000 jobs, so each job's key holds a
// few open claims, as with jobs whose runs overlap.
//
//	go test -run '^$' -bench BenchmarkClaim -benchtime 3s -count 3 ./runner/coord/
func BenchmarkClaim(b *testing.B) {
	const jobs = 50000
	bb := setupB(b)
	c := coord.New(coord.Options{Client: bb.cli, Cluster: "bench", Node: "a", LeaseTTL: 5 * time.Second, RequestTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for c.Term() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	term := c.Term()
	slot := time.Now()
	claim := []byte(`{"run_id":"01a24a19-45e1-739c-8fd5-0edaf48d9b81","fencing_token":2,"state":"running"}`)
	n := 0
	next := func() (string, time.Time) {
		n++
		return fmt.Sprintf("j%d", n%jobs), slot.Add(time.Duration(n) * time.Second)
	}

	b.Run("coordinator/serial", func(b *testing.B) {
		for b.Loop() {
			job, s := next()
			if err := c.Claim(context.Background(), term, job, s, claim); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})
	b.Run("coordinator/1000-concurrent", func(b *testing.B) {
		claims := make(chan struct{}, b.N)
		for range b.N {
			claims <- struct{}{}
		}
		close(claims)
		var wg sync.WaitGroup
		var mu sync.Mutex
		b.ResetTimer()
		for range 1000 {
			wg.Go(func() {
				for range claims {
					mu.Lock()
					job, s := next()
					mu.Unlock()
					if err := c.Claim(context.Background(), term, job, s, claim); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})

	// etcd's ceiling: the same guarded transactions sent directly, with
	// values of the same size as the claim keys above.
	leader, err := bb.cli.Get(context.Background(), "/pacer/bench/leader/", clientv3.WithPrefix())
	if err != nil || len(leader.Kvs) != 1 {
		b.Fatalf("leader key: %v %v", leader, err)
	}
	guard := clientv3.Compare(clientv3.CreateRevision(string(leader.Kvs[0].Key)), "=", leader.Kvs[0].CreateRevision)
	sample, err := bb.cli.Get(context.Background(), "/pacer/bench/claims/j1")
	if err != nil || len(sample.Kvs) != 1 {
		b.Fatalf("a claim key: %v %v", sample, err)
	}
	value := string(sample.Kvs[0].Value)
	var rmu sync.Mutex
	revs := map[string]int64{}
	cas := func(key string) clientv3.Cmp {
		rmu.Lock()
		defer rmu.Unlock()
		return clientv3.Compare(clientv3.ModRevision(key), "=", revs[key])
	}
	landed := func(keys []string, rev int64) {
		rmu.Lock()
		defer rmu.Unlock()
		for _, k := range keys {
			revs[k] = rev
		}
	}
	b.Run("etcd-direct/serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			key := fmt.Sprintf("/raw/j%d", i%jobs)
			resp, err := bb.cli.Txn(context.Background()).If(guard, cas(key)).Then(clientv3.OpPut(key, value)).Commit()
			if err != nil || !resp.Succeeded {
				b.Fatal(err, resp.Succeeded)
			}
			landed([]string{key}, resp.Header.Revision)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})
	b.Run("etcd-direct/50-per-txn-8-in-flight", func(b *testing.B) {
		batches := make(chan int, b.N/50+1)
		for i := 0; i < b.N; i += 50 {
			batches <- i
		}
		close(batches)
		var wg sync.WaitGroup
		b.ResetTimer()
		for w := range 8 {
			wg.Go(func() {
				for start := range batches {
					cmps := []clientv3.Cmp{guard}
					var ops []clientv3.Op
					var keys []string
					for k := start; k < start+50; k++ {
						// Each worker its own keys, as the coordinator has at
						// most one transaction per key in flight.
						key := fmt.Sprintf("/raw/w%d/j%d", w, k%jobs)
						cmps = append(cmps, cas(key))
						ops = append(ops, clientv3.OpPut(key, value))
						keys = append(keys, key)
					}
					resp, err := bb.cli.Txn(context.Background()).If(cmps...).Then(ops...).Commit()
					if err != nil || !resp.Succeeded {
						b.Error(err, "succeeded:", resp != nil && resp.Succeeded)
						return
					}
					landed(keys, resp.Header.Revision)
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})
}

type benchBundle struct{ cli *clientv3.Client }

func setupB(b *testing.B) *benchBundle {
	b.Helper()
	e := etcdtest.Start(b, etcdembed.Options{Name: "bench"})
	return &benchBundle{cli: etcdtest.Client(b, e, clientv3.Config{})}
}

// BenchmarkGracefulHandover: from the leader being told to stop (no run in
// flight) to the standby leading. The leader resigns and revokes its lease.
func BenchmarkGracefulHandover(b *testing.B) {
	bb := setupB(b)
	start := func(node string, led chan<- time.Time) (stop func()) {
		c := coord.New(coord.Options{Client: bb.cli, Cluster: "handover", Node: node, LeaseTTL: 5 * time.Second,
			OnTransition: func(leading bool, _ *coord.Term) {
				if leading {
					led <- time.Now()
				}
			}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	led := make(chan time.Time, 2)
	stopA := start("a", led)
	<-led // a leads
	var samples []time.Duration
	for i := 0; b.Loop(); i++ {
		stopB := start(fmt.Sprintf("b%d", i), led) // the standby
		t0 := time.Now()
		stopA()
		t1 := <-led
		samples = append(samples, t1.Sub(t0))
		stopA = stopB
	}
	stopA()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "worst-ms")
}
