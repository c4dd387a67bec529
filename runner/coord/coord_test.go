package coord_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner/coord"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	etcd     *coord.Embedded
	endpoint string
}

// setup starts a real single-node etcd for one test.
func setup(t *testing.T) *bundle {
	t.Helper()
	e, err := coord.StartEmbedded(context.Background(), coord.EmbeddedOptions{
		Name: "test", Dir: t.TempDir(), ClientListen: freeAddr(t), PeerListen: freeAddr(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close) // registered first, so it runs after the clients close
	return &bundle{etcd: e, endpoint: e.Endpoint()}
}

func (b *bundle) client(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{b.endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

type replica struct {
	c    *coord.Coordinator
	stop context.CancelFunc
	done chan struct{}
}

func (b *bundle) replica(t *testing.T, node string) *replica {
	t.Helper()
	c := coord.New(coord.Options{Client: b.client(t), Cluster: "test", Node: node, LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second, ClaimRetention: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{c: c, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(r.close)
	return r
}

func (r *replica) close() {
	r.stop()
	<-r.done
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaderOf(rs ...*replica) (*replica, *coord.Term) {
	for _, r := range rs {
		if t := r.c.Term(); t != nil {
			return r, t
		}
	}
	return nil, nil
}

func TestExactlyOneLeader(t *testing.T) {
	b := setup(t)
	a, bb := b.replica(t, "a"), b.replica(t, "b")
	waitFor(t, "a leader", 10*time.Second, func() bool { r, _ := leaderOf(a, bb); return r != nil })
	if a.c.Term() != nil && bb.c.Term() != nil {
		t.Fatal("both replicas lead")
	}
	leader, term := leaderOf(a, bb)
	name, token, err := leader.c.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := "a"
	if leader == bb {
		want = "b"
	}
	if name != want || token != term.Token {
		t.Fatalf("Leader() = %q/%d, want %q/%d", name, token, want, term.Token)
	}
}

func TestClaimIsExactlyOnceUnderConcurrency(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

	var won, taken atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			switch err := r.c.Claim(context.Background(), term, "job", slot, []byte("x")); {
			case err == nil:
				won.Add(1)
			case errors.Is(err, coord.ErrSlotTaken):
				taken.Add(1)
			default:
				t.Errorf("claim: %v", err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || taken.Load() != 15 {
		t.Fatalf("won %d, taken %d; want 1 and 15", won.Load(), taken.Load())
	}
	if err := r.c.FinishSlot(context.Background(), term, "job", slot, "run-1", []byte("done"), 0, 0); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if v, err := r.c.SlotValue(context.Background(), "job", slot); err != nil || string(v) != "done" {
		t.Fatalf("slot after finish: %q, %v; want the result", v, err)
	}
	// A slot without a claim keeps the run record, but gets no slot key:
	// a result never stands in for a claim.
	if err := r.c.FinishSlot(context.Background(), term, "job", slot.Add(time.Second), "run-2", []byte("done"), 0, 0); err != nil {
		t.Fatalf("finish of an unclaimed slot: %v", err)
	}
	if v, err := r.c.SlotValue(context.Background(), "job", slot.Add(time.Second)); err != nil || v != nil {
		t.Fatalf("finishing an unclaimed slot created its key: %q, %v", v, err)
	}
	if runs, err := r.c.Runs(context.Background(), "job", 10); err != nil || len(runs) != 2 {
		t.Fatalf("%d run records, %v; want 2", len(runs), err)
	}
}

// A replica whose lease is gone (as after a long pause) must not claim or
// record anything, even before it notices itself.
func TestStaleTermIsFenced(t *testing.T) {
	b := setup(t)
	a := b.replica(t, "a")
	waitFor(t, "a leads", 10*time.Second, func() bool { return a.c.Term() != nil })
	stale := a.c.Term()
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := a.c.Claim(context.Background(), stale, "job", slot, []byte("a")); err != nil {
		t.Fatal(err)
	}

	// Another client deletes a's election key: exactly what the server does
	// when a's lease expires while a is paused.
	admin := b.client(t)
	resp, err := admin.Get(context.Background(), "/pacer/test/leader/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get leader key: %v %v", err, resp)
	}
	if _, err := admin.Delete(context.Background(), string(resp.Kvs[0].Key)); err != nil {
		t.Fatal(err)
	}

	if err := a.c.Claim(context.Background(), stale, "job", slot.Add(time.Second), []byte("a")); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("claim with stale term: %v, want ErrNotLeader", err)
	}
	if err := a.c.FinishSlot(context.Background(), stale, "job", slot, "late", []byte("late"), 0, 0); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("finish with stale term: %v, want ErrNotLeader", err)
	}
	select {
	case <-stale.Context().Done():
	default:
		t.Fatal("stale term's context not cancelled")
	}
	got, err := admin.Get(context.Background(), fmt.Sprintf("/pacer/test/slots/job/%019d", slot.UnixNano()))
	if err != nil || string(got.Kvs[0].Value) != "a" {
		t.Fatalf("claim record was overwritten: %v %s", err, got.Kvs[0].Value)
	}
	// a campaigns again and leads with a higher token.
	waitFor(t, "a leads again", 10*time.Second, func() bool { return a.c.Term() != nil })
	if fresh := a.c.Term(); fresh.Token <= stale.Token {
		t.Fatalf("new token %d not above stale %d", fresh.Token, stale.Token)
	}
}

func TestResignHandsOverQuickly(t *testing.T) {
	b := setup(t)
	a, bb := b.replica(t, "a"), b.replica(t, "b")
	waitFor(t, "a leader", 10*time.Second, func() bool { r, _ := leaderOf(a, bb); return r != nil })
	old, oldTerm := leaderOf(a, bb)
	next := a
	if old == a {
		next = bb
	}
	start := time.Now()
	old.close()
	// Under the 2s TTL: the lease was revoked, not left to expire (which
	// would take the TTL plus the election). BenchmarkGracefulHandover
	// measures the actual time.
	waitFor(t, "hand-over", 1900*time.Millisecond, func() bool { return next.c.Term() != nil })
	t.Logf("hand-over took %s", time.Since(start))
	if next.c.Term().Token <= oldTerm.Token {
		t.Fatal("token did not increase across terms")
	}
	if oldTerm.Context().Err() == nil {
		t.Fatal("old term's context still live")
	}
}

func TestClaimsOlderThanRetentionArePruned(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{t0, t0.Add(30 * time.Minute), t0.Add(90 * time.Minute)} {
		if err := r.c.Claim(context.Background(), term, "job", at, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := b.client(t).Get(context.Background(), "/pacer/test/slots/job/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2 {
		t.Fatalf("%d claims kept, want 2 (retention 1h)", len(resp.Kvs))
	}

	// The pruned slot's key is gone, but it ran: a clock that far behind
	// must not run it again, in this term or the next.
	if err := r.c.Claim(context.Background(), term, "job", t0, []byte("again")); !errors.Is(err, coord.ErrSlotTooOld) {
		t.Fatalf("claim of a pruned slot: %v, want ErrSlotTooOld", err)
	}
	r.close()
	next := b.replica(t, "b")
	waitFor(t, "b leads", 10*time.Second, func() bool { return next.c.Term() != nil })
	if err := next.c.Claim(context.Background(), next.c.Term(), "job", t0, []byte("again")); !errors.Is(err, coord.ErrSlotTooOld) {
		t.Fatalf("claim of a pruned slot in the next term: %v, want ErrSlotTooOld", err)
	}
	// Slots at or after the horizon (t0+30m) are decided by their keys.
	if err := next.c.Claim(context.Background(), next.c.Term(), "job", t0.Add(30*time.Minute), []byte("again")); !errors.Is(err, coord.ErrSlotTaken) {
		t.Fatalf("claim of a kept slot: %v, want ErrSlotTaken", err)
	}
	if err := next.c.Claim(context.Background(), next.c.Term(), "job", t0.Add(31*time.Minute), []byte("x")); err != nil {
		t.Fatalf("claim of a new slot after the horizon: %v", err)
	}
}

// A horizon that moved behind the cache's back (a batch still in flight, or
// one whose transaction timed out but landed) is noticed by the claim
// transaction itself, which compares each job's horizon revision: the slot
// is refused, not claimed again because its key is gone.
func TestClaimSeesAHorizonMovedBehindTheCache(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := r.c.Claim(context.Background(), term, "job", t0, []byte("ran")); err != nil {
		t.Fatal(err)
	}
	// What a prune at slot t0+70m writes, applied without the leader's
	// cache knowing: t0's claim deleted, the horizon at t0+10m.
	cli := b.client(t)
	if _, err := cli.Txn(context.Background()).Then(
		clientv3.OpDelete(fmt.Sprintf("/pacer/test/slots/job/%019d", t0.UnixNano())),
		clientv3.OpPut("/pacer/test/horizons/job", fmt.Sprint(t0.Add(10*time.Minute).UnixNano())),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := r.c.Claim(context.Background(), term, "job", t0, []byte("again")); !errors.Is(err, coord.ErrSlotTooOld) {
		t.Fatalf("claim of slot t0 after its claim was pruned behind the cache: %v, want ErrSlotTooOld", err)
	}
	if err := r.c.Claim(context.Background(), term, "job", t0.Add(11*time.Minute), []byte("x")); err != nil {
		t.Fatalf("claim after the refreshed horizon: %v", err)
	}
}

func freeAddrB(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestLeadershipIsTraced(t *testing.T) {
	b := setup(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c := coord.New(coord.Options{Client: b.client(t), Cluster: "test", Node: "a", LeaseTTL: 2 * time.Second, Tracer: tp.Tracer("t")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	waitFor(t, "leadership", 10*time.Second, func() bool { return c.Term() != nil })
	token := c.Term().Token
	cancel()
	<-done
	names := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		names[s.Name()] = s
	}
	el, term := names["pacer.election"], names["pacer.leadership"]
	if el == nil || term == nil {
		t.Fatalf("spans: %v", names)
	}
	if len(term.Events()) != 1 || term.Events()[0].Name != "leadership ended" {
		t.Fatalf("leadership span events: %v", term.Events())
	}
	var gotToken int64
	for _, a := range term.Attributes() {
		if a.Key == "pacer.fencing_token" {
			gotToken = a.Value.AsInt64()
		}
	}
	if gotToken != token {
		t.Fatalf("span token %d, want %d", gotToken, token)
	}
}
