package coord_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/internal/netfault"
	"github.com/pacerun/pacer/runner/coord"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	etcd     *etcdembed.Embedded
	endpoint string
}

// setup starts a real single-node etcd for one test.
// throughHole returns a proxy to b's etcd that the test can cut, and a
// client that talks to etcd through it (closed with the test).
func (b *bundle) throughHole(t *testing.T) (*netfault.Proxy, *clientv3.Client) {
	t.Helper()
	hole := netfault.New(t, b.endpoint)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{hole.Addr()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return hole, cli
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return setupWith(t, etcdembed.Options{})
}

// setupWith starts a real single-node etcd with o's quota and compaction,
// for one test.
func setupWith(t *testing.T, o etcdembed.Options) *bundle {
	t.Helper()
	e := etcdtest.Start(t, o) // its clean-up registered first, so it runs after the clients close
	return &bundle{etcd: e, endpoint: e.Endpoint()}
}

func (b *bundle) client(t *testing.T) *clientv3.Client {
	t.Helper()
	return etcdtest.Client(t, b.etcd, clientv3.Config{DialTimeout: 5 * time.Second})
}

type replica struct {
	c    *coord.Coordinator
	stop context.CancelFunc
	done chan struct{}
}

func (b *bundle) replica(t *testing.T, node string) *replica {
	t.Helper()
	c := coord.New(coord.Options{Client: b.client(t), Cluster: "test", Node: node, LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second})
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
			switch err := r.c.Claim(context.Background(), term, "job", slot, []byte(`"x"`)); {
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
	if v, err := r.c.SlotValue(context.Background(), "job", slot); err != nil || string(v) != `"x"` {
		t.Fatalf("open claim: %q, %v; want the claim", v, err)
	}
	if err := r.c.FinishSlot(context.Background(), term, "job", slot, "run-1", []byte("done"), time.Time{}, 0, 0); err != nil {
		t.Fatalf("finish: %v", err)
	}
	jc, err := r.c.JobClaims(context.Background(), "job")
	if err != nil || len(jc.Open) != 0 || !slices.Equal(jc.Slots, []time.Time{slot}) {
		t.Fatalf("claims after finish: %+v, %v; want the slot finished", jc, err)
	}
	if err := r.c.Claim(context.Background(), term, "job", slot, []byte(`"y"`)); !errors.Is(err, coord.ErrSlotTaken) {
		t.Fatalf("claim of a finished slot: %v, want ErrSlotTaken", err)
	}
	// A slot without a claim keeps the run record, but is not claimed by
	// it: a result never stands in for a claim.
	if err := r.c.FinishSlot(context.Background(), term, "job", slot.Add(time.Second), "run-2", []byte("done"), time.Time{}, 0, 0); err != nil {
		t.Fatalf("finish of an unclaimed slot: %v", err)
	}
	if jc, err := r.c.JobClaims(context.Background(), "job"); err != nil || len(jc.Slots) != 1 {
		t.Fatalf("finishing an unclaimed slot claimed it: %+v, %v", jc, err)
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
	if err := a.c.Claim(context.Background(), stale, "job", slot, []byte(`"a"`)); err != nil {
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

	if err := a.c.Claim(context.Background(), stale, "job", slot.Add(time.Second), []byte(`"a"`)); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("claim with stale term: %v, want ErrNotLeader", err)
	}
	if err := a.c.FinishSlot(context.Background(), stale, "job", slot, "late", []byte("late"), time.Time{}, 0, 0); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("finish with stale term: %v, want ErrNotLeader", err)
	}
	select {
	case <-stale.Context().Done():
	default:
		t.Fatal("stale term's context not cancelled")
	}
	jc, err := a.c.JobClaims(context.Background(), "job")
	if err != nil || len(jc.Open) != 1 || !jc.Open[0].Time.Equal(slot) || string(jc.Open[0].Claim) != `"a"` || len(jc.Slots) != 0 {
		t.Fatalf("claims after the stale writes: %+v, %v; want the first claim alone, still open", jc, err)
	}
	// a campaigns again and leads with a higher token.
	waitFor(t, "a leads again", 10*time.Second, func() bool { return a.c.Term() != nil })
	if fresh := a.c.Term(); fresh.Token <= stale.Token {
		t.Fatalf("new token %d not above stale %d", fresh.Token, stale.Token)
	}
}

// Attack 17, K4: a replica that wakes from a freeze past its fence
// deadline writes nothing more under its terms, even before its guard's
// timer has fired and while etcd still keeps its lease (an embedded member
// frozen with it): a run record, a trigger's end and a claim are refused
// with ErrSelfFenced and the session ends. Before the fix the writes went
// through etcd's guard, and a run its plugin had killed at the deadline
// was recorded as a success.
func TestWritesPastTheFenceDeadlineAreRefused(t *testing.T) {
	b := setup(t)
	a := b.replica(t, "a")
	slot := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	// Each write is prepared under the live term, then sent past the
	// deadline.
	writes := []struct {
		name    string
		prepare func(t *testing.T, term *coord.Term) (write func() error)
	}{
		{"claim", func(t *testing.T, term *coord.Term) func() error {
			return func() error { return a.c.Claim(context.Background(), term, "claimed", slot, []byte(`"a"`)) }
		}},
		{"finish", func(t *testing.T, term *coord.Term) func() error {
			if err := a.c.Claim(context.Background(), term, "finished", slot, []byte(`"a"`)); err != nil {
				t.Fatal(err)
			}
			return func() error {
				return a.c.FinishSlot(context.Background(), term, "finished", slot, "run-finished", []byte("success"), time.Time{}, 0, 0)
			}
		}},
		{"trigger", func(t *testing.T, term *coord.Term) func() error {
			if _, err := a.c.RequestTrigger(context.Background(), "triggered", "req", []byte(`{"pending":true}`),
				coord.Idempotency{Key: "req", Receipt: []byte("req")}, coord.TriggerLimits{}); err != nil {
				t.Fatal(err)
			}
			tr, _, err := a.c.GetTrigger(context.Background(), "triggered", "req")
			if err != nil {
				t.Fatal(err)
			}
			rev, err := a.c.RunTrigger(context.Background(), term, tr, []byte(`{"claim":1}`))
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				return a.c.FinishTrigger(context.Background(), term, "triggered", "req", rev, "run-triggered", []byte("success"), time.Time{}, 0, 0)
			}
		}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			waitFor(t, "a leads", 10*time.Second, func() bool { return a.c.Term() != nil })
			term := a.c.Term()
			write := w.prepare(t, term)
			var err error
			for try := 0; ; try++ {
				// Set the deadline just before the write: the guard moves it
				// on when a keepalive is acknowledged, every TTL/3.
				unchanged := term.PassFenceDeadline()
				err = write()
				if unchanged() || try == 5 {
					break
				}
			}
			if !errors.Is(err, coord.ErrSelfFenced) || !errors.Is(err, coord.ErrNotLeader) {
				t.Fatalf("write past the fence deadline: %v, want ErrSelfFenced and ErrNotLeader", err)
			}
			select {
			case <-term.Context().Done():
				if !errors.Is(context.Cause(term.Context()), coord.ErrSelfFenced) {
					t.Fatalf("term ended with %v, want ErrSelfFenced", context.Cause(term.Context()))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the term did not end after a write past its fence deadline")
			}
		})
	}
	// Nothing of the refused writes is in etcd.
	if jc, err := a.c.JobClaims(context.Background(), "claimed"); err != nil || len(jc.Open) != 0 {
		t.Fatalf("claims of the refused claim: %+v, %v; want none open", jc, err)
	}
	if jc, err := a.c.JobClaims(context.Background(), "finished"); err != nil || len(jc.Open) != 1 {
		t.Fatalf("claims of the refused finish: %+v, %v; want its slot still open", jc, err)
	}
	for _, job := range []string{"finished", "triggered"} {
		if runs, err := a.c.Runs(context.Background(), job, 10); err != nil || len(runs) != 0 {
			t.Fatalf("%s: %d records, %v; want none", job, len(runs), err)
		}
	}
	if _, ok, err := a.c.GetTrigger(context.Background(), "triggered", "req"); err != nil || !ok {
		t.Fatalf("the trigger request: kept %v, %v; want it kept for the next leader", ok, err)
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

// A job's claims stay in one key of bounded size however many slots it
// runs, and decide every slot by comparison: finished slots kept in the
// key are taken, those before its floor too old, any other slot is free.
// A new term (another replica) decides the same from the key alone.
func TestClaimKeyStaysBoundedAndDecidesBySlot(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const n = 200
	for i := range n {
		s := t0.Add(time.Duration(i) * time.Second)
		if err := r.c.Claim(context.Background(), term, "job", s, []byte(`{"run":"r"}`)); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		// Each a success, so the bound holds with the last success kept.
		if err := r.c.FinishSlot(context.Background(), term, "job", s, fmt.Sprintf("run-%03d", i), []byte("{}"), s.Add(time.Second), 0, 0); err != nil {
			t.Fatalf("finish %d: %v", i, err)
		}
	}
	cli := b.client(t)
	resp, err := cli.Get(context.Background(), "/pacer/test/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	claimKeys := 0
	for _, kv := range resp.Kvs {
		if strings.HasPrefix(string(kv.Key), "/pacer/test/claims/") {
			claimKeys++
		}
	}
	if claimKeys != 1 {
		t.Fatalf("%d claim keys after %d slots, want 1", claimKeys, n)
	}
	v, err := cli.Get(context.Background(), "/pacer/test/claims/job")
	if err != nil {
		t.Fatal(err)
	}
	if size := len(v.Kvs[0].Value); size > 512 {
		t.Fatalf("claim key holds %d bytes after %d slots: %s", size, n, v.Kvs[0].Value)
	}
	last := t0.Add((n - 1) * time.Second)
	check := func(c *coord.Coordinator, term *coord.Term) {
		t.Helper()
		for _, tc := range []struct {
			slot time.Time
			want error
		}{
			{t0, coord.ErrSlotTooOld},                          // long before the floor
			{last.Add(-20 * time.Second), coord.ErrSlotTooOld}, // at or before the floor
			{last.Add(-5 * time.Second), coord.ErrSlotTaken},   // kept
			{last, coord.ErrSlotTaken},
			{last.Add(-5*time.Second + time.Millisecond), nil}, // between kept slots, never claimed
			{last.Add(time.Second), nil},
		} {
			if err := c.Claim(context.Background(), term, "job", tc.slot, []byte("{}")); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Errorf("claim of %s: %v, want %v", tc.slot.Format(time.TimeOnly), err, tc.want)
			}
		}
	}
	check(r.c, term)
	r.close()
	next := b.replica(t, "b")
	waitFor(t, "b leads", 10*time.Second, func() bool { return next.c.Term() != nil })
	// The slots claimed in a's last check are taken now; older ones as before.
	if err := next.c.Claim(context.Background(), next.c.Term(), "job", last.Add(time.Second), []byte("{}")); !errors.Is(err, coord.ErrSlotTaken) {
		t.Fatalf("next term, claim of a slot claimed before: %v, want ErrSlotTaken", err)
	}
	if err := next.c.Claim(context.Background(), next.c.Term(), "job", t0, []byte("{}")); !errors.Is(err, coord.ErrSlotTooOld) {
		t.Fatalf("next term, claim of the first slot: %v, want ErrSlotTooOld", err)
	}
	if err := next.c.Claim(context.Background(), next.c.Term(), "job", last.Add(2*time.Second), []byte("{}")); err != nil {
		t.Fatalf("next term, new slot: %v", err)
	}
}

// A run's success is kept in its job's claim key, in the write that ends
// the run (a triggered run's, in one more), never moving back; the shard's
// next leader, on another replica, reads it with the claims its term
// starts with (for the job's pacer_job_last_success_timestamp_seconds).
func TestLastSuccessIsKeptInTheClaimKey(t *testing.T) {
	b := setup(t)
	a := b.replica(t, "a")
	waitFor(t, "a leads", 10*time.Second, func() bool { return a.c.Term() != nil })
	term := a.c.Term()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ok := t0.Add(1500 * time.Millisecond) // when slot t0's run succeeded
	finish := func(slot, succeeded time.Time) {
		t.Helper()
		if err := a.c.Claim(ctx, term, "job", slot, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := a.c.FinishSlot(ctx, term, "job", slot, "run-"+slot.Format("150405"), []byte(`{}`), succeeded, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	lastSuccess := func(c *coord.Coordinator, job string) time.Time {
		t.Helper()
		jc, err := c.JobClaims(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		return jc.LastSuccess
	}
	finish(t0, ok)
	if got := lastSuccess(a.c, "job"); !got.Equal(ok) {
		t.Fatalf("last success after a successful slot: %v, want %v", got, ok)
	}
	finish(t0.Add(time.Second), time.Time{})            // failed
	finish(t0.Add(2*time.Second), ok.Add(-time.Second)) // an earlier success, written late
	if got := lastSuccess(a.c, "job"); !got.Equal(ok) {
		t.Fatalf("last success after a failure and an earlier success: %v, want %v still", got, ok)
	}

	// A manual-only job: its triggered run's success makes its claim key.
	if _, err := a.c.RequestTrigger(ctx, "manual", "tr", []byte(`{}`), coord.Idempotency{Key: "tr", Receipt: []byte("tr")}, coord.TriggerLimits{}); err != nil {
		t.Fatal(err)
	}
	tr, _, err := a.c.GetTrigger(ctx, "manual", "tr")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.c.RunTrigger(ctx, term, tr, []byte(`{"claim":1}`))
	if err != nil {
		t.Fatal(err)
	}
	manual := t0.Add(time.Hour)
	if err := a.c.FinishTrigger(ctx, term, "manual", "tr", rev, "run-tr", []byte(`{}`), manual, 0, 0); err != nil {
		t.Fatal(err)
	}

	a.close()
	next := b.replica(t, "b")
	waitFor(t, "b leads", 10*time.Second, func() bool { return next.c.Term() != nil })
	claims, err := next.c.Claims(ctx, next.c.Term())
	if err != nil {
		t.Fatal(err)
	}
	if got := claims["job"].LastSuccess; !got.Equal(ok) {
		t.Errorf("next leader reads job's last success %v, want %v", got, ok)
	}
	if got := claims["manual"]; !got.LastSuccess.Equal(manual) || got.Claimed() {
		t.Errorf("next leader reads the manual job's claims %+v, want its last success %v and no slot claimed", got, manual)
	}
}

// The leader decides claims from its copy of each job's claim key; a key
// changed behind its back (an operator's edit, a write that timed out but
// landed) fails the transaction's revision comparison, is read again, and
// the claim is decided on what the key now says.
func TestClaimSeesTheKeyChangedBehindTheCache(t *testing.T) {
	b := setup(t)
	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	term := r.c.Term()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if err := r.c.Claim(context.Background(), term, "job", t0, []byte(`"ran"`)); err != nil {
		t.Fatal(err)
	}
	// Behind the leader's copy: every slot through t0+10m decided, and
	// t0+20m claimed.
	cli := b.client(t)
	st := fmt.Sprintf(`{"floor":%d,"slots":[%d]}`, t0.Add(10*time.Minute).UnixNano(), t0.Add(20*time.Minute).UnixNano())
	if _, err := cli.Put(context.Background(), "/pacer/test/claims/job", st); err != nil {
		t.Fatal(err)
	}
	if err := r.c.Claim(context.Background(), term, "job", t0.Add(5*time.Minute), []byte("{}")); !errors.Is(err, coord.ErrSlotTooOld) {
		t.Fatalf("claim before the new floor: %v, want ErrSlotTooOld", err)
	}
	if err := r.c.Claim(context.Background(), term, "job", t0.Add(20*time.Minute), []byte("{}")); !errors.Is(err, coord.ErrSlotTaken) {
		t.Fatalf("claim of a slot claimed behind the cache: %v, want ErrSlotTaken", err)
	}
	if err := r.c.Claim(context.Background(), term, "job", t0.Add(11*time.Minute), []byte("{}")); err != nil {
		t.Fatalf("claim of a free slot after the refresh: %v", err)
	}
	// An unreadable key stops the job's claims, loudly, without touching it.
	if _, err := cli.Put(context.Background(), "/pacer/test/claims/job", "not json"); err != nil {
		t.Fatal(err)
	}
	if err := r.c.Claim(context.Background(), term, "job", t0.Add(30*time.Minute), []byte("{}")); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("claim with an unreadable claim key: %v, want an error naming it", err)
	}
	if v, _ := cli.Get(context.Background(), "/pacer/test/claims/job"); string(v.Kvs[0].Value) != "not json" {
		t.Fatalf("unreadable claim key overwritten: %s", v.Kvs[0].Value)
	}
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

// After etcd restarts, the election key of a term that ended while etcd
// was down (its lease could not be revoked then, and etcd restores leases
// with their full TTL) is revoked as soon as etcd answers, rather than
// lingering for a TTL: it would show as the leader and hold up the
// election. Status lists each replica once, its leader with a live lease.
func TestStaleElectionKeyIsRevokedAfterEtcdRestart(t *testing.T) {
	dir := t.TempDir()
	client, peer := etcdtest.Addrs(t)
	start := func() *etcdembed.Embedded {
		e, err := etcdembed.Start(context.Background(), etcdembed.Options{Name: "test", Dir: dir, ClientListen: client, PeerListen: peer})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := start()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 10 * time.Second
	c := coord.New(coord.Options{Client: cli, Cluster: "test", Node: "a", LeaseTTL: ttl, RequestTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		cli.Close()
		e.Close()
	}()
	waitFor(t, "leadership", 10*time.Second, func() bool { return c.Term() != nil })
	old := c.Term()
	keys, err := cli.Get(context.Background(), "/pacer/test/leader/", clientv3.WithPrefix())
	if err != nil || len(keys.Kvs) != 1 {
		t.Fatalf("election keys: %v %v", keys, err)
	}
	oldKey := string(keys.Kvs[0].Key)

	e.Close()
	waitFor(t, "the term to end while etcd is down", 2*ttl, func() bool { return old.Context().Err() != nil })
	e = start()
	restarted := time.Now()
	waitFor(t, "the stale key to go", 2*ttl, func() bool {
		r, err := cli.Get(context.Background(), oldKey)
		return err == nil && len(r.Kvs) == 0
	})
	// Its lease was restored with at least the whole TTL: only a revoke
	// removes the key sooner.
	if took := time.Since(restarted); took > ttl-2*time.Second {
		t.Fatalf("stale election key removed %s after etcd restarted; its lease would expire after %s", took.Round(time.Millisecond), ttl)
	}
	waitFor(t, "leadership again", 3*ttl, func() bool { return c.Term() != nil })
	st, err := c.State(context.Background())
	if err != nil || st.Leader != "a" || st.FencingToken != c.Term().Token || len(st.Members) != 1 {
		t.Fatalf("state %+v, %v; want a leading with its new token, listed once", st, err)
	}
}

// A replica with two election keys (a new term's, and an old one's not
// yet expired) is listed once; the leader shown is the oldest key whose
// lease is alive.
func TestStateListsEachReplicaOnce(t *testing.T) {
	b := setup(t)
	a := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return a.c.Term() != nil })
	cli := b.client(t)
	lease, err := cli.Grant(context.Background(), 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), "/pacer/test/leader/zz", "a", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	bb := b.replica(t, "b")
	waitFor(t, "b to campaign", 10*time.Second, func() bool {
		st, err := bb.c.State(context.Background())
		return err == nil && len(st.Members) == 2
	})
	st, err := bb.c.State(context.Background())
	if err != nil || fmt.Sprint(st.Members) != "[a b]" || st.Leader != "a" || st.FencingToken != a.c.Term().Token {
		t.Fatalf("state %+v, %v", st, err)
	}
}

// Attack 22, T3: a replica woken from a freeze finds its fence deadline
// passed and a keepalive answered at once, both. An answer taken in first
// moved the deadline on, and the term went on under its token, while its
// plugins, which had the same deadline, had cancelled its runs: they were
// recorded as failures. Now the guard fences on any answer taken in after
// the deadline passed.
func TestAnAnswerTakenAfterTheFenceDeadlineStillFences(t *testing.T) {
	b := setup(t)
	a := b.replica(t, "a")
	waitFor(t, "a leads", 10*time.Second, func() bool { return a.c.Term() != nil })
	term := a.c.Term()
	term.PassFenceDeadline() // the guard's timer has not fired; its next answer comes within TTL/3
	select {
	case <-term.Context().Done():
		if !errors.Is(context.Cause(term.Context()), coord.ErrSelfFenced) {
			t.Fatalf("term ended with %v, want ErrSelfFenced", context.Cause(term.Context()))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the term lives on 5 s after its fence deadline passed (the next keepalive answer moved it on)")
	}
}
