package main

// Fault scenarios 18 and 20 (docs/chaos-results.md) through real processes: etcd,
// pacer run and the shell plugin. They run in plain `go test` too.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// treeScript is a shell job's command. Attempt 1 writes its run ID to
// files/run, then starts a child, a setsid grandchild and a double-forked
// daemon (each writes its pid to files/pids), and sleeps hold; each of them
// appends "end WHO RUN_ID" to files/effects after hold: the side effects a
// crashed attempt must not have. A later attempt looks for any process that
// carries attempt 1's run ID in its environment and appends "alive PID" for
// each, then "retry-done". The look is one grep over every /proc/PID/environ,
// not one per process: on a loaded machine with a few thousand processes a
// fork per process took longer than the attempt's timeout.
func treeScript(files, hold string) string {
	return fmt.Sprintf(`F=%[1]s
echo "start $PACER_ATTEMPT $PACER_RUN_ID" >> $F/effects
if [ "$PACER_ATTEMPT" = 1 ]; then
  echo $PACER_RUN_ID > $F/run
  sh -c 'echo $$ >> '$F'/pids; sleep %[2]s; echo "end child $PACER_RUN_ID" >> '$F'/effects' &
  setsid sh -c 'echo $$ >> '$F'/pids; sleep %[2]s; echo "end grandchild $PACER_RUN_ID" >> '$F'/effects' &
  (setsid sh -c 'echo $$ >> '$F'/pids; sleep %[2]s; echo "end daemon $PACER_RUN_ID" >> '$F'/effects' &)
  sleep %[2]s
  echo "end command $PACER_RUN_ID" >> $F/effects
else
  old=$(cat $F/run)
  for e in $(grep -las "PACER_RUN_ID=$old" /proc/[0-9]*/environ); do echo "alive ${e%%/environ}" >> $F/effects; done
  echo "retry-done $PACER_RUN_ID" >> $F/effects
fi
`, files, hold)
}

// treeHold is how long attempt 1's processes run before their side effect.
const treeHold = 5 * time.Second

// treeJob is the jobs: section for treeScript: one slot, at, with one retry.
func treeJob(files string, at time.Time) string {
	return treeJobTimeout(files, at, time.Minute, treeHold)
}

// treeJobTimeout is treeJob with the attempt's timeout, and hold for
// treeScript.
func treeJobTimeout(files string, at time.Time, timeout, hold time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
  - id: tree
    plugin: shell
    task: exec
    schedule: "at: %s"
    timeout: %s
    retries: {max: 1, initial_backoff: 100ms, max_backoff: 100ms}
    misfire: {policy: once, grace: 1m}
    delivery: at-least-once
    params:
      shell: true
      command: |
`, at.UTC().Format(time.RFC3339), timeout)
	for _, l := range strings.Split(strings.TrimRight(treeScript(files, fmt.Sprint(hold.Seconds())), "\n"), "\n") {
		b.WriteString("        " + l + "\n")
	}
	return b.String()
}

// treeFiles reads the scenario's files: the effects lines and the pids.
func treeFiles(t *testing.T, files string) (effects []string, pids []int, run string) {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(files, "effects"))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		effects = append(effects, sc.Text())
	}
	b, _ = os.ReadFile(filepath.Join(files, "pids"))
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	b, _ = os.ReadFile(filepath.Join(files, "run"))
	return effects, pids, strings.TrimSpace(string(b))
}

// waitTree waits until attempt 1 has started its whole tree.
func waitTree(t *testing.T, files string, timeout time.Duration) (pids []int, run string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, pids, run = treeFiles(t, files)
		if len(pids) == 3 && run != "" {
			return pids, run
		}
		if time.Now().After(deadline) {
			t.Fatalf("attempt 1 did not start its process tree within %s (pids %v, run %q)", timeout, pids, run)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesOf lists the live processes whose environment carries
// PACER_RUN_ID=run.
func processesOf(run string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !pidAlive(pid) {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && slices.ContainsFunc(bytes.Split(env, []byte{0}), func(kv []byte) bool { return string(kv) == "PACER_RUN_ID="+run }) {
			out = append(out, pid)
		}
	}
	return out
}

// checkTree waits for the retry to finish, then until the crashed
// attempt's processes would have written their side effects (hold 3 s after
// it started, plus a margin), and counts what went wrong: D = side effects
// of the crashed attempt + its processes the retry saw alive; Z = its
// processes alive now.
func checkTree(t *testing.T, files, run string, started time.Time) (d, z int) {
	t.Helper()
	return checkTreeHold(t, files, run, started, treeHold)
}

// checkTreeHold is checkTree for a tree that holds for hold.
func checkTreeHold(t *testing.T, files, run string, started time.Time, hold time.Duration) (d, z int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		effects, _, _ := treeFiles(t, files)
		if slices.ContainsFunc(effects, func(l string) bool { return strings.HasPrefix(l, "retry-done") }) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the retry did not finish: %q", effects)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The crashed attempt's processes would write at started + hold.
	time.Sleep(time.Until(started.Add(hold + 2*time.Second)))
	effects, pids, _ := treeFiles(t, files)
	for _, l := range effects {
		if strings.HasPrefix(l, "alive ") || (strings.HasPrefix(l, "end ") && strings.HasSuffix(l, " "+run)) {
			t.Errorf("crashed attempt %s: %q", run, l)
			d++
		}
	}
	for _, pid := range pids {
		if pidAlive(pid) {
			t.Errorf("process %d of the crashed attempt is alive", pid)
			z++
		}
	}
	for _, pid := range processesOf(run) {
		if !slices.Contains(pids, pid) {
			t.Errorf("process %d carries the crashed attempt's run ID", pid)
			z++
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	t.Logf("side effects: %q", effects)
	return d, z
}

// runRecords reads a job's records through `pacer runs -o json`.
type runRecord struct {
	RunID         string `json:"run_id"`
	State         string `json:"state"`
	Reason        string `json:"reason"`
	Attempt       int    `json:"attempt"`
	Error         string `json:"error"`
	ProcessesLeft string `json:"processes_left"`
}

func runRecords(t *testing.T, p *proc, job string) []runRecord {
	t.Helper()
	out, code := p.cli(nil, "runs", job, "-o", "json")
	var resp struct{ Runs []runRecord }
	if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
		t.Fatalf("pacer runs %s: exit %d\n%s", job, code, out)
	}
	return resp.Runs
}

// Scenario 18: the shell plugin is killed (kill -9) while its command has a
// child, a setsid grandchild and a daemon; the job retries. The crashed
// attempt's whole tree is dead before the retry starts (the retry finds
// none of its processes), none of its side effects happens after the kill,
// and no process of it is left. Before the fix, the command's tree lived on
// and wrote its side effects while the retry ran.
func TestChaosPluginKillWithProcessTree(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	files := t.TempDir()
	ps := startReplicas(t, 1, eps, treeJob(files, time.Now().Add(5*time.Second)))
	p := waitLeader(t, ps, 30*time.Second)
	res := &chaosResult{scenario: 18, M: -1}

	_, run := waitTree(t, files, 30*time.Second)
	started := time.Now()
	pids := pluginPIDs(p.logs())
	plugin := pids[len(pids)-1]
	fault := time.Now()
	if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res.runs++
	lines := p.waitLogs("the retry to finish", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l["attempt"] == float64(2) })) > 0
	})
	crashed, _ := firstAfter(lines, fault, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("run_id") == run })
	retry, _ := firstAfter(lines, fault, func(l logLine) bool { return l.str("msg") == "run started" && l["attempt"] == float64(2) })
	if crashed == nil || crashed.str("outcome") != "crashed" || !strings.Contains(crashed.str("error"), "processes it left behind") {
		t.Errorf("attempt 1 finished as %v; want crashed, naming the processes killed", crashed)
	}
	if crashed != nil && retry != nil {
		res.F = append(res.F, logTime(crashed).Sub(fault))
		t.Logf("kill → attempt 1 recorded crashed (its tree dead) %s; → retry started %s",
			logTime(crashed).Sub(fault).Round(time.Millisecond), logTime(retry).Sub(fault).Round(time.Millisecond))
	}
	res.D, res.Z = checkTree(t, files, run, started)
	recs := runRecords(t, p, "tree")
	if len(recs) != 2 || recs[0].State != "success" || recs[1].State != "crashed" {
		t.Errorf("records: %+v; want the crash and the successful retry", recs)
	}
	res.Z += stopAll(t, ps)
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// Scenario 18, runner variant: the leading runner is killed (kill -9) while
// the command's tree runs. Its plugin kills the whole tree as soon as it
// sees its runner gone; the new leader re-runs the slot (at-least-once) and
// finds no process of the first attempt; none of its side effects happens.
func TestChaosRunnerKillWithProcessTree(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	files := t.TempDir()
	ps := startReplicas(t, 2, eps, treeJob(files, time.Now().Add(5*time.Second)))
	old := waitLeader(t, ps, 30*time.Second)
	res := &chaosResult{scenario: 18, M: -1}

	pids, run := waitTree(t, files, 30*time.Second)
	started := time.Now()
	fault := time.Now()
	old.signal(syscall.SIGKILL)
	old.wait(10 * time.Second)
	res.runs++
	// The plugin ends the tree on its own, before a new leader can start.
	deadline := time.Now().Add(treeHold)
	for slices.ContainsFunc(pids, pidAlive) || len(processesOf(run)) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("the dead runner's process tree lives on %s after the kill: %v", treeHold, processesOf(run))
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	dead := time.Now()
	res.F = append(res.F, dead.Sub(fault))
	t.Logf("runner kill → its attempt's whole tree dead: %s", dead.Sub(fault).Round(time.Millisecond))
	leader, _ := failover(t, others(ps, old), fault, 3*time.Second)
	if became, _ := firstAfter(leader.logs(), fault, msgIs("became leader")); became != nil && !logTime(became).After(dead) {
		t.Errorf("%s became leader %s after the kill, before the old attempt's tree was dead (%s)", leader.name,
			logTime(became).Sub(fault).Round(time.Millisecond), dead.Sub(fault).Round(time.Millisecond))
	}
	res.D, res.Z = checkTree(t, files, run, started)
	recs := runRecords(t, leader, "tree")
	if len(recs) == 0 || recs[0].State != "success" || recs[0].Attempt != 2 {
		t.Errorf("records: %+v; want the re-run as attempt 2", recs)
	}
	res.Z += stopAll(t, ps)
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// startTreeReplica starts one runner with treeJobTimeout's job, a cancel
// grace and drain timeout of 1 s, so that a hung plugin and a stop take
// seconds, not the defaults' tens.
func startTreeReplica(t *testing.T, eps []string, files string, timeout, hold time.Duration) *proc {
	t.Helper()
	chaosBinaries(t)
	httpAddr := freeAddr(t)
	cfg := replicaConfig(t, "r1", httpAddr, eps, treeJobTimeout(files, time.Now().Add(5*time.Second), timeout, hold))
	cfg = strings.Replace(cfg, "plugins: {dir: ", "shutdown: {drain_timeout: 1s}\nplugins: {cancel_grace: 1s, dir: ", 1)
	p := startPacer(t, "r1", httpAddr, cfg)
	p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
	return p
}

// Scenario 18, hung plugin: the shell plugin is stopped (SIGSTOP) while its
// command's tree runs. The attempt times out, the plugin cannot answer the
// Cancel, so the runner kills it (a stopped process included) and the tree
// it left, and the retry finds none of attempt 1's processes; none of their
// side effects happens. Before the fix, killing the stopped plugin waited
// for it to answer a Shutdown call: forever, and the slot never ended.
func TestChaosPluginStoppedWithProcessTree(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	files := t.TempDir()
	// Attempt 1 times out at 4 s and is killed 1 s later, long before its
	// processes' side effects (10 s); attempt 2 has 4 s for its look.
	const hold = 10 * time.Second
	p := startTreeReplica(t, eps, files, 4*time.Second, hold)
	waitLeader(t, []*proc{p}, 30*time.Second)
	res := &chaosResult{scenario: 18, M: -1}

	_, run := waitTree(t, files, 30*time.Second)
	started := time.Now()
	pids := pluginPIDs(p.logs())
	plugin := pids[len(pids)-1]
	fault := time.Now()
	if err := syscall.Kill(plugin, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(plugin, syscall.SIGKILL) })
	res.runs++
	lines := p.waitLogs("the retry to finish", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l["attempt"] == float64(2) })) > 0
	})
	first, _ := firstAfter(lines, fault, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("run_id") == run })
	if first == nil || first.str("outcome") != "timeout" || !strings.Contains(first.str("error"), "processes it left behind") {
		t.Errorf("attempt 1 finished as %v; want timeout, naming the processes killed", first)
	}
	if first != nil {
		res.F = append(res.F, logTime(first).Sub(fault))
		t.Logf("SIGSTOP → attempt 1 recorded (timeout 4 s + cancel grace 1 s, its tree dead) %s", logTime(first).Sub(fault).Round(time.Millisecond))
	}
	if pidAlive(plugin) {
		t.Errorf("the stopped plugin process %d is still alive", plugin)
	}
	res.D, res.Z = checkTreeHold(t, files, run, started, hold)
	if recs := runRecords(t, p, "tree"); len(recs) != 2 || recs[0].State != "success" || recs[1].State != "timeout" {
		t.Errorf("records: %+v; want the timeout and the successful retry", recs)
	}
	res.Z += stopAll(t, []*proc{p})
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// Scenario 18, runner stop: SIGTERM to the runner while the command's tree
// runs (and, in the second case, while the plugin is stopped by SIGSTOP).
// The drain timeout (1 s) cancels the attempt; the runner exits with every
// process of the attempt dead and the attempt recorded; no retry starts and
// none of the tree's side effects happens.
func TestChaosRunnerStopWithProcessTree(t *testing.T) {
	skipChaos(t)
	for _, stopPlugin := range []bool{false, true} {
		t.Run(fmt.Sprintf("plugin_stopped=%v", stopPlugin), func(t *testing.T) {
			eps := endpoints(startCluster(t, 1))
			files := t.TempDir()
			p := startTreeReplica(t, eps, files, time.Minute, treeHold)
			waitLeader(t, []*proc{p}, 30*time.Second)
			pids, run := waitTree(t, files, 30*time.Second)
			plugins := pluginPIDs(p.logs())
			plugin := plugins[len(plugins)-1]
			if stopPlugin {
				if err := syscall.Kill(plugin, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = syscall.Kill(plugin, syscall.SIGKILL) })
			}
			fault := time.Now()
			p.signal(syscall.SIGTERM)
			if code := p.wait(30 * time.Second); code != 0 {
				t.Errorf("exit code %d after SIGTERM", code)
			}
			exited := time.Since(fault)
			alive := slices.DeleteFunc(append(slices.Clone(pids), plugin), func(pid int) bool { return !pidAlive(pid) })
			alive = append(alive, processesOf(run)...)
			t.Logf("SIGTERM → runner exited %s; alive then: %v", exited.Round(time.Millisecond), alive)
			if len(alive) > 0 {
				t.Errorf("processes of the attempt (or its plugin) outlived the runner: %v", alive)
			}
			// The tree's processes would write at started + treeHold.
			time.Sleep(time.Until(fault.Add(treeHold + time.Second)))
			effects, _, _ := treeFiles(t, files)
			for _, l := range effects {
				if strings.HasPrefix(l, "end ") || strings.HasPrefix(l, "start 2") {
					t.Errorf("after the runner stopped: %q", l)
				}
			}
			recs := etcdRecords(t, eps, "tree")
			if len(recs) != 1 || recs[0].State != "canceled" || recs[0].RunID != run {
				t.Errorf("records: %+v; want attempt 1 canceled", recs)
			}
			for _, pid := range processesOf(run) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
}

// stormJob is a job whose every attempt fails at once and retries as fast as
// validation allows (100 retries, 100 ms apart); each attempt appends its
// run ID and attempt number to path.
func stormJob(path string) string {
	return fmt.Sprintf(`
  - id: storm
    plugin: shell
    task: exec
    schedule: "@every 5s"
    timeout: 10s
    overlap: forbid
    retries: {max: 100, initial_backoff: 100ms, max_backoff: 100ms}
    params: {shell: true, command: 'echo "$PACER_RUN_ID $PACER_ATTEMPT" >> %s; exit 1'}
`, path)
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'})
}

// etcdRecords reads a job's run and skip records straight from etcd (the
// API forgets a job removed by a reload).
func etcdRecords(t *testing.T, eps []string, job string) []runRecord {
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
	var out []runRecord
	for _, kv := range resp.Kvs {
		var r runRecord
		if json.Unmarshal(kv.Value, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// waitRecordOf waits for a record of job that pred accepts and returns it.
func waitRecordOf(t *testing.T, eps []string, job, what string, timeout time.Duration, pred func(runRecord) bool) runRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, r := range etcdRecords(t, eps, job) {
			if pred(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record of %s: %s within %s", job, what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Scenario 20: a retry storm is refused at validation (and on reload); a
// job retrying as fast as allowed stops at once when paused, and again when
// a reload removes it: each stop leaves a skip record as its slot's last
// record, and no attempt of that slot follows. Before the fix, pausing or
// removing the job did not stop its retries (only SIGTERM did, after 12 s).
func TestChaosRetryStormStops(t *testing.T) {
	skipChaos(t)
	dir := t.TempDir()
	storm := filepath.Join(dir, "storm.yaml")
	must(os.WriteFile(storm, []byte(`jobs:
  - id: storm
    plugin: shell
    task: exec
    schedule: "@every 5s"
    retries: {max: 1000000000, initial_backoff: 1ns, max_backoff: 1ns}
    params: {command: [/bin/false]}
`), 0o644))
	cmd := exec.Command(filepath.Join(binDir, "pacer"), "validate", "--skip-plugins", "--config", storm)
	b, _ := cmd.CombinedOutput()
	out, code := string(b), cmd.ProcessState.ExitCode()
	if code == 0 || !strings.Contains(out, "storm.yaml:6: jobs[0].retries.max: 1000000000 retries is more than the limit of 100") ||
		!strings.Contains(out, "storm.yaml:6: jobs[0].retries.initial_backoff: 1ns is below the minimum of 100ms") {
		t.Fatalf("pacer validate of a retry storm: exit %d\n%s", code, out)
	}

	eps := endpoints(startCluster(t, 1))
	attempts := filepath.Join(dir, "attempts")
	ps := startReplicas(t, 1, eps, stormJob(attempts))
	p := waitLeader(t, ps, 30*time.Second)
	res := &chaosResult{scenario: 20, M: -1}

	// stopped checks that a stop left its record (a skip record for the
	// retry, or the attempt it cancelled) and that no attempt followed.
	stopped := func(what, reason, cancelled string, at time.Time) {
		t.Helper()
		skip := waitRecordOf(t, eps, "storm", "stopped by the "+what, 15*time.Second, func(r runRecord) bool {
			return r.State == "skipped" && r.Reason == reason ||
				cancelled != "" && r.State == "canceled" && strings.Contains(r.Error, cancelled)
		})
		n := countLines(attempts)
		res.runs++
		res.F = append(res.F, time.Since(at))
		t.Logf("%s: %s record %q after attempt %d (%s after the %s)", what, skip.State, skip.Error, skip.Attempt-1,
			time.Since(at).Round(time.Millisecond), what)
		// Ten retry periods: a storm that goes on shows here.
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if m := countLines(attempts); m != n {
				t.Errorf("%s: %d attempts after the skip record %+v", what, m-n, skip)
				res.D += m - n
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitAttempts := func(n int) {
		t.Helper()
		base := countLines(attempts)
		deadline := time.Now().Add(20 * time.Second)
		for countLines(attempts) < base+n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d attempts within 20 s", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	waitAttempts(3)
	at := time.Now()
	if out, code := p.cli(nil, "pause", "storm"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	stopped("pause", "paused", "", at)

	if out, code := p.cli(nil, "resume", "storm"); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	waitAttempts(3)
	// A reload that drops the job, and keeps another.
	other := "\n  - id: other\n    plugin: shell\n    task: exec\n    schedule: \"0 0 0 1 1 *\"\n    params: {command: [/bin/true]}\n"
	cfg, err := os.ReadFile(p.configPath)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(cfg), "\njobs:")
	must(os.WriteFile(p.configPath, []byte(head+"\njobs:"+other), 0o644))
	at = time.Now()
	p.signal(syscall.SIGHUP)
	// A removed job's running attempt is cancelled; its pending retry is
	// not started: either is the slot's last record.
	stopped("reload", "reloaded", "the job was removed by a config reload", at)

	// The storm itself is refused on reload too; the last good config stays.
	must(os.WriteFile(p.configPath, []byte(head+"\njobs:"+other+strings.TrimPrefix(string(mustRead(storm)), "jobs:\n")), 0o644))
	p.signal(syscall.SIGHUP)
	lines := p.waitLogs("the storm's rejection", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("config reload rejected; the last good config keeps running"))) > 0
	})
	rej := match(lines, msgIs("config reload rejected; the last good config keeps running"))[0]
	if !strings.Contains(rej.str("error"), "retries.max: 1000000000 retries is more than the limit of 100") {
		t.Errorf("rejection: %v", rej)
	}
	res.Z = stopAll(t, ps)
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

func mustRead(path string) []byte {
	b, err := os.ReadFile(path)
	must(err)
	return b
}

// Scenario 20, runner stop: SIGTERM to a runner whose job retries as fast
// as allowed. The pending retry is not started (its skip record, reason
// stopping, is the slot's last) and the runner exits at once, not after the
// drain timeout. Before the fix, retries went on until the drain timeout
// cancelled them (12 s in the report).
func TestChaosRetryStormStopsOnSIGTERM(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	attempts := filepath.Join(t.TempDir(), "attempts")
	p := waitLeader(t, startReplicas(t, 1, eps, stormJob(attempts)), 30*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for countLines(attempts) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 attempts within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	at := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	took := time.Since(at)
	n := countLines(attempts)
	t.Logf("SIGTERM → exit %s, after %d attempts", took.Round(time.Millisecond), n)
	// The default drain timeout is 30 s: a storm that went on until it
	// shows here.
	if took > 10*time.Second {
		t.Errorf("the runner took %s to stop", took.Round(time.Millisecond))
	}
	var last *runRecord
	for _, r := range etcdRecords(t, eps, "storm") {
		if last == nil || r.Attempt > last.Attempt {
			last = &r
		}
	}
	if last == nil || last.State != "skipped" || last.Reason != "stopping" || last.Attempt != n+1 {
		t.Errorf("the slot's last record is %+v; want the retry after attempt %d skipped, reason stopping", last, n)
	}
}
