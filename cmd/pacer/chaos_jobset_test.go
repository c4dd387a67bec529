//go:build chaos

package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// leaderSpan is when a replica led, from its log: from "became leader" to
// "leadership ended" (or its kill).
type leaderSpan struct {
	node       string
	from, till time.Time
}

func leaderSpans(p *proc, killed time.Time) []leaderSpan {
	var out []leaderSpan
	for _, l := range p.logs() {
		switch l.str("msg") {
		case "became leader":
			out = append(out, leaderSpan{node: p.name, from: logTime(l)})
		case "leadership ended":
			if n := len(out); n > 0 && out[n-1].till.IsZero() {
				out[n-1].till = logTime(l)
			}
		}
	}
	if n := len(out); n > 0 && out[n-1].till.IsZero() {
		out[n-1].till = killed
	}
	return out
}

// Scenario 25 (docs/chaos-results.md): replicas whose configs differ (issue 18's
// example): job x every 2 s on A, every 3 s on B, absent on C; job tick
// the same on all three. With job_set_mismatch: refuse, the longest-
// standing replica's set wins each tie, so A leads; after A is killed B
// leads (x every 3 s); after B is killed C leads (no x); then two replicas
// with B's config join and form a majority, so C steps down and one of
// them leads. D = 0 for both jobs; every slot of tick ran or has a record;
// every 3 s slot of x from B's first run on ran or has a record, and its
// reason is the true one: a slot that came due while C led (or after, C
// being the last to lead) is recorded as not in the leader's job set,
// naming C, never as "no replica led"; no slot of x ran under C.
func TestChaosDivergentJobSets(t *testing.T) {
	skipChaos(t)
	chaosBinaries(t)
	eps := endpoints(startCluster(t, 1))
	// One ledger per job: checkLedger counts slots by time alone.
	path, pathX := filepath.Join(t.TempDir(), "tick.jsonl"), filepath.Join(t.TempDir(), "x.jsonl")
	const settle = time.Second
	tick := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"})
	cfgA := tick + ledgerJobsYAML(pathX, ledgerJobDef{"x", "2s"})
	cfgB := tick + ledgerJobsYAML(pathX, ledgerJobDef{"x", "3s"})
	cfgC := tick
	res := &chaosResult{scenario: 25}

	a := startJobSetReplica(t, "a", eps, settle, "refuse", cfgA)
	if waitLeader(t, []*proc{a}, 30*time.Second) != a {
		t.Fatal("a does not lead")
	}
	b := startJobSetReplica(t, "b", eps, settle, "refuse", cfgB)
	c := startJobSetReplica(t, "c", eps, settle, "refuse", cfgC)
	all := []*proc{a, b, c}
	for _, p := range []*proc{b, c} {
		v := p.waitCluster("three sets, a's the cluster's", 15*time.Second, func(v clusterView) bool {
			return len(v.Replicas) == 3 && v.ClusterJobSet != ""
		})
		if v.JobSetAgreed || v.MayLead {
			t.Fatalf("%s: %+v; want it refusing to lead", p.name, v)
		}
	}
	a.waitMetric("pacer_job_sets", 3, 10*time.Second)
	waitRunsAfter(a, 6, time.Time{}, 20*time.Second)

	// kill -9 of a: b's set wins the tie with c (b is older).
	kills := map[string]time.Time{}
	fault := time.Now()
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	kills["a"] = fault
	leader, f := failoverTTL(t, []*proc{b, c}, fault, chaosTTL, settle+3*time.Second)
	if leader != b {
		t.Fatalf("%s leads after a; want b (its set wins the tie with c)", leader.name)
	}
	res.runs++
	res.F = append(res.F, f)
	waitRunsAfter(b, 6, fault, 20*time.Second)

	// kill -9 of b: c alone, without x.
	fault = time.Now()
	b.signal(syscall.SIGKILL)
	b.wait(10 * time.Second)
	kills["b"] = fault
	if leader, f = failoverTTL(t, []*proc{c}, fault, chaosTTL, settle+3*time.Second); leader != c {
		t.Fatal("c does not lead")
	}
	res.runs++
	res.F = append(res.F, f)
	waitRunsAfter(c, 5, fault, 20*time.Second)

	// Two replicas with b's config: a majority for b's set; c steps down.
	b2 := startJobSetReplica(t, "b2", eps, settle, "refuse", cfgB)
	b3 := startJobSetReplica(t, "b3", eps, settle, "refuse", cfgB)
	all = append(all, b2, b3)
	joined := time.Now()
	leader = waitLeader(t, []*proc{b2, b3}, 30*time.Second)
	c.waitLogs("c to step down", 15*time.Second, func(ls []logLine) bool { return !leading(ls) })
	waitRunsAfter(leader, 6, joined, 20*time.Second)
	if v := c.waitCluster("c to see b's set the cluster's", 10*time.Second, func(v clusterView) bool { return !v.MayLead }); v.JobSetAgreed {
		t.Fatalf("c: %+v", v)
	}
	res.Z = stopAll(t, all)

	// tick: the usual D and M.
	res.checkLedger(t, path, eps)

	// x: D, then every 3 s slot from b's first x run on, with its reason.
	var spans []leaderSpan
	for _, p := range all {
		spans = append(spans, leaderSpans(p, kills[p.name])...)
	}
	var bSpan, cSpan leaderSpan
	for _, s := range spans {
		switch s.node {
		case "b":
			bSpan = s
		case "c":
			cSpan = s
		}
	}
	if cSpan.from.IsZero() {
		t.Fatal("c never led")
	}
	ledger, d := ledgerOf(t, readLedger(t, pathX), "x")
	res.D += d
	recs := slotRecords(t, eps, "x")
	var lastA, last time.Time
	for s, es := range ledger {
		for _, e := range es {
			if e.Node == "c" {
				t.Errorf("x slot %s ran on c, whose job set has no x", s.Format(time.TimeOnly))
			}
			if e.Node == "a" && s.After(lastA) {
				lastA = s
			}
		}
		if s.After(last) {
			last = s
		}
	}
	// From the first slot of b's schedule after a's last run of x.
	from := lastA.Truncate(3 * time.Second).Add(3 * time.Second)
	ran, notInSet, noLeader := 0, 0, 0
	for s := from; !s.After(last); s = s.Add(3 * time.Second) {
		if _, ok := ledger[s]; ok {
			ran++
			if s.After(cSpan.from) && s.Before(cSpan.till) {
				t.Errorf("x slot %s came due while c led without x, and ran (late) all the same", s.Format(time.TimeOnly))
			}
			continue
		}
		r, ok := recs[s]
		if !ok {
			res.M++
			t.Errorf("x slot %s: neither run nor recorded", s.Format(time.TimeOnly))
			continue
		}
		switch r.Reason {
		case "not_in_job_set":
			notInSet++
		case "misfire":
			noLeader++
		}
		// Before b led, the last leader was a, with x every 2 s.
		if s.Before(bSpan.from) && (r.Reason != "not_in_job_set" || !strings.Contains(r.Error, "a (shard 0, fencing token") ||
			!strings.Contains(r.Error, "had the job defined differently")) {
			t.Errorf("x slot %s (b led from %s): recorded %s %q; want not_in_job_set naming a", s.Format(time.TimeOnly),
				bSpan.from.Format(time.TimeOnly), r.Reason, r.Error)
		}
		// While c led, and after it until the next leader, the true reason
		// is c's job set.
		if s.After(cSpan.from) {
			if r.Reason != "not_in_job_set" || !strings.Contains(r.Error, "c (shard 0, fencing token") || !strings.Contains(r.Error, "did not have the job") {
				t.Errorf("x slot %s (c led from %s): recorded %s %q; want not_in_job_set naming c", s.Format(time.TimeOnly),
					cSpan.from.Format(time.TimeOnly), r.Reason, r.Error)
			}
		}
	}
	t.Logf("x: slots every 3 s from %s to %s: %d ran, %d recorded as not in the leader's job set, %d as missed while no replica led",
		from.Format(time.TimeOnly), last.Format(time.TimeOnly), ran, notInSet, noLeader)
	if notInSet == 0 {
		t.Error("no slot of x was recorded as not in the leader's job set, though c led without it")
	}
	es := readEpochs(t, eps)
	var nodes []string
	for _, e := range es {
		nodes = append(nodes, e.Node+"="+coord.Short(e.JobSet))
	}
	t.Logf("epochs: %s", strings.Join(nodes, " → "))
	res.report(t)
	if res.D != 0 || res.M != 0 || res.Z != 0 {
		t.Fatalf("D=%d M=%d Z=%d, want 0", res.D, res.M, res.Z)
	}
}
