package coord_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/shard"
)

// roster is a Roster the test changes by hand (members.go is the real
// one, tested through real processes in cmd/pacer).
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
	return slices.Clone(r.nodes), r.since, r.changed
}

func (r *roster) set(nodes ...string) {
	r.mu.Lock()
	r.nodes, r.since = nodes, time.Now()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// transitions records every term that started and ended, per replica.
type transitions struct {
	mu     sync.Mutex
	events []transition
}

type transition struct {
	node    string
	leading bool
	shard   int
	token   int64
	at      time.Time
	cause   error
}

func (tr *transitions) hook(node string) func(bool, *coord.Term) {
	return func(leading bool, t *coord.Term) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		e := transition{node: node, leading: leading, shard: t.Shard, token: t.Token, at: time.Now()}
		if !leading {
			e.cause = context.Cause(t.Context())
		}
		tr.events = append(tr.events, e)
	}
}

func (tr *transitions) all() []transition {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

// overlaps returns, per shard, the terms of two replicas that overlapped
// in time as the replicas themselves saw them (start of one before the
// end of the other).
func (tr *transitions) overlaps() []string {
	type span struct {
		node       string
		start, end time.Time
	}
	open := map[string]*span{} // node/shard
	var spans = map[int][]*span{}
	for _, e := range tr.all() {
		k := fmt.Sprintf("%s/%d", e.node, e.shard)
		if e.leading {
			s := &span{node: e.node, start: e.at}
			open[k] = s
			spans[e.shard] = append(spans[e.shard], s)
		} else if s := open[k]; s != nil {
			s.end = e.at
			delete(open, k)
		}
	}
	var out []string
	for n, ss := range spans {
		for i, a := range ss {
			for _, b := range ss[i+1:] {
				if a.node == b.node {
					continue
				}
				aEnd, bEnd := a.end, b.end
				if aEnd.IsZero() {
					aEnd = time.Now()
				}
				if bEnd.IsZero() {
					bEnd = time.Now()
				}
				if a.start.Before(bEnd) && b.start.Before(aEnd) {
					out = append(out, fmt.Sprintf("shard %d: %s and %s", n, a.node, b.node))
				}
			}
		}
	}
	return out
}

type shardReplica struct {
	*replica
	node string
}

func (b *bundle) shardReplica(t *testing.T, node string, cli *clientv3.Client, o coord.Options) *shardReplica {
	t.Helper()
	if cli == nil {
		cli = b.client(t)
	}
	o.Client, o.Cluster, o.Node = cli, "test", node
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 2 * time.Second
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = time.Second
	}
	c := coord.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{c: c, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(r.close)
	return &shardReplica{replica: r, node: node}
}

func (r *shardReplica) led() []int {
	var out []int
	for _, t := range r.c.Terms() {
		out = append(out, t.Shard)
	}
	return out
}

// settled reports whether each replica leads exactly the shards the
// roster's assignment gives it.
func settled(shards int, nodes []string, rs ...*shardReplica) bool {
	a := shard.Assign(shards, nodes)
	for _, r := range rs {
		if !slices.Equal(r.led(), shard.Owned(a, r.node)) {
			return false
		}
	}
	return true
}

// Three replicas split the shards as the assignment says, each shard led
// by one of them, under its own election: every replica's terms have
// tokens of their own shard, and State shows who leads which.
func TestShardsSplitAcrossReplicas(t *testing.T) {
	b := setup(t)
	const shards = 8
	ro := newRoster("a", "b", "c")
	var tr transitions
	var rs []*shardReplica
	for _, n := range []string{"a", "b", "c"} {
		rs = append(rs, b.shardReplica(t, n, nil, coord.Options{Shards: shards, Roster: ro, Settle: 200 * time.Millisecond,
			OnTransition: tr.hook(n)}))
	}
	waitFor(t, "the assignment", 15*time.Second, func() bool { return settled(shards, []string{"a", "b", "c"}, rs...) })
	total := 0
	for _, r := range rs {
		if n := len(r.led()); n < shards/3 || n > shards/3+1 {
			t.Errorf("%s leads %d of %d shards", r.node, n, shards)
		}
		total += len(r.led())
	}
	if total != shards {
		t.Fatalf("%d shards led, want %d", total, shards)
	}
	if o := tr.overlaps(); len(o) > 0 {
		t.Fatalf("shards led twice at once: %v", o)
	}
	st, err := rs[0].c.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := shard.Assign(shards, []string{"a", "b", "c"})
	for n, s := range st.Shards {
		if s.Leader != want[n] || s.Assigned != want[n] || s.FencingToken == 0 {
			t.Errorf("State: shard %d led by %q (token %d), assigned %q; want %q", n, s.Leader, s.FencingToken, s.Assigned, want[n])
		}
	}
	if st.Leader != want[0] || len(st.Members) != 3 || st.ShardCount != shards {
		t.Errorf("State: leader %q, members %v, %d shards; want %q, 3 members, %d", st.Leader, st.Members, st.ShardCount, want[0], shards)
	}
}

// A replica joining gets its shards by hand-over: the leader stops firing,
// drains, ends its term, leaves a mark, resigns; the newcomer leads right
// after, never at the same time, and takes the mark (once).
func TestJoiningReplicaGetsShardsByHandOver(t *testing.T) {
	b := setup(t)
	const shards = 4
	ro := newRoster("a")
	var tr transitions
	var mu sync.Mutex
	drained := map[int]int{} // shard -> Drain calls
	drain := func(ctx context.Context, term *coord.Term) {
		if !term.Draining() {
			t.Errorf("Drain called for shard %d before it stopped firing", term.Shard)
		}
		mu.Lock()
		drained[term.Shard]++
		mu.Unlock()
	}
	opts := func(n string) coord.Options {
		return coord.Options{Shards: shards, Roster: ro, Settle: 300 * time.Millisecond, OnTransition: tr.hook(n), Drain: drain}
	}
	a := b.shardReplica(t, "a", nil, opts("a"))
	waitFor(t, "a leads every shard", 10*time.Second, func() bool { return len(a.led()) == shards })
	bb := b.shardReplica(t, "b", nil, opts("b"))
	joined := time.Now()
	ro.set("a", "b")
	waitFor(t, "the assignment", 10*time.Second, func() bool { return settled(shards, []string{"a", "b"}, a, bb) })
	took := time.Since(joined)
	if took < 300*time.Millisecond {
		t.Fatalf("shards moved %s after the join, before the settle delay (300ms)", took)
	}
	if o := tr.overlaps(); len(o) > 0 {
		t.Fatalf("shards led twice at once: %v", o)
	}
	moved := shard.Owned(shard.Assign(shards, []string{"a", "b"}), "b")
	for _, n := range moved {
		mu.Lock()
		d := drained[n]
		mu.Unlock()
		if d != 2 {
			t.Errorf("shard %d: Drain called %d times, want 2 (runs end, then records)", n, d)
		}
		term := bb.c.TermOf(n)
		h, ok, err := bb.c.TakeHandOver(context.Background(), term)
		if err != nil || !ok || h.Node != "a" || h.Shard != n || h.FiringStopped.After(term.Since) {
			t.Errorf("shard %d: hand-over mark %+v, %v, %v", n, h, ok, err)
		}
		if _, ok, _ := bb.c.TakeHandOver(context.Background(), term); ok {
			t.Errorf("shard %d: the mark was taken twice", n)
		}
	}
	for _, e := range tr.all() {
		if !e.leading && e.node == "a" && !errors.Is(e.cause, coord.ErrHandedOver) {
			t.Errorf("a's term of shard %d ended with %v, want a hand-over", e.shard, e.cause)
		}
	}
}

// A replica that comes and goes faster than the settle delay moves no
// shard: the leader keeps every one.
func TestFlappingReplicaMovesNothing(t *testing.T) {
	b := setup(t)
	const shards = 4
	ro := newRoster("a")
	var tr transitions
	a := b.shardReplica(t, "a", nil, coord.Options{Shards: shards, Roster: ro, Settle: time.Second, OnTransition: tr.hook("a")})
	b.shardReplica(t, "b", nil, coord.Options{Shards: shards, Roster: ro, Settle: time.Second, OnTransition: tr.hook("b")})
	waitFor(t, "a leads every shard", 10*time.Second, func() bool { return len(a.led()) == shards })
	for range 5 {
		ro.set("a", "b")
		time.Sleep(300 * time.Millisecond) // the flapping itself, not synchronisation
		ro.set("a")
		time.Sleep(300 * time.Millisecond)
	}
	if ev := tr.all(); len(ev) != shards || len(a.led()) != shards {
		t.Fatalf("flapping moved shards: %d transitions (want %d starts), a leads %v", len(ev), shards, a.led())
	}
}

// A replica cut off from etcd fences itself, every shard at once, before
// the others take its shards (after its lease expires, with no settle
// delay); tokens grow.
func TestCutOffReplicasShardsAreTakenAfterItFenced(t *testing.T) {
	b := setup(t)
	const shards, ttl = 6, 2 * time.Second
	hole, cliA := b.throughHole(t)
	ro := newRoster("a", "b", "c")
	var tr transitions
	o := func(n string) coord.Options {
		return coord.Options{Shards: shards, Roster: ro, Settle: 10 * time.Second, LeaseTTL: ttl, OnTransition: tr.hook(n)}
	}
	a := b.shardReplica(t, "a", cliA, o("a"))
	bb := b.shardReplica(t, "b", nil, o("b"))
	c := b.shardReplica(t, "c", nil, o("c"))
	waitFor(t, "the assignment", 15*time.Second, func() bool { return settled(shards, []string{"a", "b", "c"}, a, bb, c) })
	lost := a.led()
	before := map[int]int64{}
	for _, n := range lost {
		before[n] = a.c.TermOf(n).Token
	}
	cut := time.Now()
	hole.SetCut(true)
	// The roster drops a when its member record expires (here: by hand,
	// as the membership would after the TTL).
	waitFor(t, "a fences", 2*ttl, func() bool { return len(a.led()) == 0 })
	fenced := time.Since(cut)
	ro.set("b", "c")
	waitFor(t, "b and c lead every shard", 3*ttl, func() bool { return len(bb.led())+len(c.led()) == shards })
	if fenced >= ttl {
		t.Errorf("a fenced itself %s after the cut; the TTL is %s", fenced, ttl)
	}
	if o := tr.overlaps(); len(o) > 0 {
		t.Fatalf("shards led twice at once: %v", o)
	}
	for _, n := range lost {
		var term *coord.Term
		if term = bb.c.TermOf(n); term == nil {
			term = c.c.TermOf(n)
		}
		if term.Token <= before[n] {
			t.Errorf("shard %d: token %d after the failover, %d before", n, term.Token, before[n])
		}
	}
	for _, e := range tr.all() {
		if !e.leading && e.node == "a" && !errors.Is(e.cause, coord.ErrSelfFenced) {
			t.Errorf("a's term of shard %d ended with %v, want self-fencing", e.shard, e.cause)
		}
	}
}

// A mark from a term before the one that just ended (a crash came in
// between) holds back only the slots of its drain: the slots since its
// resignation were missed, not held back. A mark taken by the next term
// promptly holds back every slot up to that term. And no term takes a mark
// twice.
func TestStaleHandOverMarkHoldsBackItsDrainOnly(t *testing.T) {
	b := setup(t)
	const ttl = 2 * time.Second
	hole, cliB := b.throughHole(t)
	ro := newRoster("a")
	o := coord.Options{Shards: 1, Roster: ro, Settle: 100 * time.Millisecond, LeaseTTL: ttl, RequestTimeout: 500 * time.Millisecond}
	a := b.shardReplica(t, "a", nil, o)
	waitFor(t, "a leads", 10*time.Second, func() bool { return a.c.TermOf(0) != nil })
	bb := b.shardReplica(t, "b", cliB, o)
	ro.set("b")
	waitFor(t, "b leads", 10*time.Second, func() bool { return bb.c.TermOf(0) != nil })
	time.Sleep(time.Second) // b leads a while (the scenario, not synchronisation)
	hole.SetCut(true)       // and dies without taking a's mark or leaving one
	waitFor(t, "b fences", 2*ttl, func() bool { return bb.c.TermOf(0) == nil })
	ro.set("a")
	waitFor(t, "a leads again", 3*ttl, func() bool { return a.c.TermOf(0) != nil })
	if h, ok, err := a.c.TakeHandOver(context.Background(), a.c.TermOf(0)); !ok || err != nil || h.Node != "a" || !h.HeldUntil.Equal(h.Resigned) {
		t.Fatalf("a's own mark of its earlier term, %s old: %+v, %v, %v; want it taken, holding back up to its resignation only",
			time.Since(h.Resigned), h, ok, err)
	}

	// A fresh mark is taken once.
	ro.set("b")
	hole.SetCut(false)
	waitFor(t, "b leads again", 4*ttl, func() bool { return bb.c.TermOf(0) != nil })
	term := bb.c.TermOf(0)
	if h, ok, err := bb.c.TakeHandOver(context.Background(), term); !ok || err != nil || h.Node != "a" || !h.HeldUntil.IsZero() {
		t.Fatalf("a's hand-over mark: %+v, %v, %v", h, ok, err)
	}
	if _, ok, _ := bb.c.TakeHandOver(context.Background(), term); ok {
		t.Fatal("the mark was taken twice")
	}
}

// An election key of this replica's session that no campaign holds (a put
// whose answer was lost) is removed, or it would hold the shard's election
// for as long as the replica lives.
func TestOrphanElectionKeyIsRemoved(t *testing.T) {
	b := setup(t)
	const shards = 2
	// Shard 1 goes to "nobody-else", a member that never runs: a leads
	// only shard 0, and campaigns for nothing else.
	ro := newRoster("a", "nobody-else")
	owner := shard.Assign(shards, []string{"a", "nobody-else"})
	mine := slices.Index(owner, "a")
	other := 1 - mine
	a := b.shardReplica(t, "a", nil, coord.Options{Shards: shards, Roster: ro})
	waitFor(t, "a leads its shard", 10*time.Second, func() bool { return a.c.TermOf(mine) != nil })
	cli := b.client(t)
	ctx := context.Background()
	resp, err := cli.Get(ctx, fmt.Sprintf("/pacer/test/leader/%d/", mine), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("a's election key: %v, %v", resp, err)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	orphan := fmt.Sprintf("/pacer/test/leader/%d/%x", other, lease)
	if _, err := cli.Put(ctx, orphan, "a", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the orphan key removed", 10*time.Second, func() bool {
		r, err := cli.Get(ctx, orphan)
		return err == nil && len(r.Kvs) == 0
	})
	if a.c.TermOf(mine) == nil {
		t.Fatal("a stopped leading its own shard")
	}
}

// Each shard's leaders record their epochs under the shard, and a shard's
// epochs are its own: another shard's leader is not in them.
func TestEpochsArePerShard(t *testing.T) {
	b := setup(t)
	const shards = 2
	ro := newRoster("a", "b")
	a := b.shardReplica(t, "a", nil, coord.Options{Shards: shards, Roster: ro})
	bb := b.shardReplica(t, "b", nil, coord.Options{Shards: shards, Roster: ro})
	waitFor(t, "the assignment", 10*time.Second, func() bool { return settled(shards, []string{"a", "b"}, a, bb) })
	owner := shard.Assign(shards, []string{"a", "b"})
	byName := map[string]*shardReplica{"a": a, "b": bb}
	ctx := context.Background()
	sets := []coord.JobSet{jobSet("x"), jobSet("y")}
	for n := range shards {
		r := byName[owner[n]]
		if err := r.c.RecordEpoch(ctx, r.c.TermOf(n), sets[n], time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for n := range shards {
		es, err := a.c.Epochs(ctx, n)
		if err != nil || len(es) != 1 {
			t.Fatalf("shard %d: epochs %+v, %v", n, es, err)
		}
		if e := es[0]; e.Shard != n || e.Node != owner[n] || e.JobSet != sets[n].Fingerprint || e.Token != byName[owner[n]].c.TermOf(n).Token {
			t.Errorf("shard %d: epoch %+v, want %s's with set %s", n, e, owner[n], coord.Short(sets[n].Fingerprint))
		}
	}
}

// Claims and records of several shards' terms share transactions (a
// replica leads many shards, and their slots come due together); a stale
// term fails only its own requests, and ends, while the others' land.
func TestClaimsOfSeveralTermsInOneBatch(t *testing.T) {
	b := setup(t)
	const shards = 2
	a := b.shardReplica(t, "a", nil, coord.Options{Shards: shards})
	waitFor(t, "a leads both shards", 10*time.Second, func() bool { return len(a.led()) == shards })
	t0, t1 := a.c.TermOf(0), a.c.TermOf(1)
	// The election key of shard 1 deleted behind a's back.
	cli := b.client(t)
	ctx := context.Background()
	if _, err := cli.Delete(ctx, "/pacer/test/leader/1/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	// Jobs i of shard i%2: the even ones are shard 0's, the odd ones 1's.
	jobs := make([]string, 8)
	for n, i := 0, 0; i < len(jobs); n++ {
		if id := fmt.Sprintf("job-%d", n); shard.Of(id, shards) == i%2 {
			jobs[i] = id
			i++
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i := range errs {
		term := t0
		if i%2 == 1 {
			term = t1
		}
		wg.Go(func() { errs[i] = a.c.Claim(ctx, term, jobs[i], slot, []byte(`{"state":"running"}`)) })
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i%2 == 0 && err != nil:
			t.Errorf("claim %d of the live term: %v", i, err)
		case i%2 == 1 && !errors.Is(err, coord.ErrNotLeader):
			t.Errorf("claim %d of the stale term: %v, want ErrNotLeader", i, err)
		}
	}
	if t1.Context().Err() == nil || t0.Context().Err() != nil {
		t.Fatalf("after the claims: shard 1's term ended %v, shard 0's %v; want only shard 1's", t1.Context().Err(), t0.Context().Err())
	}
	// Records too: shard 0's lands, a record under the ended term does not.
	if err := a.c.FinishSlot(ctx, t0, jobs[0], slot, "r0", []byte("{}"), time.Time{}, 10, 0); err != nil {
		t.Fatalf("record of the live term: %v", err)
	}
	if err := a.c.FinishSlot(ctx, t1, jobs[1], slot, "r1", []byte("{}"), time.Time{}, 10, 0); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("record of the stale term: %v, want ErrNotLeader", err)
	}
	jc, err := a.c.JobClaims(ctx, jobs[0])
	if err != nil || len(jc.Slots) != 1 || len(jc.Open) != 0 {
		t.Fatalf("claims of %s after its record: %+v, %v; want the slot finished", jobs[0], jc, err)
	}
	// A claim under another shard's term is refused: a job's claims are
	// decided by the leader of its shard only.
	if err := a.c.Claim(ctx, t0, jobs[1], slot.Add(time.Second), []byte(`{}`)); err == nil || errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("claim of shard 1's job under shard 0's term: %v, want refused", err)
	}
}

// A term's copy of the claim keys holds its own shard's jobs only, read
// from etcd when it starts (so a replica's memory falls with the replica
// count), and the claims another replica made under the shard's earlier
// term are in it: none of their slots can be claimed again.
func TestClaimCopyHoldsItsShardsJobs(t *testing.T) {
	b := setup(t)
	const shards = 2
	a := b.shardReplica(t, "a", nil, coord.Options{Shards: shards})
	waitFor(t, "a leads both shards", 10*time.Second, func() bool { return len(a.led()) == shards })
	ctx := context.Background()
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	byShard := map[int][]string{}
	for n := 0; len(byShard[0]) < 3 || len(byShard[1]) < 3; n++ {
		id := fmt.Sprintf("job-%d", n)
		s := shard.Of(id, shards)
		if len(byShard[s]) == 3 {
			continue
		}
		byShard[s] = append(byShard[s], id)
		if err := a.c.Claim(ctx, a.c.TermOf(s), id, slot, []byte(`{"state":"running"}`)); err != nil {
			t.Fatal(err)
		}
	}
	a.close()
	c := b.shardReplica(t, "c", nil, coord.Options{Shards: shards})
	waitFor(t, "c leads both shards", 10*time.Second, func() bool { return len(c.led()) == shards })
	for s := range shards {
		term := c.c.TermOf(s)
		got, err := c.c.Claims(ctx, term)
		if err != nil {
			t.Fatal(err)
		}
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, byShard[s]) {
			t.Errorf("shard %d's copy holds %v, want its jobs %v", s, keys, byShard[s])
		}
		for _, id := range byShard[s] {
			if err := c.c.Claim(ctx, term, id, slot, []byte(`{}`)); !errors.Is(err, coord.ErrSlotTaken) {
				t.Errorf("claim of %s's slot again under the shard's next term: %v, want ErrSlotTaken", id, err)
			}
		}
	}
}

// A replica killed (kill -9: its client gone, its lease not revoked) after
// it joined but before the membership had been calm for the settle delay
// receives no shard, though its member record and election keys outlive
// it until its lease expires: the leader hands a shard over only to a
// replica that kept its lease alive after the settle delay had passed.
func TestKilledNewcomerReceivesNoShard(t *testing.T) {
	b := setup(t)
	const shards, ttl, settle = 4, 4 * time.Second, 2 * time.Second
	ro := newRoster("a")
	var tr transitions
	o := func(n string) coord.Options {
		return coord.Options{Shards: shards, Roster: ro, Settle: settle, LeaseTTL: ttl, OnTransition: tr.hook(n)}
	}
	a := b.shardReplica(t, "a", nil, o("a"))
	waitFor(t, "a leads every shard", 10*time.Second, func() bool { return len(a.led()) == shards })
	cliB := b.client(t)
	b.shardReplica(t, "b", cliB, o("b"))
	ro.set("a", "b") // b's member record appears
	watch := b.client(t)
	var lease clientv3.LeaseID
	waitFor(t, "b waits in its shards' elections", 5*time.Second, func() bool {
		resp, err := watch.Get(context.Background(), "/pacer/test/leader/", clientv3.WithPrefix())
		if err != nil {
			return false
		}
		for _, kv := range resp.Kvs {
			if string(kv.Value) == "b" {
				lease = clientv3.LeaseID(kv.Lease)
			}
		}
		return lease != 0
	})
	time.Sleep(settle / 2) // b lives half the settle delay (the scenario, not synchronisation)
	cliB.Close()           // kill -9: no more keepalives, the lease is not revoked
	// Its lease (and, with the real membership, its member record) lives
	// on, past the settle delay, until it expires.
	waitFor(t, "b's lease expires", 2*ttl, func() bool {
		resp, err := watch.TimeToLive(context.Background(), lease)
		return err == nil && resp.TTL <= 0
	})
	ro.set("a")
	if ev := tr.all(); len(ev) != shards || len(a.led()) != shards {
		t.Fatalf("a killed newcomer moved shards: %d transitions (want %d starts), a leads %v: %+v", len(ev), shards, a.led(), ev)
	}
}

// A leader hands its shards over one at a time: the next hand-over starts
// when the one before it has resigned, and each is logged once, however
// long its runs take to drain.
func TestHandOversGoOneAtATime(t *testing.T) {
	b := setup(t)
	const shards = 8
	ro := newRoster("a")
	var mu sync.Mutex
	draining, most := 0, 0
	drain := func(ctx context.Context, term *coord.Term) {
		if term.Context().Err() != nil {
			return // the second call: the records
		}
		mu.Lock()
		draining++
		most = max(most, draining)
		mu.Unlock()
		<-time.After(200 * time.Millisecond) // runs that take a while to end (the scenario, not synchronisation)
		mu.Lock()
		draining--
		mu.Unlock()
	}
	var logs syncbuf.Buffer
	a := b.shardReplica(t, "a", nil, coord.Options{Shards: shards, Roster: ro, Settle: 300 * time.Millisecond, Drain: drain,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	waitFor(t, "a leads every shard", 10*time.Second, func() bool { return len(a.led()) == shards })
	bb := b.shardReplica(t, "b", nil, coord.Options{Shards: shards, Roster: ro, Settle: 300 * time.Millisecond})
	ro.set("a", "b")
	waitFor(t, "the assignment", 20*time.Second, func() bool { return settled(shards, []string{"a", "b"}, a, bb) })
	moved := shard.Owned(shard.Assign(shards, []string{"a", "b"}), "b")
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Errorf("%d hand-overs drained at once, want 1", most)
	}
	if n := strings.Count(logs.String(), `"msg":"handing shard over"`); n != len(moved) {
		t.Errorf("%d \"handing shard over\" lines for %d shards moved:\n%s", n, len(moved), logs.String())
	}
}

// startMember starts a replica with a membership (jobs x and y, under
// shards shards, publishing its count) and a coordinator, both acting on a
// change of the job sets' agreement after settle; stopped at the test's end.
func startMember(t *testing.T, b *bundle, node string, shards int, settle time.Duration) *coord.Coordinator {
	t.Helper()
	cli := b.client(t)
	ms := coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "test", Node: node, LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second, Settle: settle, JobSet: coord.NewShardedJobSet(map[string]string{"x": "1", "y": "2"}, shards),
		SessionLease: true, Record: coord.MemberRecord{Shards: shards}})
	c := coord.New(coord.Options{Client: cli, Cluster: "test", Node: node, LeaseTTL: 2 * time.Second, RequestTimeout: 2 * time.Second,
		Members: ms, Roster: ms, Gate: ms, Shards: shards, Settle: settle})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ms.Run(ctx) })
	wg.Go(func() { _ = c.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// A replica whose cluster.shards is not the cluster's describes the
// cluster's shards (their count, leaders and assignment), not its own
// count's, and says what its own count is.
func TestStateOfAReplicaWithAnotherShardCount(t *testing.T) {
	b := setup(t)
	start := func(node string, shards int) *coord.Coordinator {
		return startMember(t, b, node, shards, 200*time.Millisecond)
	}
	a, bb := start("a", 4), start("b", 4)
	waitFor(t, "a and b lead the 4 shards", 15*time.Second, func() bool { return len(a.Terms())+len(bb.Terms()) == 4 })
	odd := start("odd", 2)
	want := shard.Assign(4, []string{"a", "b"})
	var st coord.ClusterState
	waitFor(t, "odd's view of the cluster's 4 shards", 15*time.Second, func() bool {
		var err error
		st, err = odd.State(context.Background())
		if err != nil || st.ShardCount != 4 || st.ShardsHere != 2 || len(st.Shards) != 4 {
			return false
		}
		for n, s := range st.Shards {
			if s.Leader != want[n] || s.Assigned != want[n] {
				return false
			}
		}
		return true
	})
	if len(odd.Terms()) != 0 {
		t.Fatalf("odd leads %v", odd.Terms())
	}
}

// Attack 13, J1: a lone replica stopped gracefully and started again
// within a lease TTL takes its own mark promptly, but nobody held the
// slots back while its process was down: only its drain's slots were
// (HeldUntil is its resignation), the later ones were missed and get the
// misfire policy. Before the fix a prompt take held every slot up to the
// new term back, and they ran late whatever the policy.
func TestRestartedReplicaHoldsBackOnlyItsDrain(t *testing.T) {
	b := setup(t)
	o := coord.Options{Shards: 1, Roster: newRoster("a"), LeaseTTL: 5 * time.Second, RequestTimeout: time.Second}
	a := b.shardReplica(t, "a", nil, o)
	waitFor(t, "a leads", 10*time.Second, func() bool { return a.c.TermOf(0) != nil })
	a.close() // a graceful stop: the term is handed over, its mark left
	again := b.shardReplica(t, "a", nil, o)
	waitFor(t, "a leads again", 10*time.Second, func() bool { return again.c.TermOf(0) != nil })
	term := again.c.TermOf(0)
	h, ok, err := again.c.TakeHandOver(context.Background(), term)
	if !ok || err != nil || h.Node != "a" {
		t.Fatalf("the mark of a's first process: %+v, %v, %v", h, ok, err)
	}
	if gap := term.Since.Sub(h.Resigned); gap > o.LeaseTTL {
		t.Fatalf("the new term came %s after the resignation: not the prompt take this test is about", gap)
	}
	if !h.HeldUntil.Equal(h.Resigned) {
		t.Fatalf("held until %v, want the resignation %v: the slots while no process ran were not held back", h.HeldUntil, h.Resigned)
	}
}

// Attack 22, T1: a rolling change of cluster.shards. A job's shard depends
// on the count, so a replica leading shard 5 of 8 and one leading shard 0
// of 4 lead the same jobs: before, the replicas with the new count led the
// shards nobody held at once, beside the old count's leader, until its job
// set stepped it down after job_set_settle. Now no term of the new count
// starts until every term of the old one has ended, and every new term's
// fencing token is above every old one's.
func TestShardCountChangeNeverHasTwoLeadersForAJob(t *testing.T) {
	b := setup(t)
	jobs := map[string]string{"x": "1", "y": "2", "z": "3"}
	var tr transitions
	count := map[string]int{}
	type member struct {
		c    *coord.Coordinator
		ms   *coord.Membership
		stop func()
	}
	start := func(node string, shards int, mismatch ...string) member {
		count[node] = shards
		cli := b.client(t)
		ms := coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "test", Node: node, LeaseTTL: 2 * time.Second,
			RequestTimeout: 2 * time.Second, Settle: time.Second, JobSet: coord.NewShardedJobSet(jobs, shards), SessionLease: true,
			Record: coord.MemberRecord{Shards: shards}, Mismatch: strings.Join(mismatch, "")})
		c := coord.New(coord.Options{Client: cli, Cluster: "test", Node: node, LeaseTTL: 2 * time.Second, RequestTimeout: 2 * time.Second,
			Members: ms, Roster: ms, Gate: ms, Shards: shards, Settle: 200 * time.Millisecond, OnTransition: tr.hook(node)})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { ms.Run(ctx) })
		wg.Go(func() { _ = c.Run(ctx) })
		stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
		t.Cleanup(stop)
		return member{c, ms, stop}
	}
	led := func(ms ...member) int {
		n := 0
		for _, m := range ms {
			n += len(m.c.Terms())
		}
		return n
	}
	a, old2, old3 := start("a", 4), start("b", 4), start("c", 4)
	waitFor(t, "the three lead the 4 shards", 15*time.Second, func() bool { return led(a, old2, old3) == 4 })
	old3.stop()
	c8 := start("c8", 8) // a minority: it waits
	old2.stop()
	b8 := start("b8", 8) // the majority: the cluster switches to 8 shards
	waitFor(t, "b8 and c8 lead the 8 shards", 20*time.Second, func() bool { return led(b8, c8) == 8 && led(a) == 0 })
	// A replica with yet another count, set to lead with a differing job
	// set: it leads nothing, and says why.
	w := start("w", 2, coord.MismatchWarn)
	waitFor(t, "w's refusal", 15*time.Second, func() bool {
		ok, why, _ := w.ms.MayLead()
		return !ok && strings.Contains(fmt.Sprint(why), "runs cluster.shards 2, the cluster 8")
	})
	// And every replica's view says why, not that warn lets it lead
	// (attack 24, V1).
	waitFor(t, "b8's view of w", 15*time.Second, func() bool {
		for _, r := range b8.ms.View().Replicas {
			if r.Node == "w" {
				return strings.Contains(r.Reason, "its cluster.shards is 2, the cluster's 8") && !strings.Contains(r.Reason, "lets it lead")
			}
		}
		return false
	})

	// Each count's terms, as spans; none of the new count's may overlap
	// one of the old count's.
	type span struct {
		node       string
		shard      int
		token      int64
		start, end time.Time
	}
	var spans []*span
	open := map[string]*span{}
	for _, e := range tr.all() {
		k := fmt.Sprintf("%s/%d", e.node, e.shard)
		if e.leading {
			s := &span{node: e.node, shard: e.shard, token: e.token, start: e.at}
			spans, open[k] = append(spans, s), s
		} else if s := open[k]; s != nil {
			s.end = e.at
			delete(open, k)
		}
	}
	var maxOld int64
	for _, s := range spans {
		if count[s.node] == 4 {
			maxOld = max(maxOld, s.token)
		}
		if s.node == "w" {
			t.Errorf("w, with 2 shards, led shard %d", s.shard)
		}
	}
	for _, n := range spans {
		if count[n.node] != 8 {
			continue
		}
		if n.token <= maxOld {
			t.Errorf("%s's term of shard %d of 8 has token %d, not above the old count's highest, %d", n.node, n.shard, n.token, maxOld)
		}
		for _, o := range spans {
			if count[o.node] == 4 && (o.end.IsZero() || n.start.Before(o.end)) {
				t.Errorf("%s led shard %d of 8 from %s while %s led shard %d of 4 until %s", n.node, n.shard,
					n.start.Format("15:04:05.000"), o.node, o.shard, o.end.Format("15:04:05.000"))
			}
		}
	}
}

// R6 (attack 27): during a change of cluster.shards, a replica still at
// the old count holds election keys of its own count's shards. Those were
// shown as the cluster's shards of the same numbers, led: "4 led" while
// nobody led them under the new count. State now says whose count a key
// is of (LeaderShards).
func TestStateNamesKeysHeldUnderAnotherShardCount(t *testing.T) {
	b := setup(t)
	start := func(node string, shards int, settle time.Duration) *coord.Coordinator {
		return startMember(t, b, node, shards, settle)
	}
	// old, at 2 shards, leads both; a and b, at 4, are the majority: the
	// cluster's count is 4 (they lead nothing while a replica of another
	// count leads: a job's shard depends on the count). old steps down once that held for its settle
	// time, a minute here: the moment R6 caught, drawn out.
	old := start("old", 2, time.Minute)
	waitFor(t, "old leads its 2 shards", 15*time.Second, func() bool { return len(old.Terms()) == 2 })
	a, _ := start("a", 4, 200*time.Millisecond), start("b", 4, 200*time.Millisecond)
	var st coord.ClusterState
	waitFor(t, "a's view: shards 0 and 1 held by old under 2 shards", 15*time.Second, func() bool {
		var err error
		st, err = a.State(context.Background())
		if err != nil || st.ShardCount != 4 || len(st.Shards) != 4 {
			return false
		}
		for n, s := range st.Shards {
			if n < 2 && (s.Leader != "old" || s.LeaderShards != 2) || n >= 2 && s.LeaderShards != 0 {
				return false
			}
		}
		return true
	})
}
