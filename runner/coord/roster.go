package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberRoster is the Roster of the replicas that publish a member record
// (members/<node>) on their session's lease: a replica is a candidate from
// when its session opens until it ends, so its record and its election keys
// come and go together.
type MemberRoster struct {
	mu      sync.Mutex
	nodes   []string
	since   time.Time
	changed chan struct{}
}

// NewMemberRoster returns an empty roster: give it to the coordinators as
// their Roster (with PublishMember) and keep it up to date with
// WatchMembers.
func NewMemberRoster() *MemberRoster {
	return &MemberRoster{changed: make(chan struct{}), since: time.Now()}
}

var _ Roster = (*MemberRoster)(nil)

// Candidates implements Roster.
func (m *MemberRoster) Candidates() ([]string, time.Time, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.nodes), m.since, m.changed
}

func (m *MemberRoster) set(nodes []string) {
	slices.Sort(nodes)
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.Equal(nodes, m.nodes) {
		return
	}
	m.nodes, m.since = nodes, time.Now()
	close(m.changed)
	m.changed = make(chan struct{})
}

// memberKey is this replica's member record.
func (c *Coordinator) memberKey() string { return c.prefix + "members/" + c.opts.Node }

// publishMember puts this replica's member record on the session's lease.
func (c *Coordinator) publishMember(ctx context.Context, ss *session) error {
	v, _ := json.Marshal(struct {
		Node string `json:"node"`
	}{c.opts.Node})
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	if _, err := c.cli.Put(ctx, c.memberKey(), string(v), clientv3.WithLease(ss.lease)); err != nil {
		return fmt.Errorf("publish member record: %w", err)
	}
	return nil
}

// Leave tells the other replicas that this one is going: every term stops
// firing now (the hand-over marks count from here), and the member record
// is removed, so that they assign its shards to themselves and wait in
// their elections while it drains; its resignations then hand each shard
// over at once. Call it before the runner drains; Run's end does the rest.
func (c *Coordinator) Leave(ctx context.Context) {
	for _, t := range c.Terms() {
		t.StopFiring()
	}
	c.mu.Lock()
	ss := c.session
	c.mu.Unlock()
	if !c.opts.PublishMember || ss == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	_, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(c.memberKey()), "=", int64(ss.lease))).
		Then(clientv3.OpDelete(c.memberKey())).Commit()
	if err != nil {
		c.log.Warn("member record not removed before the hand-over; the others see this replica go when its lease is revoked", "error", err)
	}
}

// WatchMembers keeps m in step with the member records until ctx ends.
func (c *Coordinator) WatchMembers(ctx context.Context, m *MemberRoster) {
	prefix := c.prefix + "members/"
	c.watchPrefix(ctx, prefix, func(kvs map[string]*mvccpb.KeyValue) {
		nodes := make([]string, 0, len(kvs))
		for name := range kvs {
			if !strings.Contains(name, "/") {
				nodes = append(nodes, name)
			}
		}
		m.set(nodes)
	})
}
