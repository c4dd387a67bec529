package main

// Fault scenarios 18 and 20 (RELIABILITY.md) through real processes: etcd,
// pacer run and the shell plugin. They run in plain `go test` too.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// treeScript is a shell job's command. Attempt 1 writes its run ID to
// files/run, then starts a child, a setsid grandchild and a double-forked
// daemon (each writes its pid to files/pids), and sleeps hold; each of them
// appends "end WHO RUN_ID" to files/effects after hold: the side effects a
// crashed attempt must not have. A later attempt looks for any process that
// carries attempt 1's run ID in its environment and appends "alive PID" for
// each, then "retry-done".
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
  for e in /proc/[0-9]*/environ; do
    if grep -qa "PACER_RUN_ID=$old" "$e" 2>/dev/null; then echo "alive ${e%%/environ}" >> $F/effects; fi
  done
  echo "retry-done $PACER_RUN_ID" >> $F/effects
fi
`, files, hold)
}

// treeHold is how long attempt 1's processes run before their side effect.
const treeHold = 5 * time.Second

// treeJob is the jobs: section for treeScript: one slot, at, with one retry.
func treeJob(files string, at time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
  - id: tree
    plugin: shell
    task: exec
    schedule: "at: %s"
    timeout: 60s
    retries: {max: 1, initial_backoff: 100ms, max_backoff: 100ms}
    misfire: {policy: once, grace: 1m}
    delivery: at-least-once
    params:
      shell: true
      command: |
`, at.UTC().Format(time.RFC3339))
	for _, l := range strings.Split(strings.TrimRight(treeScript(files, fmt.Sprint(treeHold.Seconds())), "\n"), "\n") {
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
	// The crashed attempt's processes would write at started + treeHold.
	time.Sleep(time.Until(started.Add(treeHold + 2*time.Second)))
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
