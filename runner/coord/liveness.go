package coord

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A replica killed with kill -9 keeps its member record and its election
// keys until its lease expires, up to a lease TTL later: to the roster it
// is still there. Before a leader hands a shard over it therefore checks
// that the replicas the assignment gives shards to are alive: each must
// have kept its lease alive after the roster settled (so a replica that
// died before the settle delay was over, however long its lease outlives
// it, moves nothing) and within the last keepalive interval or so (so it
// is alive now, not only once).
//
// etcd tells nobody but the keeper when a lease was kept alive, only how
// long it has left, in whole seconds rounded down. A lease's remaining TTL
// r, read with a request sent at t, bounds its last keepalive from below:
// the server answered at t or later, when the lease had r or more left of
// its granted TTL g, so it was kept alive at t+r-g or later. A dead lease's
// bound never moves past its last keepalive; a live one's moves up with
// each keepalive (every third of the TTL), 1 s behind at most.
//
// What it cannot see: a replica that dies after its keepalive was seen and
// before it leads the shard handed to it leaves that shard unled until its
// lease expires (at most a TTL after that keepalive). Nothing may take a
// shard from a lease that has not expired: the lease holder fences itself
// only when the lease can have expired, so revoking it or deleting its key
// sooner could let two replicas run the shard's work at once. And an etcd
// leader change extends every lease (etcd's own rule), a dead one's too.

// electionView is every shard's election as read once: who waits in (or
// leads) each, and each replica's session leases.
type electionView struct {
	read   bool
	nodes  map[int][]string
	leases map[string][]clientv3.LeaseID
	// unproven is the first replica the assignment gives shards to that is
	// not known to be alive ("" when all are); set by othersLive.
	unproven string
}

func (e *electionView) waiting(n int, node string) bool { return slices.Contains(e.nodes[n], node) }

// readElections reads every shard's election. On failure the view is
// empty (read false): nobody is known to wait, so nothing moves.
func (c *Coordinator) readElections(ctx context.Context) *electionView {
	ev := &electionView{nodes: map[int][]string{}, leases: map[string][]clientv3.LeaseID{}}
	gctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(gctx, c.prefix+"leader/", clientv3.WithPrefix())
	if err != nil {
		return ev
	}
	ev.read = true
	for _, kv := range resp.Kvs {
		num, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), c.prefix+"leader/"), "/")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			continue
		}
		node, lease := string(kv.Value), clientv3.LeaseID(kv.Lease)
		ev.nodes[n] = append(ev.nodes[n], node)
		if !slices.Contains(ev.leases[node], lease) {
			ev.leases[node] = append(ev.leases[node], lease)
		}
	}
	return ev
}

// liveWithin is how recent a keepalive must be for a replica to count as
// alive now: its keepalive interval (a third of the TTL), plus the 1 s
// the remaining TTL is rounded by, plus 1 s for the requests' latency.
func (c *Coordinator) liveWithin() time.Duration { return c.opts.LeaseTTL/3 + 2*time.Second }

// othersLive reports whether every other replica that assigned gives a
// shard to kept a lease alive since settled and within liveWithin, and
// records in ev the first that did not. proofs holds, per lease, the
// latest keepalive known so far; leases no longer in any election are
// dropped from it.
func (c *Coordinator) othersLive(ctx context.Context, ev *electionView, assigned []string, settled time.Time,
	proofs map[clientv3.LeaseID]time.Time) bool {
	if !ev.read {
		return false
	}
	maps.DeleteFunc(proofs, func(l clientv3.LeaseID, _ time.Time) bool {
		for _, ls := range ev.leases {
			if slices.Contains(ls, l) {
				return false
			}
		}
		return true
	})
	need := settled
	if recent := time.Now().Add(-c.liveWithin()); recent.After(need) {
		need = recent
	}
	var checked []string
	for _, node := range assigned {
		if node == "" || node == c.opts.Node || slices.Contains(checked, node) {
			continue
		}
		checked = append(checked, node)
		if !c.keptAliveSince(ctx, ev.leases[node], need, proofs) {
			ev.unproven = node
			return false
		}
	}
	return true
}

// keptAliveSince reports whether any of leases was kept alive at need or
// later, asking etcd about those not yet known to have been.
func (c *Coordinator) keptAliveSince(ctx context.Context, leases []clientv3.LeaseID, need time.Time,
	proofs map[clientv3.LeaseID]time.Time) bool {
	for _, l := range leases {
		if !proofs[l].Before(need) {
			return true
		}
		asked := time.Now()
		tctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		resp, err := c.cli.TimeToLive(tctx, l)
		cancel()
		if err != nil || resp.TTL <= 0 {
			continue
		}
		if kept := asked.Add(time.Duration(resp.TTL-resp.GrantedTTL) * time.Second); kept.After(proofs[l]) {
			proofs[l] = kept
		}
		if !proofs[l].Before(need) {
			return true
		}
	}
	return false
}
