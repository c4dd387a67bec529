package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/observability"
)

// What a replica whose job set differs from the cluster's does
// (cluster.job_set_mismatch).
const (
	MismatchRefuse = "refuse" // it does not campaign, and steps down if it leads
	MismatchWarn   = "warn"   // it may lead anyway, with a warning
)

// ErrJobSetMismatch ends a term whose replica's job set is no longer the
// cluster's (cluster.job_set_mismatch: refuse), and keeps it from
// campaigning until it is again.
var ErrJobSetMismatch = errors.New("this replica's job set differs from the cluster's")

// ErrNodeNameInUse means another live replica publishes under this
// replica's node name.
var ErrNodeNameInUse = errors.New("node name in use by another replica")

// A Gate says whether this replica may lead. The Coordinator campaigns
// only while its gate allows, and steps down (resigning) when it stops
// allowing. A nil Gate always allows.
type Gate interface {
	// MayLead returns whether this replica may lead now, why not, and a
	// channel that is closed when the answer may have changed.
	MayLead() (ok bool, why error, changed <-chan struct{})
}

// MembershipOptions configure a Membership.
type MembershipOptions struct {
	Client  *clientv3.Client
	Cluster string
	Node    string
	// LeaseTTL is the member lease's TTL; whole seconds, at least 2s.
	LeaseTTL time.Duration
	// RequestTimeout bounds each etcd request. Default 5s.
	RequestTimeout time.Duration
	// Settle is how long a change in whether this replica's job set is the
	// cluster's must hold before this replica acts on it (campaigns, or
	// steps down). Default 5s. The first decision after start is at once.
	Settle time.Duration
	// Mismatch is MismatchRefuse (the default) or MismatchWarn.
	Mismatch string
	// Record is what this replica publishes besides its job set: version,
	// start time, config file.
	Record MemberRecord
	// SessionLease: the record is published on the coordinator's session
	// lease (Coordinator Options.Members calls Publish for each session),
	// so that the replica's record and its election keys share one lease.
	// Without it Run grants and keeps a member lease of its own.
	SessionLease bool
	// JobSet is the replica's job set at start; SetJobSet replaces it.
	JobSet  JobSet
	Logger  *slog.Logger
	Metrics *observability.Metrics
	// TLSCheck, if set, says why the TLS handshake with etcd fails
	// (TLSCheck's function): the WARN lines of a failed publish or watch
	// name it, where the etcd client says only "context deadline exceeded".
	TLSCheck func(context.Context) error
}

// Membership publishes this replica's member record under a lease of its
// own, independent of campaigning, watches every replica's record, and
// decides from them whether this replica's job set is the cluster's. It is
// the Coordinator's Gate: with cluster.job_set_mismatch: refuse, a replica
// whose job set is not the cluster's does not lead.
//
// The cluster's job set is the one most live members hold; on a tie, the
// one held by the longest-standing member (the lowest create revision of
// its record). Every replica computes it from the same records, so they
// agree on it. A change in whether this replica agrees is acted on only
// after it held for Settle, so members coming and going do not make
// leadership flap; the first decision after start is at once.
//
// The member session (one lease, its keepalives) is separate from the
// election's: a replica that does not campaign is still a member.
type Membership struct {
	o     MembershipOptions
	cli   *clientv3.Client
	log   *slog.Logger
	key   string
	store *jobSetStore
	kick  chan struct{} // something changed: decide again
	push  chan struct{} // the record changed: publish again
	freed chan struct{} // our key is gone while another lease held it: publish now
	// registered is closed, under mu, when our record is first published.
	registered chan struct{}

	mu        sync.Mutex
	self      MemberRecord
	set       JobSet
	selfRev   int64             // create revision of our record; 0 before it is seen
	members   map[string]Member // by key, as watched
	running   map[string]int    // shards by the job set of their newest epoch, as watched
	leaders   map[string]bool   // the nodes of the shards' newest epochs, as watched
	watched   bool              // the member list was read at least once
	published bool              // our record is in etcd under our lease
	dupErr    error             // ErrNodeNameInUse, while it is
	decided   bool              // a decision on the job set was made
	mayLead   bool
	why       error
	changed   chan struct{}
	agreement Agreement
	diff      *JobSetDiff // this replica's set against the cluster's, when they differ and it is known
	explained string      // "<ours> <cluster's>" as last explained in the log
	pending   *time.Time  // when the current undecided answer was first seen
	odd       string      // members whose sets differ, as last logged
	leaving   bool        // Leave was called: the record is not published again
	lease     clientv3.LeaseID
	// holders are the members that may lead shards (the holders of the
	// cluster's set), since when, and a channel closed at their next
	// change: the Roster.
	holders        []string
	holdersSince   time.Time
	holdersChanged chan struct{}
	// differs holds, by node, when a member that was a candidate was first
	// seen with a set that is not the cluster's (holdersOf).
	differs map[string]time.Time
}

// NewMembership returns a Membership. Nothing happens until Run.
func NewMembership(o MembershipOptions) *Membership {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.LeaseTTL < 2*time.Second {
		o.LeaseTTL = 2 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Second
	}
	if o.Mismatch == "" {
		o.Mismatch = MismatchRefuse
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.JobSet.Fingerprint == "" {
		o.JobSet = NewJobSet(nil)
	}
	prefix := "/pacer/" + o.Cluster + "/"
	m := &Membership{o: o, cli: o.Client, log: o.Logger, key: prefix + "members/" + o.Node,
		store: newJobSetStore(o.Client, prefix, o.RequestTimeout),
		kick:  make(chan struct{}, 1), push: make(chan struct{}, 1), freed: make(chan struct{}, 1),
		members: map[string]Member{}, changed: make(chan struct{}), why: errors.New("job set not compared with the cluster's yet"),
		holdersChanged: make(chan struct{}), holdersSince: time.Now(), registered: make(chan struct{})}
	m.self = o.Record
	m.self.Node, m.self.Mismatch = o.Node, o.Mismatch
	m.setLocked(o.JobSet)
	return m
}

func (m *Membership) setLocked(set JobSet) {
	m.set = set
	m.self.JobSet, m.self.Jobs = set.Fingerprint, len(set.Jobs)
}

// SetJobSet replaces this replica's job set (after a config reload) and the
// config file it came from, and publishes them.
func (m *Membership) SetJobSet(set JobSet, config, sha256 string, mtime time.Time) {
	m.mu.Lock()
	changed := set.Fingerprint != m.set.Fingerprint
	m.setLocked(set)
	m.self.Config, m.self.ConfigSHA256, m.self.ConfigModTime = config, sha256, mtime.UTC()
	m.mu.Unlock()
	if changed {
		m.log.Info("job set changed; publishing it", "job_set", Short(set.Fingerprint), "jobs", len(set.Jobs))
	}
	signal(m.push)
	signal(m.kick)
}

// Registered is closed once this replica has written its own keys: its
// job set and its member record, when the record is first published. The
// etcd monitor's first look waits for it (MonitorOptions.Registered).
func (m *Membership) Registered() <-chan struct{} { return m.registered }

// ShardsOf returns the cluster.shards a replica publishes (0: unknown, or
// an older pacer's record that does not say).
func (m *Membership) ShardsOf(node string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if node == m.self.Node {
		return m.self.Shards
	}
	for _, mem := range m.members {
		if mem.Node == node {
			return mem.Shards
		}
	}
	return 0
}

// ClusterShards returns the cluster's shard count when it differs from
// this replica's (its job set is not the cluster's, and the cluster's set
// was read), else 0: this replica's count is the cluster's, or nothing
// says otherwise yet.
func (m *Membership) ClusterShards() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.diff == nil || m.explained == "" {
		return 0
	}
	return m.diff.ShardsThere
}

// JobSet returns this replica's job set.
func (m *Membership) JobSet() JobSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.set
}

// MayLead implements Gate.
//
//lint:ignore ST1008 the error is why the gate is closed, not a failure (Gate.MayLead's order)
func (m *Membership) MayLead() (bool, error, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mayLead, m.why, m.changed
}

var (
	_ Gate   = (*Membership)(nil)
	_ Roster = (*Membership)(nil)
)

// Candidates implements Roster: the members that hold the cluster's job
// set, which are the only ones shards are assigned to (a shard assigned to
// a replica that may not lead would stay unled).
func (m *Membership) Candidates() ([]string, time.Time, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.holders), m.holdersSince, m.holdersChanged
}

// setHolders records the candidates. Called with m.mu held.
func (m *Membership) setHolders(holders []string) {
	holders = slices.Sorted(slices.Values(holders))
	if slices.Equal(holders, m.holders) {
		return
	}
	m.holders, m.holdersSince = holders, time.Now()
	close(m.holdersChanged)
	m.holdersChanged = make(chan struct{})
}

// Run publishes the record (unless SessionLease: then Publish does, for
// each session), watches the members and decides, until ctx ends; then it
// revokes the member lease, so the record goes at once.
func (m *Membership) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if !m.o.SessionLease {
		wg.Go(func() { m.publishLoop(ctx) })
	}
	wg.Go(func() { m.watchLoop(ctx) })
	wg.Go(func() { m.decideLoop(ctx) })
	wg.Wait()
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// publishLoop keeps the record published under a live member lease.
func (m *Membership) publishLoop(ctx context.Context) {
	m.keepPublished(ctx, m.session)
}

// keepPublished runs publish (a session that holds the record published)
// until ctx ends, again after each failure with a backoff. The watch says
// when a record that held our name goes (a killed predecessor's lease
// expired): publish then, not a backoff later.
func (m *Membership) keepPublished(ctx context.Context, publish func(context.Context) error) {
	wait := backoff.New(backoff.Policy{Initial: 200 * time.Millisecond, Max: m.o.LeaseTTL})
	for ctx.Err() == nil {
		err := publish(ctx)
		m.mu.Lock()
		m.published = false
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		d := wait.Next()
		if !errors.Is(err, ErrNodeNameInUse) {
			m.log.Warn("member record not published; trying again", "error", m.withTLSProblem(ctx, err), "retry_in", d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-m.freed:
			wait.Reset()
		case <-t.C:
		}
		t.Stop()
	}
}

// session grants a member lease, publishes the record on it, and keeps it
// alive, publishing again whenever the record changes. It returns when the
// lease is lost, or ctx ends (revoking the lease).
func (m *Membership) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	lease, err := m.cli.Grant(gctx, int64(m.o.LeaseTTL/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant member lease: %w", err)
	}
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), m.o.RequestTimeout)
		defer cancel()
		_, _ = m.cli.Revoke(rctx, lease.ID)
	}()
	ka, err := m.cli.KeepAlive(sctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep member lease alive: %w", err)
	}
	return m.hold(sctx, lease.ID, ka)
}

// Publish keeps the record published on lease, the coordinator's session
// lease (SessionLease), until ctx ends, publishing it again whenever it
// changes and retrying when etcd fails. The record goes with the lease.
func (m *Membership) Publish(ctx context.Context, lease clientv3.LeaseID) {
	m.keepPublished(ctx, func(ctx context.Context) error { return m.hold(ctx, lease, nil) })
}

// hold publishes the record on lease, and again whenever it changes, until
// ctx ends or ka (when not nil) says the lease is lost.
func (m *Membership) hold(ctx context.Context, lease clientv3.LeaseID, ka <-chan *clientv3.LeaseKeepAliveResponse) error {
	m.mu.Lock()
	m.lease = lease
	m.mu.Unlock()
	var last []byte
	for {
		m.mu.Lock()
		rec, set, leaving := m.self, m.set, m.leaving
		m.mu.Unlock()
		b, _ := json.Marshal(rec)
		if !slices.Equal(b, last) && !leaving {
			// The set first: a record names only a set others can read.
			if err := m.store.put(ctx, set); err != nil {
				return err
			}
			if err := m.publish(ctx, lease, b); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.push:
		case _, ok := <-ka:
			if !ok {
				return errors.New("member lease lost: keepalive failed or lease expired")
			}
		}
	}
}

// Leave removes the record and publishes it no more: the replica is
// stopping, and the others assign its shards to themselves while it
// drains. Its own view leaves it out too.
func (m *Membership) Leave(ctx context.Context) {
	m.mu.Lock()
	m.leaving = true
	lease := m.lease
	m.mu.Unlock()
	signal(m.kick)
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	defer cancel()
	if _, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(m.key), "=", int64(lease))).
		Then(clientv3.OpDelete(m.key)).Commit(); err != nil {
		m.log.Warn("member record not removed before the hand-over; the others see this replica go when its lease does", "error", err)
	}
}

// publish puts the record under lease, unless another lease holds the key:
// another live replica with the same node name.
func (m *Membership) publish(ctx context.Context, lease clientv3.LeaseID, rec []byte) error {
	ctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	defer cancel()
	resp, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", 0)).
		Then(clientv3.OpPut(m.key, string(rec), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(m.key)).Commit()
	if err == nil && !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) > 0 && clientv3.LeaseID(kvs[0].Lease) != lease {
			err = m.duplicate(kvs[0].Value)
		} else {
			resp, err = m.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(m.key), "=", int64(lease))).
				Then(clientv3.OpPut(m.key, string(rec), clientv3.WithLease(lease))).Commit()
			if err == nil && !resp.Succeeded {
				err = errors.New("member record changed hands while publishing")
			}
		}
	}
	if err != nil {
		if !errors.Is(err, ErrNodeNameInUse) {
			err = fmt.Errorf("publish member record: %w", err)
		}
		return err
	}
	m.mu.Lock()
	select {
	case <-m.registered:
	default:
		close(m.registered) // the first time
	}
	m.published = true
	cleared := m.dupErr != nil
	m.dupErr = nil
	m.mu.Unlock()
	if cleared {
		m.log.Info("node name free again: member record published")
	}
	signal(m.kick)
	return nil
}

func (m *Membership) duplicate(other []byte) error {
	var rec MemberRecord
	_ = json.Unmarshal(other, &rec)
	err := fmt.Errorf("%w: node %q is published by a replica started %s (version %s); give every replica a unique node.name "+
		"(if that was this replica before it was killed, its record goes when its lease expires, within %s)",
		ErrNodeNameInUse, m.o.Node, rec.Started.Format(time.RFC3339), orUnknown(rec.Version), m.o.LeaseTTL)
	m.mu.Lock()
	first := m.dupErr == nil
	m.dupErr = err
	m.mu.Unlock()
	if first {
		// The logger names the node already.
		m.log.Error("another replica runs under this node name: not leading until it is gone", "error", err.Error())
	}
	signal(m.kick)
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// watchLoop keeps m.members in step with etcd.
func (m *Membership) watchLoop(ctx context.Context) {
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second})
	for ctx.Err() == nil {
		err := m.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("member watch interrupted; reading the members again", "error", m.withTLSProblem(ctx, err))
		if !backoff.Sleep(ctx, wait.Next()) {
			return
		}
	}
}

func (m *Membership) watchOnce(ctx context.Context) error {
	prefix := "/pacer/" + m.o.Cluster + "/members/"
	epochs := m.store.prefix + "epochs/"
	gctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	resp, err := m.cli.Txn(gctx).Then(
		clientv3.OpGet(prefix, clientv3.WithPrefix()),
		clientv3.OpGet(epochs, clientv3.WithPrefix()),
	).Commit()
	cancel()
	if err != nil {
		return err
	}
	members := map[string]Member{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if mem, ok := parseMember(kv.Value, kv.CreateRevision); ok {
			members[string(kv.Key)] = mem
		}
	}
	newest := map[string]Epoch{} // by key
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var e Epoch
		if json.Unmarshal(kv.Value, &e) == nil {
			newest[string(kv.Key)] = e
		}
	}
	m.setMembers(members, running(newest), lastLeaders(newest))
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	rev := clientv3.WithRev(resp.Header.Revision + 1)
	mw := m.cli.Watch(wctx, prefix, clientv3.WithPrefix(), rev)
	ew := m.cli.Watch(wctx, epochs, clientv3.WithPrefix(), rev)
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case wr, ok = <-mw:
		case wr, ok = <-ew:
		}
		if !ok {
			break
		}
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if strings.HasPrefix(key, epochs) {
				var e Epoch
				if ev.Type == clientv3.EventTypeDelete {
					delete(newest, key)
				} else if json.Unmarshal(ev.Kv.Value, &e) == nil {
					newest[key] = e
				}
				continue
			}
			if ev.Type == clientv3.EventTypeDelete {
				delete(members, key)
			} else if mem, ok := parseMember(ev.Kv.Value, ev.Kv.CreateRevision); ok {
				members[key] = mem
			}
		}
		m.setMembers(members, running(newest), lastLeaders(newest))
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch channel closed")
}

// running counts, by job set, the shards whose newest epoch (the highest
// fencing token; of one term's epochs, the latest) names it: the sets the
// cluster runs, or ran last. A leader that reloads records another epoch
// under the same token; taking either of the term's epochs, in map order,
// made two replicas (or one, from one look to the next) see different sets
// run, and so agree on different job sets: after a reload of the leader of
// a two-replica cluster, both refused to lead, or both led (attack 21, S5).
func running(epochs map[string]Epoch) map[string]int {
	out := map[string]int{}
	for _, e := range newestEpochs(epochs) {
		out[e.JobSet]++
	}
	return out
}

// newestEpochs is each shard's newest epoch: of the highest fencing token,
// and of one term's epochs the latest.
func newestEpochs(epochs map[string]Epoch) map[int]Epoch {
	newest := map[int]Epoch{}
	for _, e := range epochs {
		if n, ok := newest[e.Shard]; !ok || e.Token > n.Token || e.Token == n.Token && e.Since.After(n.Since) {
			newest[e.Shard] = e
		}
	}
	return newest
}

// lastLeaders are the nodes of each shard's newest epoch: the replicas
// that led the cluster last.
func lastLeaders(epochs map[string]Epoch) map[string]bool {
	out := map[string]bool{}
	for _, e := range newestEpochs(epochs) {
		out[e.Node] = true
	}
	return out
}

// firstLeadWaits says whether this replica's first decision, to lead with
// set, waits for the settle delay: the cluster last ran another set, and
// other replicas led it. After a restart of the replica that embeds etcd,
// the others' member records were gone with their leases (etcd was down
// meanwhile) and came back half a second after its first look: alone, it
// took its own set for the cluster's and led every shard with it for
// job_set_settle (attack 24, V6). A lone replica, which led last itself,
// does not wait. Called with m.mu held.
func (m *Membership) firstLeadWaits(set string) bool {
	if len(m.running) == 0 || m.running[set] > 0 {
		return false
	}
	for n := range m.leaders {
		if n != m.o.Node {
			return true
		}
	}
	return false
}

func parseMember(v []byte, rev int64) (Member, bool) {
	var rec MemberRecord
	if json.Unmarshal(v, &rec) != nil || rec.Node == "" {
		return Member{}, false
	}
	return Member{MemberRecord: rec, Revision: rev}, true
}

func (m *Membership) setMembers(members map[string]Member, running map[string]int, leaders map[string]bool) {
	m.mu.Lock()
	m.members = maps.Clone(members)
	m.running, m.leaders = running, leaders
	m.watched = true
	own, ok := members[m.key]
	if ok {
		m.selfRev = own.Revision
	}
	dup := m.dupErr != nil
	m.mu.Unlock()
	if !ok && dup {
		signal(m.freed)
	}
	signal(m.kick)
}

// live is the member list with this replica as it is now (its own record
// may lag in etcd, or be gone for a moment while its lease is re-granted).
// Called with m.mu held.
func (m *Membership) live() []Member {
	out := make([]Member, 0, len(m.members)+1)
	for k, mem := range m.members {
		if k != m.key {
			out = append(out, mem)
		}
	}
	if m.leaving {
		return out
	}
	self := Member{MemberRecord: m.self, Revision: m.selfRev}
	if _, ok := m.members[m.key]; !ok || self.Revision == 0 {
		self.Revision = math.MaxInt64 // not a member (yet, or for a moment): the newest
	}
	return append(out, self)
}

// decideLoop decides, on every change and when a pending answer has
// settled, whether this replica may lead.
func (m *Membership) decideLoop(ctx context.Context) {
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	collect := time.NewTicker(jobSetGrace)
	defer collect.Stop()
	for {
		if wait := m.decide(ctx); wait > 0 {
			settle.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-settle.C:
		case <-collect.C:
			m.collectJobSets(ctx)
		}
	}
}

// decide computes the agreement and, when whether this replica may lead
// has changed and settled, applies it. It returns how long until a pending
// change settles, or 0.
func (m *Membership) decide(ctx context.Context) time.Duration {
	m.mu.Lock()
	if !m.watched {
		m.mu.Unlock()
		return 0
	}
	a := Agree(m.live(), m.running)
	holders, hold := m.holdersOf(a)
	m.setHolders(holders)
	if m.leaving {
		// Stopping: the others see it gone and take its shards, and its
		// stop hands them over, draining its runs. Whether it may lead
		// stays as it was: a gate that closed now would end its terms and
		// cancel those runs (it is no holder of any set without itself).
		m.mu.Unlock()
		return 0
	}
	self := m.self.JobSet
	agreed := a.JobSet == self
	ok, why := agreed || m.o.Mismatch == MismatchWarn, error(nil)
	if !agreed {
		why = fmt.Errorf("%w: this replica runs job set %s (%d jobs), the cluster %s (held by %s)",
			ErrJobSetMismatch, Short(self), m.self.Jobs, Short(a.JobSet), strings.Join(a.Holders, ", "))
	}
	if n := m.shardsOf(a); !agreed && n > 0 && m.self.Shards > 0 && n != m.self.Shards {
		// Another shard count never leads beside the cluster's, whatever
		// job_set_mismatch says: a job would have a leader under each
		// (counts.go; attack 22, T1).
		ok = false
		why = fmt.Errorf("%w: this replica runs cluster.shards %d, the cluster %d (held by %s); "+
			"a replica with another shard count does not lead, even with job_set_mismatch: warn",
			ErrJobSetMismatch, m.self.Shards, n, strings.Join(a.Holders, ", "))
	}
	switch {
	case m.dupErr != nil:
		ok, why = false, m.dupErr
	case !m.published && !m.decided:
		ok, why = false, errors.New("member record not published yet")
	}
	// A switch of the cluster's set to this replica's, seen here (not a
	// first look after a start): recorded for the new leaders' catch-ups.
	switched := m.decided && m.agreement.JobSet != "" && m.agreement.JobSet != a.JobSet && agreed
	m.agreement = a
	m.metrics(agreed, a.Sets)
	odd := m.oddMembers(a)
	explain := false
	if pair := self + " " + a.JobSet; agreed {
		m.diff, m.explained = nil, ""
	} else if pair != m.explained {
		m.diff, m.explained, explain = nil, pair, true
	}
	var wait time.Duration
	apply, decided := false, m.decided
	switch {
	case !m.decided && m.dupErr != nil:
		// Another replica's record holds our name (or a killed
		// predecessor's, until its lease goes): closed at once, and the
		// first decision on the job set is still to come, at once.
		apply = m.mayLead || m.why == nil || m.why.Error() != why.Error()
	case !m.decided && ok && agreed && m.published && m.firstLeadWaits(self):
		// The first decision, to lead with a set the cluster did not run
		// last, that others led: after the settle delay, so that their
		// records, gone with an etcd restart, are back (attack 24, V6).
		apply, wait = m.settledLocked()
		decided = apply
	case !m.decided:
		apply, decided = m.published, m.published // the first decision, at once
	case ok == m.mayLead:
		m.pending = nil
		if why != nil && m.why != nil && why.Error() != m.why.Error() {
			m.why = why // same answer, new detail
		}
	default:
		apply, wait = m.settledLocked()
	}
	var changed chan struct{}
	was := m.mayLead
	if apply {
		m.decided, m.mayLead, m.why, m.pending = decided, ok, why, nil
		changed = m.changed
		m.changed = make(chan struct{})
	}
	set := m.set
	m.mu.Unlock()
	if changed != nil {
		close(changed)
	}
	if switched {
		go m.noteSwitch(ctx, Agreed{JobSet: a.JobSet, Since: time.Now().UTC(), Node: m.o.Node})
	}
	if odd != "" {
		m.log.Warn("replicas run a job set that is not the cluster's", "cluster_job_set", Short(a.JobSet),
			"held_by", a.Holders, "differing", odd)
	}
	if explain {
		m.explain(ctx, set, a, wait)
	}
	if apply && ok && !was && agreed {
		m.log.Info("job set is the cluster's: may lead", "job_set", Short(self), "jobs", len(set.Jobs), "members", len(a.Holders))
	}
	if hold > 0 {
		wait = minPositive(wait, hold)
	}
	return wait
}

// settledLocked reports whether the answer decide is about to apply has
// held for the settle delay since it was first seen (m.pending, set now if
// it was not), or how long until it has. Called with m.mu held.
func (m *Membership) settledLocked() (settled bool, wait time.Duration) {
	if m.pending == nil {
		now := time.Now()
		m.pending = &now
		return false, m.o.Settle
	}
	if waited := time.Since(*m.pending); waited < m.o.Settle {
		return false, m.o.Settle - waited
	}
	return true, 0
}

// noteSwitch records that the cluster switched to a's job set (Agreed),
// trying a few times: without it, the new leaders' catch-ups do not see
// the slots of new definitions that came due before the old leaders
// stepped down.
func (m *Membership) noteSwitch(ctx context.Context, a Agreed) {
	wait := backoff.New(backoff.Policy{Initial: 200 * time.Millisecond, Max: 2 * time.Second})
	for try := 0; ; try++ {
		err := m.store.noteAgreed(ctx, a)
		if err == nil {
			return
		}
		if try == 4 || !backoff.Sleep(ctx, wait.Next()) {
			m.log.Warn("the switch of the cluster's job set not recorded: slots of changed jobs due before the old leaders stepped down "+
				"may be left without a record", "job_set", Short(a.JobSet), "error", err)
			return
		}
	}
}

// shardsOf is the shard count of the cluster's job set, as its
// longest-standing holder publishes it (0: unknown). Called with m.mu held.
func (m *Membership) shardsOf(a Agreement) int {
	if len(a.Holders) == 0 {
		return 0
	}
	if a.Holders[0] == m.self.Node {
		return m.self.Shards
	}
	for _, mem := range m.members {
		if mem.Node == a.Holders[0] {
			return mem.Shards
		}
	}
	return 0
}

// holdersOf returns the candidates for a: its holders, and the members
// that were candidates and whose sets have differed from the cluster's for
// less than the settle delay. A replica's own gate closes only once its
// difference has held that long, so its shards stay assigned to it until
// then: a difference undone within the delay moves no shard (with a
// shorter cluster.shard_settle, the assignment would otherwise hand a
// leader's shards over at once and back again). hold is how long until
// the first of those settles. Called with m.mu held.
func (m *Membership) holdersOf(a Agreement) (holders []string, hold time.Duration) {
	holders = slices.Clone(a.Holders)
	if m.differs == nil {
		m.differs = map[string]time.Time{}
	}
	now := time.Now()
	live := map[string]bool{}
	for _, mem := range m.live() {
		live[mem.Node] = true
		if mem.JobSet == a.JobSet {
			delete(m.differs, mem.Node)
			continue
		}
		since, ok := m.differs[mem.Node]
		if !ok {
			if !slices.Contains(m.holders, mem.Node) {
				continue // no candidate before: a difference does not make it one
			}
			since = now
			m.differs[mem.Node] = since
		}
		if left := m.o.Settle - now.Sub(since); left > 0 && !slices.Contains(holders, mem.Node) {
			holders = append(holders, mem.Node)
			hold = minPositive(hold, left)
		}
	}
	maps.DeleteFunc(m.differs, func(node string, _ time.Time) bool { return !live[node] })
	return holders, hold
}

// oddMembers names the members whose sets differ from a's, once per change
// (empty when unchanged since the last call). Called with m.mu held.
func (m *Membership) oddMembers(a Agreement) string {
	var odd []string
	for _, mem := range m.live() {
		if mem.JobSet != a.JobSet {
			odd = append(odd, mem.Node+"="+Short(mem.JobSet))
		}
	}
	slices.Sort(odd)
	s := strings.Join(odd, ", ")
	if s == m.odd {
		return ""
	}
	m.odd = s
	return s
}

// explain logs, loudly, how this replica's set differs from the cluster's,
// reading the cluster's set from etcd to name the jobs. pending, if not 0,
// is how long until a refusal takes effect.
func (m *Membership) explain(ctx context.Context, set JobSet, a Agreement, pending time.Duration) {
	attrs := []any{"job_set", Short(set.Fingerprint), "jobs", len(set.Jobs), "cluster_job_set", Short(a.JobSet),
		"held_by", a.Holders, "job_set_mismatch", m.o.Mismatch}
	if cluster, err := m.store.get(ctx, a.JobSet); err == nil {
		d := set.Diff(cluster)
		m.mu.Lock()
		if m.set.Fingerprint == set.Fingerprint {
			m.diff = &d
		}
		m.mu.Unlock()
		attrs = append(attrs, "differences", d.String(), "only_here", d.OnlyHere, "missing_here", d.MissingHere, "different", d.Different)
	} else {
		attrs = append(attrs, "differences", "unknown: "+err.Error())
	}
	m.mu.Lock()
	otherCount, ownCount := m.shardsOf(a), m.self.Shards
	m.mu.Unlock()
	switch {
	case m.o.Mismatch == MismatchWarn && otherCount > 0 && ownCount > 0 && otherCount != ownCount:
		// Another shard count never leads (attack 24, V1: this said it
		// may).
		m.log.Warn("this replica's job set differs from the cluster's, and so does its shard count: not leading or campaigning, "+
			"even with cluster.job_set_mismatch: warn", append(attrs, "shards", ownCount, "cluster_shards", otherCount)...)
	case m.o.Mismatch == MismatchWarn:
		m.log.Warn("this replica's job set differs from the cluster's; it may lead anyway (cluster.job_set_mismatch: warn)", attrs...)
	case pending > 0:
		m.log.Warn("this replica's job set differs from the cluster's: it stops leading and campaigning if this holds", append(attrs, "settle", pending)...)
	default:
		m.log.Warn("this replica's job set differs from the cluster's: not leading or campaigning (cluster.job_set_mismatch: refuse)", attrs...)
	}
}

// metrics sets the job-set gauges. Called with m.mu held.
func (m *Membership) metrics(agreed bool, sets int) {
	if m.o.Metrics == nil {
		return
	}
	v := 0.0
	if agreed {
		v = 1
	}
	m.o.Metrics.JobSetAgreed.WithLabelValues(m.o.Node).Set(v)
	m.o.Metrics.JobSets.Set(float64(sets))
}

// collectJobSets removes stored job sets that no member and no epoch names,
// if this replica is the longest-standing member (one replica does it).
func (m *Membership) collectJobSets(ctx context.Context) {
	m.mu.Lock()
	keep := map[string]bool{m.self.JobSet: true}
	oldest := true
	for k, mem := range m.members {
		keep[mem.JobSet] = true
		if k != m.key && (m.selfRev == 0 || mem.Revision < m.selfRev) {
			oldest = false
		}
	}
	m.mu.Unlock()
	if !oldest {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	defer cancel()
	resp, err := m.cli.Get(ctx, m.store.prefix+"epochs/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	for _, kv := range resp.Kvs {
		var e Epoch
		if json.Unmarshal(kv.Value, &e) == nil {
			keep[e.JobSet] = true
		}
	}
	if n, err := m.store.collect(ctx, keep); err != nil {
		m.log.Debug("removing unused job sets failed", "error", err)
	} else if n > 0 {
		m.log.Info("removed job sets no replica or epoch names any more", "removed", n)
	}
}

// ReplicaView is one live replica as the API shows it.
type ReplicaView struct {
	MemberRecord
	// Agrees is whether its job set is the cluster's.
	Agrees bool `json:"agrees"`
	// Candidate is whether the shard assignment counts it (the roster, as
	// this replica computes it; for this replica, also that its own gate
	// lets it lead): a replica that is not one leads no shard.
	Candidate bool `json:"candidate"`
	// LeadsShards are the shards it leads, as the elections say; absent
	// when they could not be read (runner.Control fills it in).
	LeadsShards []int `json:"leads_shards"`
	// Reason says why it is not a candidate, or why it is about to stop
	// being one; empty for a candidate that stays one.
	Reason string `json:"reason,omitempty"`
	// Unpublished marks this replica's own entry when its record is not
	// published because another live replica publishes under its node
	// name: that one is listed as well, as its record says. Only this
	// replica's own view has this entry: the others cannot see it.
	Unpublished bool `json:"unpublished,omitempty"`
}

// ReasonUnpublished starts the Reason of an Unpublished entry.
const ReasonUnpublished = "this process: not published"

// Reasons a live replica is not a candidate (ReplicaView.Reason), besides
// this replica's own gate's answer.
const (
	ReasonJobSetDiffers  = "job set differs from the cluster's"
	ReasonDiffersSettles = "job set differs from the cluster's: still a candidate until that has held for the settle delay"
	ReasonNoRecord       = "no member record (stopping, another version, or its record was lost): in an election, outside the roster"
)

// JobSetView is what this replica knows of the cluster's job sets.
type JobSetView struct {
	JobSet         string `json:"job_set"`
	Jobs           int    `json:"jobs"`
	ClusterJobSet  string `json:"cluster_job_set"`
	JobSetAgreed   bool   `json:"job_set_agreed"`
	JobSetMismatch string `json:"job_set_mismatch"`
	// MayLead is whether this replica may lead (or campaign) now, and
	// NotLeading why not.
	MayLead    bool        `json:"may_lead"`
	NotLeading string      `json:"not_leading,omitempty"`
	Difference *JobSetDiff `json:"job_set_difference,omitempty"`
	// Replicas are the live replicas, longest-standing first.
	Replicas []ReplicaView `json:"replicas"`
}

// View reports the job sets of the live replicas and this one's standing.
func (m *Membership) View() JobSetView {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := m.live()
	// Another live replica publishes under this replica's node name: list
	// it as its record says, and this replica apart, as the newest.
	other, dup := m.members[m.key]
	dup = dup && m.dupErr != nil && !m.leaving
	if dup {
		for i := range live {
			if live[i].Node == m.o.Node {
				live[i].Revision = math.MaxInt64
			}
		}
		live = append(live, other)
	}
	slices.SortFunc(live, func(a, b Member) int {
		if a.Revision != b.Revision {
			if a.Revision < b.Revision {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Node, b.Node)
	})
	v := JobSetView{JobSet: m.self.JobSet, Jobs: m.self.Jobs, ClusterJobSet: m.agreement.JobSet,
		JobSetAgreed: m.agreement.JobSet == m.self.JobSet, JobSetMismatch: m.o.Mismatch, MayLead: m.mayLead, Difference: m.diff}
	if !m.mayLead && m.why != nil {
		v.NotLeading = m.why.Error()
	}
	for _, mem := range live {
		self := mem.Node == m.o.Node && (!dup || mem.Revision == math.MaxInt64)
		r := ReplicaView{MemberRecord: mem.MemberRecord, Agrees: mem.JobSet == m.agreement.JobSet,
			Candidate: slices.Contains(m.holders, mem.Node) && (!self || m.mayLead)}
		switch {
		case self && dup:
			r.Candidate, r.Unpublished, r.LeadsShards = false, true, []int{}
			r.Reason = ReasonUnpublished + ", " + m.dupErr.Error()
		case dup && mem.Node == m.o.Node:
			// The replica that publishes under the name; the roster, as
			// computed here, has this replica's record in its place.
			r.Candidate = r.Agrees
		case self && !m.mayLead && (m.why == nil || !errors.Is(m.why, ErrJobSetMismatch)):
			// Its own gate: not decided yet, or closed for another reason
			// than its job set (said below, as of the others).
			r.Reason = "not yet settled: no decision on its job set yet"
			if m.why != nil {
				r.Reason = m.why.Error()
			}
		case self && !m.mayLead && r.Agrees:
			r.Reason = "not yet settled: its job set is the cluster's again; it may lead once that has held for the settle delay"
		case self && m.mayLead && m.pending != nil:
			r.Reason = fmt.Sprintf("not yet settled: its gate closes if its job set still differs at %s",
				m.pending.Add(m.o.Settle).Format(time.RFC3339))
		case !r.Agrees && r.Candidate:
			r.Reason = ReasonDiffersSettles
		case !r.Agrees:
			r.Reason = ReasonJobSetDiffers + " (" + Short(mem.JobSet) + ", the cluster's " + Short(m.agreement.JobSet) + ")"
			switch n := m.shardsOf(m.agreement); {
			case mem.Shards > 0 && n > 0 && mem.Shards != n:
				r.Reason += fmt.Sprintf("; its cluster.shards is %d, the cluster's %d: a replica with another shard count does not lead, "+
					"even with cluster.job_set_mismatch: warn", mem.Shards, n)
			case mem.Mismatch == MismatchWarn:
				r.Reason += "; cluster.job_set_mismatch: warn lets it lead, but the assignment gives it no shard"
			}
		case !r.Candidate:
			r.Reason = "not yet settled: not in this replica's roster yet"
		}
		v.Replicas = append(v.Replicas, r)
	}
	return v
}
