package coord_test

// What pacer status and GET /api/v1/cluster say, through real etcd: every
// live replica once, with why it is not a candidate; and a replica cut off
// from etcd answering with what it knows by itself.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/coord"
)

// A replica whose job set differs from the cluster's campaigns in no
// election, yet the cluster's members list it (once), and its entry says it
// is not a candidate and why; so does its own view.
func TestClusterListsAReplicaOutOfTheElectionsWithItsReason(t *testing.T) {
	b := setup(t)
	set, other := jobSet("x", "y"), jobSet("x")
	const settle = 300 * time.Millisecond
	a := b.gatedReplica(t, "a", set, settle, coord.MismatchRefuse)
	waitFor(t, "a to lead", 10*time.Second, func() bool { return a.c.Term() != nil })
	bb := b.gatedReplica(t, "b", set, settle, coord.MismatchRefuse)
	c := b.gatedReplica(t, "c", other, settle, coord.MismatchRefuse)

	ctl := &runner.Control{Store: a.c, Members: a.ms}
	var v runner.ClusterView
	waitFor(t, "a to see three replicas, c not a candidate", 10*time.Second, func() bool {
		var err error
		v, err = ctl.Cluster(context.Background())
		return err == nil && len(v.Replicas) == 3 && !replicaOf(v, "c").Candidate && replicaOf(v, "b").Candidate
	})
	// The leader first; b (a candidate, in the elections once its campaign
	// is registered) and c (in none) after it, each once, in either order:
	// b may not hold its election key yet when the view is taken.
	if len(v.Members) != 3 || v.Members[0] != "a" || !slices.Equal(slices.Sorted(slices.Values(v.Members[1:])), []string{"b", "c"}) {
		t.Fatalf("members %v, want a (the leader), then b and c, each once", v.Members)
	}
	if r := replicaOf(v, "a"); !r.Candidate || !slices.Equal(r.LeadsShards, []int{0}) || r.Reason != "" {
		t.Fatalf("a: %+v, want a candidate leading shard 0", r)
	}
	if r := replicaOf(v, "c"); r.Agrees || len(r.LeadsShards) != 0 || !strings.HasPrefix(r.Reason, coord.ReasonJobSetDiffers) {
		t.Fatalf("c: %+v, want no candidate, leading nothing, because its job set differs", r)
	}
	// c says the same of itself, with its gate's reason, once it has
	// compared its set with the cluster's (its gate is closed before too,
	// as "not compared with the cluster's yet").
	var self coord.ReplicaView
	waitFor(t, "c to say of itself that its job set differs", 10*time.Second, func() bool {
		self = replicaOf(runner.ClusterView{JobSetView: ptr(c.ms.View())}, "c")
		return strings.HasPrefix(self.Reason, coord.ReasonJobSetDiffers)
	})
	if ok, _, _ := c.ms.MayLead(); ok || self.Candidate {
		t.Fatalf("c of itself: %+v, may lead %v; want no candidate", self, ok)
	}
	if r := replicaOf(v, "b"); !r.Candidate || r.Reason != "" || bb.c.Term() != nil {
		t.Fatalf("b: %+v, want a candidate leading nothing (one shard, a leads it)", r)
	}
}

func replicaOf(v runner.ClusterView, node string) coord.ReplicaView {
	if v.JobSetView == nil {
		return coord.ReplicaView{}
	}
	for _, r := range v.Replicas {
		if r.Node == node {
			return r
		}
	}
	return coord.ReplicaView{}
}

func ptr[T any](v T) *T { return &v }

// A replica cut off from etcd answers GET /api/v1/cluster with 503 and a
// JSON body: the error, its node, that it leads nothing once it fenced
// itself, when it last heard from etcd, its keepalive's age, that it may not
// lead and why, and that its jobs' state is unknown. What it leads is taken
// as of the answer: a request that arrives while it still leads and waits
// for etcd longer than the fence takes says it leads nothing.
func TestClusterOfAReplicaCutOffFromEtcd(t *testing.T) {
	b := setup(t)
	hole, cli := b.throughHole(t)
	// The request timeout is longer than the lease TTL: a read that etcd
	// does not answer outlasts the fence.
	const ttl, timeout = 2 * time.Second, 3 * time.Second
	ms := coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "test", Node: "a", LeaseTTL: ttl,
		RequestTimeout: timeout, Settle: 200 * time.Millisecond, JobSet: jobSet("x"), SessionLease: true,
		Record: coord.MemberRecord{Version: "test", Started: time.Now()}})
	c := coord.New(coord.Options{Client: cli, Cluster: "test", Node: "a", LeaseTTL: ttl, RequestTimeout: timeout,
		Members: ms, Roster: ms, Gate: ms})
	r := runner.New(runner.Options{Node: "a", PausesFresh: func() bool { return time.Since(c.LastContact()) < ttl }})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ms.Run(ctx) })
	wg.Go(func() { _ = c.Run(ctx) })
	wg.Go(func() { c.WatchPaused(ctx, r.SetPaused, r.PausesLost) })
	t.Cleanup(func() { stop(); wg.Wait() })
	waitFor(t, "a leads", 10*time.Second, func() bool { return c.Term() != nil })
	waitFor(t, "a to read the pause flags", 10*time.Second, r.PausesRead)

	srv := httptest.NewServer(api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: c, Node: "a", Members: ms}}).Handler())
	t.Cleanup(srv.Close)
	get := func() (int, map[string]any) {
		resp, err := srv.Client().Get(srv.URL + "/api/v1/cluster")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("not JSON (%d): %s", resp.StatusCode, body)
		}
		return resp.StatusCode, out
	}
	var v map[string]any
	waitFor(t, "a's view in touch, a may lead", 10*time.Second, func() bool {
		var code int
		code, v = get()
		return code == http.StatusOK && v["may_lead"] == true
	})
	if v["jobs_state"] != "known" || v["keepalive_age"] == nil {
		t.Fatalf("in touch: %v", v)
	}

	cut := time.Now()
	hole.SetCut(true)
	// Asked at once, while it still leads: the read waits for the request
	// timeout, and the replica fences itself meanwhile.
	leading := c.Term() != nil
	code, v := get()
	if !leading || c.Term() != nil {
		t.Fatalf("leading when asked %v, after the answer %v: want it asked while leading, answered after its fence", leading, c.Term() != nil)
	}
	if code != http.StatusServiceUnavailable {
		t.Fatalf("cut off: status %d, want 503: %v", code, v)
	}
	if e, _ := v["error"].(string); !strings.Contains(e, "read elections") {
		t.Fatalf("error %q, want why etcd could not be read", e)
	}
	if v["node"] != "a" || v["jobs_state"] != "unknown" {
		t.Fatalf("node %v, jobs_state %v; want a, unknown", v["node"], v["jobs_state"])
	}
	if led, ok := v["shards_led"].([]any); !ok || len(led) != 0 || v["leading"] != false {
		t.Fatalf("shards_led %v, leading %v: want [] and false once it fenced itself", v["shards_led"], v["leading"])
	}
	last, err := time.Parse(time.RFC3339Nano, v["last_contact"].(string))
	if err != nil || last.After(cut) || last.IsZero() {
		t.Fatalf("last_contact %v (%v), want before the cut at %s", v["last_contact"], err, cut)
	}
	age, _ := v["keepalive_age"].(string)
	if d, err := time.ParseDuration(age); err != nil || d < time.Since(cut) {
		t.Fatalf("keepalive_age %q (%v), want at least the %s since the cut", age, err, time.Since(cut))
	}
	why, _ := v["not_leading"].(string)
	if v["may_lead"] != false || !strings.HasPrefix(why, "cannot reach etcd since "+last.UTC().Format(time.RFC3339Nano)) {
		t.Fatalf("may_lead %v, not_leading %q: want false, because it cannot reach etcd since its last contact", v["may_lead"], why)
	}
	var self map[string]any
	for _, r := range v["replicas"].([]any) {
		if r := r.(map[string]any); r["node"] == "a" {
			self = r
		}
	}
	if self == nil || self["candidate"] != false || self["reason"] != why || len(self["leads_shards"].([]any)) != 0 {
		t.Fatalf("a's own row %v: want no candidate, leading nothing, with the same reason", self)
	}
	// Its session has ended: the keepalive's age is still there, and grows.
	_, v = get()
	if d, err := time.ParseDuration(fmt.Sprint(v["keepalive_age"])); err != nil || d < time.Since(cut) {
		t.Fatalf("keepalive_age %v (%v) on the second look, want at least %s", v["keepalive_age"], err, time.Since(cut))
	}
	hole.SetCut(false)
}

// A second replica started under a node name another live one publishes
// lists, in its own view, that one as its record says (its start time, the
// shards it leads) and itself apart: not published, no candidate, leading
// nothing, and why. The others cannot see it: they list the name once.
func TestDuplicateNodeNameListsTheOriginalAndItselfApart(t *testing.T) {
	b := setup(t)
	set := jobSet("x")
	const settle = 300 * time.Millisecond
	orig := b.gatedReplica(t, "b", set, settle, coord.MismatchRefuse)
	waitFor(t, "the first b to lead", 10*time.Second, func() bool { return orig.c.Term() != nil })
	a := b.gatedReplica(t, "a", set, settle, coord.MismatchRefuse)
	dup := b.gatedReplica(t, "b", set, settle, coord.MismatchRefuse)
	waitFor(t, "the second b to find its name in use", 10*time.Second, func() bool {
		ok, why, _ := dup.ms.MayLead()
		return !ok && errors.Is(why, coord.ErrNodeNameInUse)
	})
	started := replicaOf(runner.ClusterView{JobSetView: ptr(orig.ms.View())}, "b").Started

	ctl := &runner.Control{Store: dup.c, Members: dup.ms}
	var v runner.ClusterView
	waitFor(t, "the second b's view of a, the first b and itself", 10*time.Second, func() bool {
		var err error
		v, err = ctl.Cluster(context.Background())
		return err == nil && len(v.Replicas) == 3 && slices.ContainsFunc(v.Replicas, func(r coord.ReplicaView) bool { return r.Node == "a" })
	})
	var first, self []coord.ReplicaView
	for _, r := range v.Replicas {
		switch {
		case r.Node == "b" && r.Unpublished:
			self = append(self, r)
		case r.Node == "b":
			first = append(first, r)
		}
	}
	if len(first) != 1 || len(self) != 1 {
		t.Fatalf("replicas %+v: want the first b once and this process once", v.Replicas)
	}
	if r := first[0]; !r.Started.Equal(started) || !r.Candidate || !slices.Equal(r.LeadsShards, []int{0}) || r.Reason != "" {
		t.Fatalf("the first b %+v: want it as its record says (started %s), a candidate leading shard 0", r, started)
	}
	if r := self[0]; r.Started.Equal(started) || r.Candidate || len(r.LeadsShards) != 0 ||
		!strings.HasPrefix(r.Reason, coord.ReasonUnpublished+", "+coord.ErrNodeNameInUse.Error()) {
		t.Fatalf("this process %+v: want its own start, no candidate, leading nothing, not published because its name is in use", r)
	}
	if !slices.Equal(v.Members, []string{"b", "a"}) {
		t.Fatalf("members %v, want b (the leader), a", v.Members)
	}
	// The others list the name once: the replica that publishes it.
	other, err := (&runner.Control{Store: a.c, Members: a.ms}).Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := slices.IndexFunc(other.Replicas, func(r coord.ReplicaView) bool { return r.Node == "b" }); len(other.Replicas) != 2 ||
		n < 0 || !other.Replicas[n].Started.Equal(started) {
		t.Fatalf("a's replicas %+v: want a and the first b", other.Replicas)
	}
}
