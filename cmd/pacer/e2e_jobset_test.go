package main

// Job-set agreement through real processes: replicas whose config files
// differ, a rolling update, and (chaos_jobset_test.go) divergent configs
// across failovers.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/coord"
)

// ledgerJobDef is one ledger job of a replica's config.
type ledgerJobDef struct {
	id, every string
}

// ledgerJobsYAML is a jobs: section of ledger jobs writing to path.
func ledgerJobsYAML(path string, defs ...ledgerJobDef) string {
	var b strings.Builder
	for _, d := range defs {
		fmt.Fprintf(&b, `
  - id: %s
    plugin: ledger
    task: record
    schedule: "@every %s"
    timeout: 30s
    overlap: forbid
    delivery: at-most-once
    misfire: {policy: once, grace: 10s}
    params: {path: %q}
`, d.id, d.every, path)
	}
	return b.String()
}

// jobSetConfig is a replica's config against eps, with a short job-set
// settle delay, and one shard: one replica leads (the sharded cluster:
// e2e_shard_test.go, chaos_shard_test.go).
func jobSetConfig(t *testing.T, name, httpAddr string, eps []string, settle time.Duration, mismatch, jobs string) string {
	return fmt.Sprintf(`
node: {name: %s}
cluster:
  name: chaos
  data_dir: %s
  lease_ttl: %s
  shards: 1
  job_set_settle: %s
  job_set_mismatch: %s
  etcd: {endpoints: [%s], dial_timeout: 2s, request_timeout: 1s}
http: {listen: %s}
plugins: {dir: %s}
history: {keep: 1000}
jobs:%s`, name, t.TempDir(), chaosTTL, settle, mismatch, strings.Join(eps, ", "), httpAddr, filepath.Join(binDir, "plugins"), jobs)
}

// startJobSetReplica starts a replica and waits until its scheduler runs.
func startJobSetReplica(t *testing.T, name string, eps []string, settle time.Duration, mismatch, jobs string) *proc {
	t.Helper()
	addr := freeAddr(t)
	p := startPacer(t, name, addr, jobSetConfig(t, name, addr, eps, settle, mismatch, jobs))
	p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
	return p
}

// clusterView is what /api/v1/cluster says of job sets.
type clusterView struct {
	Leading       bool     `json:"leading"`
	JobSet        string   `json:"job_set"`
	ClusterJobSet string   `json:"cluster_job_set"`
	JobSetAgreed  bool     `json:"job_set_agreed"`
	MayLead       bool     `json:"may_lead"`
	Members       []string `json:"members"`
	Replicas      []struct {
		Node        string `json:"node"`
		JobSet      string `json:"job_set"`
		Agrees      bool   `json:"agrees"`
		Candidate   bool   `json:"candidate"`
		LeadsShards []int  `json:"leads_shards"`
		Reason      string `json:"reason"`
	} `json:"replicas"`
}

func (p *proc) cluster() (clusterView, error) {
	var v clusterView
	out, code := p.cli(nil, "status", "-o", "json")
	if code != 0 {
		return v, fmt.Errorf("pacer status: exit %d: %s", code, out)
	}
	return v, json.Unmarshal([]byte(out), &v)
}

// waitCluster waits until p's view of the cluster satisfies pred.
func (p *proc) waitCluster(what string, timeout time.Duration, pred func(clusterView) bool) clusterView {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := p.cluster()
		if err == nil && pred(v) {
			return v
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.exitErr, what)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: timed out after %s waiting for %s (last view %+v, %v)", p.name, timeout, what, v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMetric waits until p's metric name (with labels) has value want.
func (p *proc) waitMetric(name string, want float64, timeout time.Duration, labels ...string) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.metric(name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: %s = %v after %s, want %v", p.name, name, got, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readEpochs reads the epochs the leaders recorded (of shard 0: the only
// one, jobSetConfig).
func readEpochs(t *testing.T, eps []string) []coord.Epoch {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c := coord.New(coord.Options{Client: cli, Cluster: "chaos"})
	es, err := c.Epochs(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// slotRecord is a stored record of a slot that did not run to success.
type slotRecord struct {
	State, Reason, Error, Node string
}

// slotRecords reads job's run and skip records that account for a slot
// without a success: skipped slots and failed attempts.
func slotRecords(t *testing.T, eps []string, job string) map[time.Time]slotRecord {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pacer/chaos/runs/"+job+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[time.Time]slotRecord{}
	for _, kv := range resp.Kvs {
		var rec struct {
			ScheduledTime time.Time `json:"scheduled_time"`
			slotRecord
		}
		if json.Unmarshal(kv.Value, &rec) == nil && rec.State != "success" && rec.State != "running" {
			out[rec.ScheduledTime.UTC()] = rec.slotRecord
		}
	}
	return out
}

// ledgerOf is the job's ledger entries by slot, and D: slots with more
// than one accepted execution.
func ledgerOf(t *testing.T, entries []ledgerEntry, job string) (map[time.Time][]ledgerEntry, int) {
	t.Helper()
	by := map[time.Time][]ledgerEntry{}
	for _, e := range entries {
		if e.Job == job {
			by[e.ScheduledTime.UTC()] = append(by[e.ScheduledTime.UTC()], e)
		}
	}
	d := 0
	for s, es := range by {
		n := 0
		for _, e := range es {
			if e.Accepted {
				n++
			}
		}
		if n > 1 {
			d++
			t.Errorf("%s slot %s: %d accepted executions", job, s.Format(time.RFC3339), n)
		}
	}
	return by, d
}

// unaccounted returns the slots of every interval from..until (inclusive)
// that have neither a ledger line nor a record saying why.
func unaccounted(ledger map[time.Time][]ledgerEntry, recs map[time.Time]slotRecord, from, until time.Time, every time.Duration) []time.Time {
	var out []time.Time
	for s := from; !s.After(until); s = s.Add(every) {
		if _, ran := ledger[s]; ran {
			continue
		}
		if _, rec := recs[s]; rec {
			continue
		}
		out = append(out, s)
	}
	return out
}

// firstLast are the earliest and latest slots of a ledger, optionally only
// those that are multiples of every.
func firstLast(ledger map[time.Time][]ledgerEntry, keep func(time.Time) bool) (first, last time.Time) {
	for s := range ledger {
		if keep != nil && !keep(s) {
			continue
		}
		if first.IsZero() || s.Before(first) {
			first = s
		}
		if s.After(last) {
			last = s
		}
	}
	return first, last
}

// jobSetsOf reduces epochs to the sequence of job sets the cluster ran,
// consecutive repeats dropped.
func jobSetsOf(es []coord.Epoch) []string {
	var out []string
	for _, e := range es {
		if len(out) == 0 || out[len(out)-1] != e.JobSet {
			out = append(out, e.JobSet)
		}
	}
	return out
}

// pacer status, through real processes: a replica whose config's jobs
// differ from the cluster's campaigns in no election, yet every replica's
// status lists it, once, as no candidate with its reason; and once etcd is
// gone, pacer status against a replica says that it cannot reach etcd and
// what to check, not a bare 503.
func TestE2EStatusListsEveryReplicaOnceAndSaysWhenEtcdIsGone(t *testing.T) {
	skipChaos(t)
	chaosBinaries(t)
	etcd := startCluster(t, 1)
	eps := endpoints(etcd)
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	const settle = time.Second
	jobs := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"})
	odd := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"}, ledgerJobDef{"extra", "1s"})
	r1 := startJobSetReplica(t, "r1", eps, settle, "refuse", jobs)
	r2 := startJobSetReplica(t, "r2", eps, settle, "refuse", jobs)
	r3 := startJobSetReplica(t, "r3", eps, settle, "refuse", odd)
	all := []*proc{r1, r2, r3}
	leader := waitLeader(t, all[:2], 30*time.Second)

	for _, p := range all {
		v := p.waitCluster("three replicas, r3 no candidate", 15*time.Second, func(v clusterView) bool {
			if len(v.Replicas) != 3 {
				return false
			}
			for _, r := range v.Replicas {
				if r.Node == "r3" {
					return !r.Candidate && r.Reason != ""
				}
			}
			return false
		})
		if got := slices.Sorted(slices.Values(v.Members)); !slices.Equal(got, []string{"r1", "r2", "r3"}) || v.Members[0] != leader.name {
			t.Fatalf("%s: members %v, want r1, r2, r3 each once, the leader %s first", p.name, v.Members, leader.name)
		}
		for _, r := range v.Replicas {
			switch {
			case r.Node == "r3" && (!strings.HasPrefix(r.Reason, coord.ReasonJobSetDiffers) || len(r.LeadsShards) != 0):
				t.Fatalf("%s: r3 %+v, want its reason the job set and no shard", p.name, r)
			case r.Node == leader.name && (!r.Candidate || !slices.Equal(r.LeadsShards, []int{0})):
				t.Fatalf("%s: the leader %+v, want a candidate leading shard 0", p.name, r)
			}
		}
	}
	out, code := r1.cli(nil, "status")
	if code != 0 || !strings.Contains(out, "CANDIDATE") || strings.Count(out, "\nr3 ") != 1 {
		t.Fatalf("pacer status (exit %d): want r3 listed once:\n%s", code, out)
	}
	t.Logf("pacer status:\n%s", out)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "r3 ") && !strings.Contains(l, " NO ") || strings.HasPrefix(l, "r3 ") && !strings.Contains(l, coord.ReasonJobSetDiffers) {
			t.Fatalf("r3's line %q: want it no candidate, with its reason:\n%s", l, out)
		}
	}

	// etcd gone: a replica answers with what it knows, and the CLI says
	// what is wrong and what to check. The jobs' state turns unknown once
	// the replica has not heard from etcd for a lease TTL.
	etcd[0].kill()
	wants := []string{"replica r2 cannot reach etcd (last heard from etcd at ", "it leads nothing", "node:     r2 (CANNOT REACH ETCD)",
		"cluster.etcd.endpoints", "jobs:     state unknown"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, code = r2.cli(nil, "status")
		if code == 1 && !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(out, w) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pacer status with etcd gone (exit %d), want %q:\n%s", code, wants, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("pacer status with etcd gone:\n%s", out)
	if strings.Contains(out, "503 Service Unavailable") {
		t.Fatalf("pacer status with etcd gone prints a bare status:\n%s", out)
	}
	stopAll(t, all)
}

// A rolling update of three replicas to a new config, one after the other:
// the cluster keeps running the old job set while most replicas have it,
// switches to the new one once, when the second replica comes back with it
// (the majority point), and never goes back; no slot runs twice; every slot
// of every job either ran or has a record saying why; a job the update
// removes never runs under the new set, and one it adds never under the
// old.
func TestE2ERollingUpdateSwitchesJobSetOnce(t *testing.T) {
	skipChaos(t)
	chaosBinaries(t)
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	const settle = time.Second
	old := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"}, ledgerJobDef{"x", "2s"}, ledgerJobDef{"gone", "1s"})
	next := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"}, ledgerJobDef{"x", "3s"}, ledgerJobDef{"added", "1s"})

	names := []string{"r1", "r2", "r3"}
	var all, live []*proc
	for _, n := range names {
		p := startJobSetReplica(t, n, eps, settle, "refuse", old)
		all, live = append(all, p), append(live, p)
	}
	leader := waitLeader(t, live, 30*time.Second)
	waitRunsAfter(leader, 3, time.Time{}, 20*time.Second)
	oldSet := leader.waitCluster("the old set agreed", 10*time.Second, func(v clusterView) bool {
		return v.JobSetAgreed && len(v.Replicas) == 3
	}).JobSet

	var majority time.Time // when the second replica came back with the new set
	var newSet string
	for i, n := range names {
		p := live[i]
		p.signal(syscall.SIGTERM)
		if code := p.wait(40 * time.Second); code != 0 {
			t.Fatalf("%s exited %d", n, code)
		}
		q := startJobSetReplica(t, n, eps, settle, "refuse", next)
		all, live[i] = append(all, q), q
		if i == 1 {
			majority = time.Now()
		}
		v := q.waitCluster("its first decision", 15*time.Second, func(v clusterView) bool {
			return len(v.Replicas) == 3 && v.ClusterJobSet != ""
		})
		newSet = v.JobSet
		switch i {
		case 0: // a minority: it waits, and says why
			if v.JobSetAgreed || v.MayLead || v.ClusterJobSet != oldSet {
				t.Fatalf("%s with the new set, a minority: %+v; want it refusing", n, v)
			}
			if out, _ := q.cli(nil, "status"); !strings.Contains(out, "DIFFERS from the cluster's") ||
				!strings.Contains(out, "only here: added") || !strings.Contains(out, "missing here: gone") ||
				!strings.Contains(out, "defined differently: x") {
				t.Fatalf("pacer status of the refusing replica:\n%s", out)
			}
			if got := q.metric("pacer_job_set_agreed", `node="r1"`); got != 0 {
				t.Fatalf("pacer_job_set_agreed{node=r1} = %v, want 0", got)
			}
			live[1].waitMetric("pacer_job_sets", 2, 10*time.Second)
		case 1: // the majority point: the new set takes over
			q.waitCluster("the new set to be the cluster's", 15*time.Second, func(v clusterView) bool { return v.JobSetAgreed && v.MayLead })
			// The old set's last replica steps down; one with the new set leads.
			waitLeader(t, live[:2], 30*time.Second)
			live[2].waitLogs("the old set's replica to step down", 15*time.Second, func(ls []logLine) bool { return !leading(ls) })
		}
		leader = waitLeader(t, live, 30*time.Second)
		waitRunsAfter(leader, 4, time.Now(), 30*time.Second)
	}
	for _, p := range live {
		v := p.waitCluster("every replica to agree", 15*time.Second, func(v clusterView) bool {
			return v.JobSetAgreed && v.JobSet == newSet && len(v.Replicas) == 3
		})
		for _, r := range v.Replicas {
			if !r.Agrees {
				t.Fatalf("%s: replica %s does not agree at the end: %+v", p.name, r.Node, v)
			}
		}
		p.waitMetric("pacer_job_sets", 1, 10*time.Second)
	}
	Z := stopAll(t, all)

	// The sets the cluster ran, in order: the old one, then the new one,
	// switched once, after the majority point.
	es := readEpochs(t, eps)
	if got := jobSetsOf(es); !slices.Equal(got, []string{oldSet, newSet}) {
		t.Fatalf("job sets run, in order: %v; want [%s %s]", shorts(got), coord.Short(oldSet), coord.Short(newSet))
	}
	var switched time.Time
	tokenSet := map[int64]string{}
	for _, e := range es {
		if e.JobSet == newSet && switched.IsZero() {
			switched = e.Since
		}
		tokenSet[e.Token] = e.JobSet
	}
	if switched.Before(majority) {
		t.Fatalf("switched to the new set at %s, before the second replica had it (%s)", switched.Format(time.TimeOnly), majority.Format(time.TimeOnly))
	}
	t.Logf("switched to the new set %s after the second replica restarted with it", switched.Sub(majority).Round(time.Millisecond))

	entries := readLedger(t, path)
	D := 0
	for _, job := range []string{"tick", "x", "gone", "added"} {
		ledger, d := ledgerOf(t, entries, job)
		D += d
		recs := slotRecords(t, eps, job)
		first, last := firstLast(ledger, nil)
		t.Logf("%s: %d slots run, %s to %s; %d records of slots not run", job, len(ledger), first.Format(time.TimeOnly), last.Format(time.TimeOnly), len(recs))
		for s, es := range ledger {
			for _, e := range es {
				set := tokenSet[e.FencingToken]
				if (job == "gone" && set == newSet) || (job == "added" && set == oldSet) {
					t.Errorf("%s slot %s ran under job set %s, which does not have it", job, s.Format(time.TimeOnly), coord.Short(set))
				}
			}
		}
		var missing []time.Time
		switch job {
		case "tick", "gone", "added":
			first, last := firstLast(ledger, nil)
			missing = unaccounted(ledger, recs, first, last, time.Second)
		case "x": // every 2 s under the old set, then every 3 s
			first2, last2 := firstLast(ledger, func(s time.Time) bool { return tokenSet[ledger[s][0].FencingToken] == oldSet })
			missing = unaccounted(ledger, recs, first2, last2, 2*time.Second)
			_, last3 := firstLast(ledger, nil)
			from := last2.Truncate(3 * time.Second).Add(3 * time.Second)
			missing = append(missing, unaccounted(ledger, recs, from, last3, 3*time.Second)...)
			n := 0
			for _, r := range recs {
				if r.Reason == "not_in_job_set" {
					n++
					if !strings.Contains(r.Error, "had the job defined differently") {
						t.Errorf("x: not_in_job_set record says %q", r.Error)
					}
				}
			}
			t.Logf("x: %d slots of the new schedule before the switch recorded as not in the leader's job set", n)
		}
		for _, s := range missing {
			t.Errorf("%s slot %s: no ledger line and no record saying why", job, s.Format(time.RFC3339))
		}
	}
	t.Logf("rolling update: ledger lines %d, accepted %d, D=%d Z=%d", len(entries), countAccepted(entries), D, Z)
	if D != 0 || Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", D, Z)
	}
}

func shorts(fps []string) []string {
	out := make([]string, len(fps))
	for i, f := range fps {
		out[i] = coord.Short(f)
	}
	return out
}

// The leader of a two-replica cluster reloads its config to a new job set
// (attack 21, S5): one replica has each set, and the tie is the newest
// epoch's, the set the leader now runs. Through real processes, every view
// of both replicas says so, again and again: the leader keeps leading with
// the new set and says it agrees; the other says the cluster's set is the
// new one and that its own differs. Before the fix, each view took one of
// the term's two epochs in map order: both replicas refused to lead, or
// both took their own set for the cluster's.
func TestE2EReloadedLeaderKeepsTheClusterOnItsNewJobSet(t *testing.T) {
	skipChaos(t)
	chaosBinaries(t)
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	const settle = time.Second
	old := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"}, ledgerJobDef{"x", "2s"})
	next := ledgerJobsYAML(path, ledgerJobDef{"tick", "1s"}, ledgerJobDef{"x", "3s"})
	r1 := startJobSetReplica(t, "r1", eps, settle, "refuse", old)
	r2 := startJobSetReplica(t, "r2", eps, settle, "refuse", old)
	all := []*proc{r1, r2}
	leader := waitLeader(t, all, 30*time.Second)
	other := r1
	if other == leader {
		other = r2
	}
	oldSet := leader.waitCluster("the old set agreed", 15*time.Second, func(v clusterView) bool {
		return v.JobSetAgreed && len(v.Replicas) == 2
	}).JobSet

	// The new config, renamed into place: applied at once.
	cfg, err := os.ReadFile(leader.configPath)
	must(err)
	head, _, ok := strings.Cut(string(cfg), "\njobs:")
	if !ok {
		t.Fatalf("no jobs: section in %s", leader.configPath)
	}
	tmp := leader.configPath + ".new"
	must(os.WriteFile(tmp, []byte(head+"\njobs:"+next), 0o644))
	must(os.Rename(tmp, leader.configPath))
	leader.waitLogs("the reload", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("config reloaded"))) == 1 })
	reloaded := time.Now()
	newSet := leader.waitCluster("the leader's view of its new set", 15*time.Second, func(v clusterView) bool {
		return v.JobSet != oldSet && v.ClusterJobSet == v.JobSet
	}).JobSet
	other.waitCluster("the other replica's view of the new set", 15*time.Second, func(v clusterView) bool {
		return v.ClusterJobSet == newSet
	})

	// Every view, from here on, says the same.
	for i := range 20 {
		lv, err := leader.cluster()
		if err != nil {
			t.Fatal(err)
		}
		if !lv.Leading || lv.ClusterJobSet != newSet || !lv.JobSetAgreed || !lv.MayLead {
			t.Fatalf("view %d of the reloaded leader %s: leading %v, cluster's set %s, agreed %v, may lead %v; want it leading its new set %s",
				i, leader.name, lv.Leading, coord.Short(lv.ClusterJobSet), lv.JobSetAgreed, lv.MayLead, coord.Short(newSet))
		}
		ov, err := other.cluster()
		if err != nil {
			t.Fatal(err)
		}
		if ov.ClusterJobSet != newSet || ov.JobSetAgreed || ov.JobSet != oldSet {
			t.Fatalf("view %d of %s: its set %s, the cluster's %s, agreed %v; want the cluster's the leader's new set %s, its own %s differing",
				i, other.name, coord.Short(ov.JobSet), coord.Short(ov.ClusterJobSet), ov.JobSetAgreed, coord.Short(newSet), coord.Short(oldSet))
		}
	}
	waitRunsAfter(leader, 3, reloaded, 20*time.Second)
	if l := waitLeader(t, all, 10*time.Second); l != leader {
		t.Fatalf("%s leads after %s reloaded; want the reloaded leader to keep leading", l.name, leader.name)
	}
	stopAll(t, all)
}

// A rolling change of cluster.shards through real processes (attack 22,
// T1): three replicas with 4 shards, then two restarted with 8, one after
// the other. A job's shard depends on the count, so the replicas with 8
// must not lead before the one with 4 has stepped down: every ledger line
// is accepted (no job's fencing token ever goes down, which the ledger
// plugin refuses, as an external system keeping the highest token per job
// would), no slot runs twice, no two runs of a job overlap, and no term of
// 8 shards starts before the last term of 4 has ended. Before the fix,
// the restarted replicas led shards 4-7 at once, beside the old count's
// leader, for job_set_settle ("r2 led shard 6 of 8 at 15:37:32.715, before
// r1's last term of 4 ended at 15:37:34.729").
func TestE2EShardCountChangeHasOneLeaderPerJob(t *testing.T) {
	skipChaos(t)
	chaosBinaries(t)
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	const settle = 2 * time.Second
	var defs []ledgerJobDef
	for i := range 12 {
		defs = append(defs, ledgerJobDef{fmt.Sprintf("j%02d", i), "1s"})
	}
	jobs := ledgerJobsYAML(path, defs...)
	start := func(name string, shards int) *proc {
		addr := freeAddr(t)
		cfg := strings.Replace(jobSetConfig(t, name, addr, eps, settle, "refuse", jobs), "  shards: 1\n",
			fmt.Sprintf("  shards: %d\n  shard_settle: 1s\n", shards), 1)
		p := startPacer(t, name, addr, cfg)
		p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
		return p
	}
	r1, r2, r3 := start("r1", 4), start("r2", 4), start("r3", 4)
	all := []*proc{r1, r2, r3}
	waitRunsAfter(r1, 3, time.Time{}, 30*time.Second)
	restart := func(p *proc) *proc {
		p.signal(syscall.SIGTERM)
		if code := p.wait(40 * time.Second); code != 0 {
			t.Fatalf("%s exited %d", p.name, code)
		}
		q := start(p.name, 8)
		all = append(all, q)
		return q
	}
	// The shards a replica leads, by its log.
	led := func(ls []logLine) map[float64]bool {
		m := map[float64]bool{}
		for _, l := range ls {
			switch l.str("msg") {
			case "became leader":
				m[l["shard"].(float64)] = true
			case "leadership ended", "resigned leadership":
				delete(m, l["shard"].(float64))
			}
		}
		return m
	}
	n3 := restart(r3) // a minority with 8: it waits
	n2 := restart(r2) // the majority: the cluster switches to 8
	r1.waitLogs("r1, with 4 shards, to step down", 30*time.Second, func(ls []logLine) bool { return len(led(ls)) == 0 })
	switched := time.Now()
	waitRunsAfter(n2, 5, switched, 30*time.Second)
	stopAll(t, all)

	// No term of the 8 shards started before r1's last term of 4 ended.
	var oldEnd time.Time
	for _, l := range r1.logs() {
		if m := l.str("msg"); (m == "leadership ended" || m == "resigned leadership") && logTime(l).After(oldEnd) {
			oldEnd = logTime(l)
		}
	}
	for _, p := range []*proc{n2, n3} {
		for _, l := range match(p.logs(), msgIs("became leader")) {
			if logTime(l).Before(oldEnd) {
				t.Errorf("%s led shard %v of 8 at %s, before r1's last term of 4 ended at %s", p.name, l["shard"],
					logTime(l).Format("15:04:05.000"), oldEnd.Format("15:04:05.000"))
			}
		}
	}

	entries := readLedger(t, path)
	D := 0
	for _, d := range defs {
		ledger, dup := ledgerOf(t, entries, d.id)
		D += dup
		var runs []ledgerEntry
		for _, es := range ledger {
			runs = append(runs, es...)
		}
		slices.SortFunc(runs, func(a, b ledgerEntry) int { return a.Start.Compare(b.Start) })
		for i, e := range runs {
			if !e.Accepted {
				t.Errorf("%s slot %s on %s: refused by the ledger, token %d below the job's highest %d (two shard counts led the job)",
					d.id, e.ScheduledTime.Format(time.TimeOnly), e.Node, e.FencingToken, e.Highest)
			}
			if i > 0 && e.Start.Before(runs[i-1].End) && e.Node != runs[i-1].Node {
				t.Errorf("%s: runs on %s and %s overlap", d.id, runs[i-1].Node, e.Node)
			}
		}
	}
	if D != 0 {
		t.Fatalf("D = %d slots ran twice", D)
	}
	t.Logf("%d runs in the ledger, every one accepted; switched to 8 shards at %s", len(entries), switched.Format(time.TimeOnly))
}
