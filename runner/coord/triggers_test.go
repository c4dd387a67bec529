package coord_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/coord"
)

// store is a coordinator that only serves requests (it does not campaign),
// as an API replica's does, on its own etcd client.
func (b *bundle) store(t *testing.T) *coord.Coordinator {
	t.Helper()
	return coord.New(coord.Options{Client: b.client(t), Cluster: "test", Node: "api", RequestTimeout: 2 * time.Second})
}

func countKeys(t *testing.T, cli *clientv3.Client, prefix string) int {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/pacer/test/"+prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// The bounds on kept trigger requests hold exactly when requests race from
// several replicas: a request is written only if no trigger key changed
// since its count was read.
func TestTriggerBoundsHoldUnderConcurrency(t *testing.T) {
	b := setup(t)
	replicas := []*coord.Coordinator{b.store(t), b.store(t), b.store(t)}
	lim := coord.TriggerLimits{PerJob: 7, Total: 10}
	var stored, full atomic.Int32
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			c := replicas[i%len(replicas)]
			job := []string{"a", "b"}[i%2]
			id := fmt.Sprintf("t%02d", i)
			_, err := c.RequestTrigger(context.Background(), job, id, []byte("{}"), coord.Idempotency{Key: id, Receipt: []byte(id)}, lim)
			var lerr *coord.LimitError
			switch {
			case err == nil:
				stored.Add(1)
			case errors.As(err, &lerr):
				full.Add(1)
			default:
				t.Errorf("request %s: %v", id, err)
			}
		})
	}
	wg.Wait()
	admin := b.client(t)
	a, bb := countKeys(t, admin, "triggers/a/"), countKeys(t, admin, "triggers/b/")
	if stored.Load() != 10 || full.Load() != 50 || a+bb != 10 || a > 7 || bb > 7 {
		t.Fatalf("stored %d (a %d, b %d), refused %d; want 10 stored (at most 7 per job), 50 refused",
			stored.Load(), a, bb, full.Load())
	}
	// Every stored request has its receipt, and only those.
	if n := countKeys(t, admin, "idempotency/"); n != 10 {
		t.Fatalf("%d receipts, want 10", n)
	}
}

// Requests that race with one idempotency key, from several replicas, are
// stored once; every one of them is answered with the stored request's
// receipt.
func TestTriggerIsStoredOncePerIdempotencyKey(t *testing.T) {
	b := setup(t)
	replicas := []*coord.Coordinator{b.store(t), b.store(t)}
	var mu sync.Mutex
	receipts := map[string]int{}
	var fresh atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			id := fmt.Sprintf("t%02d", i)
			a, err := replicas[i%2].RequestTrigger(context.Background(), "j", id, []byte(id),
				coord.Idempotency{Key: "same-key", Receipt: []byte(id)}, coord.TriggerLimits{})
			if err != nil {
				t.Errorf("request %s: %v", id, err)
				return
			}
			if !a.Replayed {
				fresh.Add(1)
			}
			mu.Lock()
			receipts[string(a.Receipt)]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if fresh.Load() != 1 || len(receipts) != 1 {
		t.Fatalf("%d requests stored, answers %v; want one stored and every answer its receipt", fresh.Load(), receipts)
	}
	if n := countKeys(t, b.client(t), "triggers/j/"); n != 1 {
		t.Fatalf("%d trigger requests kept, want 1", n)
	}
}

// Each decision compares the request's revision under the fencing guard:
// a decision on a request that changed since it was read is refused, and
// a term that lost its lease cannot decide anything.
func TestTriggerDecisionsAreFencedAndOnce(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	for _, id := range []string{"run", "skip", "stale"} {
		if _, err := r.c.RequestTrigger(context.Background(), "j", id, []byte(`{"pending":true}`),
			coord.Idempotency{Key: id, Receipt: []byte(id)}, coord.TriggerLimits{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(id string) coord.Trigger {
		t.Helper()
		tr, ok, err := r.c.GetTrigger(context.Background(), "j", id)
		if err != nil || !ok {
			t.Fatalf("get %s: %v %v", id, ok, err)
		}
		return tr
	}
	admin := b.client(t)

	run := get("run")
	rev, err := r.c.RunTrigger(context.Background(), term, run, []byte(`{"claim":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.RunTrigger(context.Background(), term, run, []byte(`{"claim":2}`)); !errors.Is(err, coord.ErrTriggerDecided) {
		t.Fatalf("second decision on the same revision: %v, want ErrTriggerDecided", err)
	}
	if err := r.c.SkipTrigger(context.Background(), term, run, "skip-of-run", []byte("skipped"), 0, 0); !errors.Is(err, coord.ErrTriggerDecided) {
		t.Fatalf("skipping a request decided to run: %v, want ErrTriggerDecided", err)
	}
	if err := r.c.FinishTrigger(context.Background(), term, "j", "run", rev, "run-1", []byte("done"), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.c.GetTrigger(context.Background(), "j", "run"); ok {
		t.Fatal("finished request still kept")
	}

	skip := get("skip")
	if err := r.c.SkipTrigger(context.Background(), term, skip, "skip-1", []byte("skipped"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.c.GetTrigger(context.Background(), "j", "skip"); ok {
		t.Fatal("skipped request still kept")
	}
	if runs, err := r.c.Runs(context.Background(), "j", 10); err != nil || len(runs) != 2 {
		t.Fatalf("%d records, %v; want the run's and the skip's", len(runs), err)
	}

	// The term's lease goes: its decisions are refused and it ends.
	stale := get("stale")
	resp, err := admin.Get(context.Background(), "/pacer/test/leader/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leader key: %v", err)
	}
	if _, err := admin.Delete(context.Background(), string(resp.Kvs[0].Key)); err != nil {
		t.Fatal(err)
	}
	if err := r.c.SkipTrigger(context.Background(), term, stale, "late", []byte("late"), 0, 0); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("decision of a stale term: %v, want ErrNotLeader", err)
	}
	if _, ok, _ := r.c.GetTrigger(context.Background(), "j", "stale"); !ok {
		t.Fatal("a stale term's decision removed the request")
	}
}

// A job keeps its newest receipts only: a key is remembered for the job's
// last Keep mutating requests.
func TestReceiptsKeepTheNewest(t *testing.T) {
	b := setup(t)
	c := b.store(t)
	pause := func(key string, paused bool) coord.Applied {
		t.Helper()
		a, err := c.SetPaused(context.Background(), "j", paused, []byte("{}"), coord.Idempotency{Key: key, Receipt: []byte(key), Keep: 3})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for i := range 5 {
		pause(fmt.Sprint("k", i), i%2 == 0)
	}
	admin := b.client(t)
	if n := countKeys(t, admin, "idempotency/j/"); n != 3 {
		t.Fatalf("%d receipts kept, want 3", n)
	}
	if a := pause("k4", false); !a.Replayed || string(a.Receipt) != "k4" {
		t.Fatalf("repeating the newest request: %+v, want a replay", a)
	}
	if countKeys(t, admin, "paused/j") != 1 {
		t.Fatal("a replayed resume took effect: the job is not paused")
	}
	if a := pause("k0", true); a.Replayed {
		t.Fatalf("the oldest key is still remembered: %+v", a)
	}
	// Pruned every Keep/10 requests: at most Keep + Keep/10 are kept.
	for i := range 57 {
		key := fmt.Sprint("many-", i)
		if _, err := c.SetPaused(context.Background(), "m", true, []byte("{}"), coord.Idempotency{Key: key, Receipt: []byte(key), Keep: 20}); err != nil {
			t.Fatal(err)
		}
	}
	if n := countKeys(t, admin, "idempotency/m/"); n < 20 || n > 22 {
		t.Fatalf("%d receipts kept with Keep 20, want 20 to 22", n)
	}
}

// BenchmarkTriggerRequest: storing one manual trigger request, as the old
// unconditional put and as the bounded, idempotent request (a read of the
// receipt and the counts, then a compared write of the request and its
// receipt; every tenth request also prunes receipts), one at a time and
// from 8 callers on one replica (whose requests take turns). Every 50th
// request first deletes the stored ones, as a leader deciding them would,
// so the counts stay under the bounds; the same for both. Each case has a
// fresh etcd: keys deleted but not yet compacted slow down range reads.
func BenchmarkTriggerRequest(b *testing.B) {
	body := []byte(`{"correlation_id":"0193a0c2-5c1e-7d3a-9f7e-3c2b1a0f9e8d","requested_at":"2026-12-06T05:00:00Z","by":"api (pacer-cli)"}`)
	for _, bc := range []struct {
		name       string
		idempotent bool
		callers    int
	}{{"put", false, 1}, {"idempotent", true, 1}, {"put/callers=8", false, 8}, {"idempotent/callers=8", true, 8}} {
		b.Run(bc.name, func(b *testing.B) {
			cli := setupB(b).cli
			c := coord.New(coord.Options{Client: cli, Cluster: "bench", Node: "api"})
			var n atomic.Int64
			one := func() {
				i := n.Add(1)
				if i%50 == 0 {
					if _, err := cli.Delete(context.Background(), "/pacer/bench/triggers/", clientv3.WithPrefix()); err != nil {
						b.Error(err)
					}
				}
				id := fmt.Sprint("t-", i)
				var err error
				if bc.idempotent {
					_, err = c.RequestTrigger(context.Background(), "j", id, body,
						coord.Idempotency{Key: id, Receipt: body, Keep: 100}, coord.TriggerLimits{PerJob: 100, Total: 1000})
				} else {
					_, err = cli.Put(context.Background(), "/pacer/bench/triggers/j/"+id, string(body))
				}
				if err != nil {
					b.Error(err)
				}
			}
			if bc.callers == 1 {
				for b.Loop() {
					one()
				}
			} else {
				b.SetParallelism(bc.callers)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
		})
	}
}
