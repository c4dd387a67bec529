package main

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/shard"
)

// shutdown.drain_timeout decides whether a run in progress at SIGTERM may
// finish: a 12s run outlives a drain of 30s (it was cancelled at the former
// fixed 10s), and is cancelled by a drain of 1s, which the runner logs.
func TestE2EDrainTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	for _, tc := range []struct {
		name    string
		drain   string
		outcome string
	}{
		{"longer than the run", "30s", "success"},
		{"shorter than the run", "1s", "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			httpAddr := freeAddr(t)
			cfg := runnerConfig{node: "drain", cluster: "drain"}.head(t, httpAddr) + fmt.Sprintf(`shutdown: {drain_timeout: %s}
jobs:
  - id: long
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 1m
    overlap: forbid
    params: {command: [sleep, "12"]}
`, tc.drain)
			p := startPacer(t, "drain", httpAddr, cfg)
			p.waitLogs("the run to start", 30*time.Second, func(ls []logLine) bool {
				return len(match(ls, msgIs("run started"))) > 0
			})
			p.signal(syscall.SIGTERM)
			if code := p.wait(60 * time.Second); code != 0 {
				t.Fatalf("exit code %d after SIGTERM, want 0", code)
			}
			finished := match(p.logs(), msgIs("run finished"))
			if len(finished) != 1 || finished[0].str("outcome") != tc.outcome {
				t.Fatalf("drain_timeout %s: finished runs %v, want one with outcome %s", tc.drain, finished, tc.outcome)
			}
			cancelled := len(match(p.logs(), msgIs("drain timeout: cancelling running runs"))) == 1
			if cancelled != (tc.outcome == "canceled") {
				t.Fatalf("drain_timeout %s: drain-timeout line logged: %v", tc.drain, cancelled)
			}
		})
	}
}

// G2: two replicas on one etcd; the leader is stopped (SIGTERM) with a
// drain of 1 s while a scheduled slot and a manual trigger of
// delivery: at-least-once jobs run (8 s each, no retries). Each cut attempt
// is recorded canceled on the leader, and the other replica, which takes
// the shard over by hand-over, runs both again at once as attempt 2 with
// the same correlation ID, to their end. Before the fix both were recorded
// canceled, their claims closed, and neither ran again.
func TestE2EDrainTimeoutLeavesAtLeastOnceRunsToTheNextLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	etcd := startEtcd(t, "e2e")
	const cmd = `{shell: true, command: 'echo "START $PACER_ATTEMPT"; sleep 8; echo "END $PACER_ATTEMPT"'}`
	var ps []*proc
	for _, name := range []string{"r1", "r2"} {
		httpAddr := freeAddr(t)
		ps = append(ps, startPacer(t, name, httpAddr, fmt.Sprintf(`
node: {name: %s}
cluster:
  name: g2
  data_dir: %s
  lease_ttl: 2s
  shards: 1
  shard_settle: 1s
  etcd: {endpoints: [%s]}
http: {listen: %s}
plugins: {dir: %s, cancel_grace: 1s}
shutdown: {drain_timeout: 1s}
jobs:
  - {id: sched, plugin: shell, task: exec, schedule: "*/10 * * * * *", timeout: 1m, delivery: at-least-once, params: %[6]s}
  - {id: manual, plugin: shell, task: exec, schedule: "0 0 0 1 1 *", timeout: 1m, delivery: at-least-once, params: %[6]s}
`, name, t.TempDir(), etcd.Endpoint(), httpAddr, builtPlugins(), cmd)))
	}
	waitAssigned(t, 1, ps, 60*time.Second)
	settled := time.Now()
	leader, other := ps[0], ps[1]
	if shard.Assign(1, []string{"r1", "r2"})[0] == "r2" {
		leader, other = other, leader
	}
	// A first attempt started after the shards settled: not the re-run of
	// a slot the hand-over that settled them cut (under load, the test
	// took that one, attempt 2, for the run to cut, and found 3 records).
	startedAfter := func(ls []logLine, job string) []logLine {
		return match(ls, func(l logLine) bool {
			return l.str("msg") == "run started" && l.str("job") == job && logTime(l).After(settled) && l["attempt"] == float64(1)
		})
	}
	lines := leader.waitLogs("a slot of sched", 30*time.Second, func(ls []logLine) bool { return len(startedAfter(ls, "sched")) > 0 })
	corrSched := startedAfter(lines, "sched")[0].str("correlation_id")
	if out, code := leader.cli([]string{"PACER_CORRELATION_ID=g2-manual"}, "trigger", "manual"); code != 0 {
		t.Fatalf("pacer trigger manual: exit %d\n%s", code, out)
	}
	leader.waitLogs("the trigger's run", 30*time.Second, func(ls []logLine) bool { return len(startedAfter(ls, "manual")) > 0 })
	leader.signal(syscall.SIGTERM)
	if code := leader.wait(60 * time.Second); code != 0 {
		t.Fatalf("%s: exit code %d after SIGTERM, want 0", leader.name, code)
	}
	if n := len(match(leader.logs(), msgIs("drain timeout: cancelling running runs"))); n != 1 {
		t.Errorf("%s logged the drain timeout %d times, want 1", leader.name, n)
	}

	for _, c := range []struct{ job, corr string }{{"sched", corrSched}, {"manual", "g2-manual"}} {
		of := func(rs []runRow) []runRow {
			return slices.DeleteFunc(slices.Clone(rs), func(r runRow) bool { return r.CorrelationID != c.corr })
		}
		rows := of(waitRuns(t, other, c.job, "the cut run's end on "+other.name, 60*time.Second, func(rs []runRow) bool {
			rs = of(rs)
			return len(rs) == 2 && rs[0].State == "success"
		}))
		again, cut := rows[0], rows[1]
		if cut.State != "canceled" || cut.Attempt != 1 || !strings.Contains(cut.Error, "drain timeout") ||
			!strings.Contains(cut.Error, "next leader") {
			t.Errorf("%s: the cut attempt %+v, want attempt 1 canceled by the drain timeout, left to the next leader", c.job, cut)
		}
		if again.Attempt != 2 || again.Output != "START 2\nEND 2\n" || again.Manual != (c.job == "manual") {
			t.Errorf("%s: the re-run %+v, want attempt 2 run to its end", c.job, again)
		}
	}
	if n := len(match(other.logs(), msgIs("slot left unfinished by the previous leader: running it again (at-least-once)"))); n != 1 {
		t.Errorf("%s logged %d re-run slots, want 1", other.name, n)
	}
	if n := len(match(other.logs(), msgIs("manual trigger left unfinished by the previous leader: running it again (at-least-once)"))); n != 1 {
		t.Errorf("%s logged %d re-run triggers, want 1", other.name, n)
	}
}
