package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/shard"
)

// ledShards replays a replica's leadership lines (each names its shard), up
// to the line before until (zero: all), and returns the shards it leads.
func ledShards(lines []logLine, until time.Time) map[int]bool {
	led := map[int]bool{}
	for _, l := range lines {
		if !until.IsZero() && !logTime(l).Before(until) {
			break
		}
		n := shardOfLine(l)
		if n < 0 {
			continue
		}
		switch l.str("msg") {
		case "became leader":
			led[n] = true
		case "leadership ended", "resigned leadership":
			delete(led, n)
		}
	}
	return led
}

func shardOfLine(l logLine) int {
	if f, ok := l["shard"].(float64); ok {
		return int(f)
	}
	return -1
}

// ledOf returns the shards p leads now, by its log.
func ledOf(p *proc) []int { return slices.Sorted(maps.Keys(ledShards(p.logs(), time.Time{}))) }

// waitAssigned waits until the replicas in ps lead exactly the shards the
// assignment over their names gives each, as their logs say.
func waitAssigned(t *testing.T, shards int, ps []*proc, timeout time.Duration) {
	t.Helper()
	var names []string
	for _, p := range ps {
		names = append(names, p.name)
	}
	want := shard.Assign(shards, names)
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, p := range ps {
			if !slices.Equal(ledOf(p), shard.Owned(want, p.name)) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var got []string
			for _, p := range ps {
				got = append(got, fmt.Sprintf("%s=%v", p.name, ledOf(p)))
			}
			t.Fatalf("shards not settled after %s: %s; want %v", timeout, strings.Join(got, " "), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Three replicas on one etcd split six shards two each. Each runs the jobs
// of its own shards and no other; the metrics, `pacer status` and the API
// say who leads what; a trigger, a pause and the run history work from a
// replica that does not lead the job's shard.
func TestE2EShardsSplitAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	etcd := startEtcd(t, "e2e")
	const shards = 6
	var jobs strings.Builder
	var ids []string
	for i := range 12 {
		id := fmt.Sprintf("tick-%02d", i)
		ids = append(ids, id)
		fmt.Fprintf(&jobs, "\n  - {id: %s, plugin: testplugin, task: echo, schedule: \"@every 1s\", params: {message: %s}}", id, id)
	}
	jobs.WriteString("\n  - {id: yearly, plugin: shell, task: exec, schedule: \"0 0 0 1 1 *\", params: {command: 'echo \"manual $PACER_SHARD $PACER_FENCING_TOKEN\"', shell: true}}\n")
	var ps []*proc
	for _, name := range []string{"r1", "r2", "r3"} {
		httpAddr := freeAddr(t)
		ps = append(ps, startPacer(t, name, httpAddr, fmt.Sprintf(`
node: {name: %s}
cluster:
  name: e2e
  data_dir: %s
  lease_ttl: 2s
  shards: %d
  shard_settle: 1s
  etcd: {endpoints: [%s]}
http: {listen: %s}
plugins: {dir: %s}
jobs:%s`, name, t.TempDir(), shards, etcd.Endpoint(), httpAddr, filepath.Join(binDir, "plugins"), jobs.String())))
	}
	waitAssigned(t, shards, ps, 60*time.Second)
	settled := time.Now() // before, the first replica up led every shard, and handed most over
	want := shard.Assign(shards, []string{"r1", "r2", "r3"})
	leaderOf := func(job string) *proc {
		return ps[slices.IndexFunc(ps, func(p *proc) bool { return p.name == want[shard.Of(job, shards)] })]
	}

	// Metrics: two shards each; pacer_leader on shard 0's leader only;
	// each scheduler holds its shards' jobs.
	for _, p := range ps {
		if n := p.metric("pacer_shards_led", `node="`+p.name+`"`); n != 2 {
			t.Errorf("%s: pacer_shards_led %v, want 2", p.name, n)
		}
		lead := 0.0
		if want[0] == p.name {
			lead = 1
		}
		if v := p.metric("pacer_leader", `node="`+p.name+`"`); v != lead {
			t.Errorf("%s: pacer_leader %v, want %v (it leads shard 0: %v)", p.name, v, lead, lead == 1)
		}
		for n := range shards {
			v := 0.0
			if want[n] == p.name {
				v = 1
			}
			if got := p.metric("pacer_shard_leader", fmt.Sprintf(`shard="%d"`, n)); got != v {
				t.Errorf("%s: pacer_shard_leader{shard=%d} %v, want %v", p.name, n, got, v)
			}
		}
		held := 0
		for _, id := range append(slices.Clone(ids), "yearly") {
			if leaderOf(id) == p {
				held++
			}
		}
		if got := p.metric("pacer_scheduled_jobs"); got != float64(held) {
			t.Errorf("%s: pacer_scheduled_jobs %v, want %d (the jobs of its shards)", p.name, got, held)
		}
	}

	// Every job runs, each only on its shard's leader.
	since := settled
	for _, id := range ids {
		leaderOf(id).waitLogs(id+" to run", 15*time.Second, func(ls []logLine) bool {
			_, ok := firstAfter(ls, since, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == id })
			return ok
		})
	}
	for _, p := range ps {
		for _, l := range match(p.logs(), msgIs("run started")) {
			if !logTime(l).After(settled) {
				continue
			}
			if job := l.str("job"); leaderOf(job) != p {
				t.Errorf("%s ran %s, whose shard %d %s leads", p.name, job, shard.Of(job, shards), leaderOf(job).name)
			} else if shardOfLine(l) != shard.Of(job, shards) {
				t.Errorf("%s: run of %s logged shard %d, want %d", p.name, job, shardOfLine(l), shard.Of(job, shards))
			}
		}
	}

	// Status and the cluster API from one replica show every shard's
	// leader.
	var other, third *proc // replicas that do not lead yearly's shard
	for _, p := range ps {
		if p != leaderOf("yearly") {
			if other == nil {
				other = p
			} else {
				third = p
			}
		}
	}
	out, code := other.cli(nil, "status")
	if code != 0 || !strings.Contains(out, "shards:   6, 6 led") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	for _, p := range ps {
		led := shard.Owned(want, p.name)
		if !strings.Contains(out, fmt.Sprintf("%s  leads 2: %d %d", p.name, led[0], led[1])) {
			t.Errorf("status does not show %s leading %v:\n%s", p.name, led, out)
		}
	}
	var cluster struct {
		Leader string
		Shards []struct {
			Shard        int
			Leader       string
			FencingToken int64 `json:"fencing_token"`
		}
		Replicas []struct {
			Node   string
			Shards int // each replica's cluster.shards, from its member record
		}
	}
	out, code = third.cli(nil, "status", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &cluster) != nil || len(cluster.Shards) != shards || cluster.Leader != want[0] {
		t.Fatalf("status -o json: exit %d\n%s", code, out)
	}
	for _, s := range cluster.Shards {
		if s.Leader != want[s.Shard] || s.FencingToken == 0 {
			t.Errorf("/api/v1/cluster: shard %d led by %q (token %d), want %s", s.Shard, s.Leader, s.FencingToken, want[s.Shard])
		}
	}
	if len(cluster.Replicas) != len(ps) {
		t.Errorf("/api/v1/cluster: replicas %+v, want %d", cluster.Replicas, len(ps))
	}
	for _, r := range cluster.Replicas {
		if r.Shards != shards {
			t.Errorf("/api/v1/cluster: replica %s shows cluster.shards %d, want %d", r.Node, r.Shards, shards)
		}
	}

	// A trigger through a replica that does not lead the job's shard runs
	// on the leader, with the shard and its token; its record is visible
	// from the third replica.
	out, code = other.cli([]string{"PACER_CORRELATION_ID=shard-corr-1"}, "trigger", "yearly")
	if code != 0 || !strings.Contains(out, "triggered yearly") {
		t.Fatalf("trigger through %s: exit %d\n%s", other.name, code, out)
	}
	lines := leaderOf("yearly").waitLogs("the triggered run", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("msg") == "run finished" && l.str("correlation_id") == "shard-corr-1"
		})) == 1
	})
	n := shard.Of("yearly", shards)
	started := match(lines, func(l logLine) bool {
		return l.str("msg") == "run started" && l.str("correlation_id") == "shard-corr-1"
	})
	if len(started) != 1 || shardOfLine(started[0]) != n {
		t.Fatalf("the triggered run's start: %v", started)
	}
	if printed := match(lines, func(l logLine) bool {
		return l.str("source") == "plugin" && l.str("msg") == fmt.Sprintf("manual %d %d", n, tokenOf(started[0]))
	}); len(printed) != 1 {
		t.Errorf("the command did not see PACER_SHARD=%d and its shard's token %d", n, tokenOf(started[0]))
	}
	waitUntil(t, "the run in the history, from a third replica", func() bool {
		out, code := third.cli(nil, "runs", "yearly", "-o", "json")
		return code == 0 && strings.Contains(out, "shard-corr-1") && strings.Contains(out, `"success"`)
	})

	// A pause through a replica that does not lead the job reaches every
	// replica.
	if out, code = other.cli(nil, "pause", "yearly"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	for _, p := range ps {
		waitUntil(t, "the pause on "+p.name, func() bool {
			out, code := p.cli(nil, "jobs", "-o", "json")
			var js struct {
				Jobs []struct {
					ID     string
					Paused bool
					Shard  int
				}
			}
			if code != 0 || json.Unmarshal([]byte(out), &js) != nil {
				return false
			}
			for _, j := range js.Jobs {
				if j.ID == "yearly" {
					return j.Paused && j.Shard == n
				}
			}
			return false
		})
	}
}

// A replica whose shards' terms start while it is still loading its jobs
// (many jobs: the job set is known from the config before the runner has
// them) catches up and schedules every job of its shards: before, a term
// that started first scheduled none of them, and its catch-up decided
// nothing (slots missed while nobody led, and slots left running by a dead
// leader, went undecided).
func TestE2EShardsTermsStartAfterTheJobsAreLoaded(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process with 40,000 jobs (skipped with -short)")
	}
	const jobs = 40000
	httpAddr := freeAddr(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `
node: {name: r1}
cluster:
  name: load
  data_dir: %s
  lease_ttl: 2s
  etcd: {embedded: {client_listen: %s, peer_listen: %s}}
http: {listen: %s}
plugins: {dir: %s}
jobs:
`, t.TempDir(), freeAddr(t), freeAddr(t), httpAddr, filepath.Join(binDir, "plugins"))
	for i := range jobs {
		fmt.Fprintf(&cfg, "  - {id: j-%05d, plugin: testplugin, task: stamp, schedule: \"0 0 0 1 1 *\", params: {path: /dev/null}}\n", i)
	}
	p := startPacer(t, "r1", httpAddr, cfg.String())
	var lines []logLine
	p.waitLogs("every shard's jobs scheduled", 120*time.Second, func(ls []logLine) bool {
		lines = match(ls, msgIs("shard's jobs scheduled"))
		return len(lines) == 16 // the default cluster.shards, all led here
	})
	total := 0
	for _, l := range lines {
		n, _ := l["jobs"].(float64)
		total += int(n)
	}
	if total != jobs {
		t.Fatalf("the shards' terms scheduled %d jobs in all, want %d", total, jobs)
	}
}
