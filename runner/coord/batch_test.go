package coord_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
		if err := r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte("earlier")); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 300)
	for i := range 300 {
		wg.Go(func() { errs[i] = r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte("now")) })
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
	resp, err := b.client(t).Get(context.Background(), "/pacer/test/slots/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var i int
		fmt.Sscanf(string(kv.Key), "/pacer/test/slots/job-%d/", &i)
		if want := map[bool]string{true: "earlier", false: "now"}[i%3 == 0]; string(kv.Value) != want {
			t.Fatalf("%s = %q, want %q", kv.Key, kv.Value, want)
		}
	}
}

// A thousand jobs claimed at once for the first time: each first claim also
// moves the job's horizon (a prune and a put), which must not push a batch
// past etcd's 128 operations per transaction.
func TestFirstClaimsOfManyJobsFitTheTxnLimit(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const n = 1000
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte("x")) })
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
	resp, err := b.client(t).Get(context.Background(), "/pacer/test/horizons/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d jobs have a horizon after their first claim (the rest move it on a later claim)", resp.Count, n)
}

// Records written at once are batched: every one lands, a record that
// finishes a slot replaces its claim, one whose claim is gone is kept
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
			if err := r.c.Claim(context.Background(), term, fmt.Sprintf("job-%d", i), t0, []byte("claim")); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		job, run := fmt.Sprintf("job-%d", i), fmt.Sprintf("run-%d", i)
		wg.Go(func() {
			errs[i] = r.c.FinishSlot(context.Background(), term, job, t0, run, []byte("result "+run), 0, 0)
		})
		if i%10 == 0 { // the same record twice
			wg.Go(func() {
				errs[n+i] = r.c.FinishSlot(context.Background(), term, job, t0, run, []byte("result "+run), 0, 0)
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
		v, err := r.c.SlotValue(context.Background(), job, t0)
		if err != nil {
			t.Fatal(err)
		}
		switch want := "result " + run; {
		case i%4 == 3 && v != nil:
			t.Fatalf("%s: a never-claimed slot got a key: %q", job, v)
		case i%4 != 3 && string(v) != want:
			t.Fatalf("%s: slot = %q, want %q", job, v, want)
		}
		runs, err := r.c.Runs(context.Background(), job, 10)
		if err != nil || len(runs) != 1 || string(runs[0]) != "result "+run {
			t.Fatalf("%s: run records %q, %v", job, runs, err)
		}
	}
}

// Several jobs and slots claimed at once, after one job's horizon moved and
// one slot was taken behind the leader's cache: every claim gets exactly its
// own answer (the Else branch's reads are matched to the right slot and job).
func TestBatchDecidesEachClaimWhenAHorizonMoved(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	jobs := []string{"a", "b", "c", "d", "e"}
	for _, j := range jobs {
		if err := r.c.Claim(context.Background(), term, j, t0, []byte("ran")); err != nil {
			t.Fatal(err)
		}
	}
	cli := b.client(t)
	if _, err := cli.Txn(context.Background()).Then(
		clientv3.OpDelete(fmt.Sprintf("/pacer/test/slots/c/%019d", t0.UnixNano())),
		clientv3.OpPut("/pacer/test/horizons/c", fmt.Sprint(t0.Add(10*time.Minute).UnixNano())),
		clientv3.OpPut(fmt.Sprintf("/pacer/test/slots/e/%019d", t0.Add(time.Minute).UnixNano()), "x"),
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
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				err := r.c.Claim(ctx, term, j, t0.Add(d), []byte("x"))
				mu.Lock()
				out = append(out, res{j, t0.Add(d), err})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for _, o := range out {
		d := o.slot.Sub(t0)
		var want error
		switch {
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

// Concurrent claims spanning many retentions, so horizons move in batches
// that run at the same time: no slot is claimed twice and no claim hangs.
func TestConcurrentClaimsAcrossRetentionsClaimEachSlotOnce(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	ok := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 40; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				j := fmt.Sprintf("j%d", (w+i)%7)
				s := t0.Add(time.Duration(i*7+w%5) * 5 * time.Minute)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := r.c.Claim(ctx, term, j, s, []byte("x"))
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("claim hung: %v", err)
				}
				if err == nil {
					mu.Lock()
					ok[j+s.String()]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for k, n := range ok {
		if n > 1 {
			t.Errorf("%s claimed %d times", k, n)
		}
	}
	t.Logf("%d distinct claims succeeded", len(ok))
}

// BenchmarkClaim: slot claims through the coordinator, next to etcd's own
// ceiling for the same guarded transactions, in one run.
func BenchmarkClaim(b *testing.B) {
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
	n := 0
	next := func() (string, time.Time) {
		n++
		return fmt.Sprintf("j%d", n%5000), slot.Add(time.Duration(n) * time.Second)
	}

	b.Run("coordinator/serial", func(b *testing.B) {
		for b.Loop() {
			job, s := next()
			if err := c.Claim(context.Background(), term, job, s, []byte("x")); err != nil {
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
					if err := c.Claim(context.Background(), term, job, s, []byte("x")); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})
	// etcd's ceiling: the same guarded transactions sent directly, one
	// claim each (serial), and 50 claims each with 8 in flight.
	b.Run("etcd-direct/serial", func(b *testing.B) {
		for b.Loop() {
			key := fmt.Sprintf("/raw/%d", n)
			n++
			if _, err := bb.cli.Txn(context.Background()).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, "x")).Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})
	b.Run("etcd-direct/50-per-txn-8-in-flight", func(b *testing.B) {
		batches := make(chan int, b.N/50+1)
		for i := 0; i < b.N; i += 50 {
			batches <- i
		}
		close(batches)
		base := n
		n += b.N + 50
		var wg sync.WaitGroup
		b.ResetTimer()
		for range 8 {
			wg.Go(func() {
				for start := range batches {
					var cmps []clientv3.Cmp
					var ops []clientv3.Op
					for k := start; k < start+50; k++ {
						key := fmt.Sprintf("/raw/%d", base+k)
						cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
						ops = append(ops, clientv3.OpPut(key, "x"))
					}
					if _, err := bb.cli.Txn(context.Background()).If(cmps...).Then(ops...).Commit(); err != nil {
						b.Error(err)
						return
					}
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
	e, err := coord.StartEmbedded(context.Background(), coord.EmbeddedOptions{
		Name: "bench", Dir: b.TempDir(), ClientListen: freeAddrB(b), PeerListen: freeAddrB(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return &benchBundle{cli: cli}
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
