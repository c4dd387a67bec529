package main

// Fault-injection tests (the scenarios of docs/chaos-results.md): real etcd members and real runner
// processes, faults by signals and proxies, and a ledger plugin that records
// every execution of a task and accepts it only if its fencing token is not
// lower than the highest one it has seen for the job.
//
// The fast subset in this file runs in plain `go test`; the rest is in
// chaos_full_test.go behind the build tag "chaos":
//
//	go test -run Chaos ./cmd/pacer/                  # scenarios 1, 2, 17
//	go test -tags chaos -run Chaos -v ./cmd/pacer/   # all of them
//
// Every scenario logs one result line:
//
//	chaos: scenario N: runs=R D=d M=m F=median/worst Z=z
//
// runs: faults injected (each gives one F sample where F applies);
// D: slots (job, scheduled time) with more than one accepted ledger line;
// M: slots of the `@every 1s` job between the first and the last slot in
// the ledger that have neither a ledger line nor a record in etcd that
// accounts for them (a skip record, any reason, or a failed, crashed or
// timed-out attempt): slots that went missing silently;
// F: from the fault to the first "run started" on another replica (the log
// line's own timestamp);
// Z: plugin processes still alive 10 s after every runner stopped.

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/shard"
	"github.com/pacerun/pacer/sdk/sdktest"
)

const chaosTTL = 2 * time.Second

// chaosBuild builds the ledger plugin (into binDir/plugins, next to the
// others) and the etcdmember helper once per test binary.
var chaosBuild struct {
	once       sync.Once
	err        string
	etcdmember string
}

// buildTB records a build failure instead of failing inside sync.Once.
type buildTB struct {
	testing.TB
	err string
}

func (b *buildTB) Helper() {}
func (b *buildTB) Fatalf(f string, a ...any) {
	if b.err == "" {
		b.err = fmt.Sprintf(f, a...)
	}
}

func chaosBinaries(t *testing.T) string {
	t.Helper()
	chaosBuild.once.Do(func() {
		tb := &buildTB{TB: t}
		sdktest.Build(tb, filepath.Join(binDir, "plugins"), "github.com/pacerun/pacer/internal/testplugins/ledger")
		chaosBuild.etcdmember = sdktest.Build(tb, binDir, "github.com/pacerun/pacer/internal/etcdmember")
		chaosBuild.err = tb.err
	})
	if chaosBuild.err != "" {
		t.Fatal(chaosBuild.err)
	}
	return chaosBuild.etcdmember
}

// member is one etcd member running in an etcdmember process.
type member struct {
	t                     *testing.T
	name, dir             string
	client, peer, initial string
	advertise             string // peer address others dial, if not peer (a proxy)

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	ready   chan struct{}
	stderr  bytes.Buffer
	stopped bool // SIGSTOPped
}

// startCluster starts members etcd members, each in its own process, and
// waits until all serve. They are killed when the test ends.
func startCluster(t *testing.T, members int) []*member {
	t.Helper()
	return startClusterVia(t, members, nil)
}

// startClusterVia starts a cluster whose members advertise advertise(m) as
// their peer address, when advertise is not nil.
func startClusterVia(t *testing.T, members int, advertise func(m *member) string) []*member {
	t.Helper()
	chaosBinaries(t)
	ms := make([]*member, members)
	var initial []string
	for i := range ms {
		m := &member{t: t, name: fmt.Sprintf("m%d", i+1), dir: t.TempDir(), client: freeAddr(t), peer: freeAddr(t)}
		m.advertise = m.peer
		if advertise != nil {
			m.advertise = advertise(m)
		}
		ms[i] = m
		initial = append(initial, m.name+"=http://"+m.advertise)
	}
	for _, m := range ms {
		m.initial = strings.Join(initial, ",")
		t.Cleanup(m.kill)
		m.launch()
	}
	for _, m := range ms {
		m.waitReady(60 * time.Second)
	}
	return ms
}

func endpoints(ms []*member) []string {
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.client)
	}
	return eps
}

func (m *member) launch() {
	m.t.Helper()
	cmd := exec.Command(chaosBuild.etcdmember, "--name", m.name, "--dir", m.dir, "--client", m.client,
		"--peer", m.peer, "--advertise-peer", m.advertise, "--initial-cluster", m.initial)
	out, err := cmd.StdoutPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	m.stderr.Reset()
	m.mu.Unlock()
	cmd.Stderr = lockedWriter{&m.mu, &m.stderr}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	exited, ready := make(chan struct{}), make(chan struct{})
	m.mu.Lock()
	m.cmd, m.exited, m.ready, m.stopped = cmd, exited, ready, false
	m.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
}

// pid is the member's current process ID, 0 before its first launch.
func (m *member) pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

func (m *member) waitReady(timeout time.Duration) {
	m.t.Helper()
	m.mu.Lock()
	ready, exited := m.ready, m.exited
	m.mu.Unlock()
	select {
	case <-ready:
	case <-exited:
		m.t.Fatalf("etcd member %s exited before it was ready:\n%s", m.name, m.errText())
	case <-time.After(timeout):
		m.t.Fatalf("etcd member %s not ready after %s:\n%s", m.name, timeout, m.errText())
	}
}

func (m *member) errText() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stderr.String()
}

// kill SIGKILLs the member (resuming it first if it was stopped) and waits.
func (m *member) kill() {
	m.mu.Lock()
	cmd, exited, stopped := m.cmd, m.exited, m.stopped
	m.stopped = false
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	if stopped {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Kill()
	<-exited
}

// stop stops the member gracefully (SIGTERM), killing it after 15 s.
func (m *member) stop() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// ledgerJob is the jobs: section of a replica's config: one job, "tick",
// every second, recorded by the ledger plugin at path.
func ledgerJob(path, hold string) string {
	return fmt.Sprintf(`
  - id: tick
    plugin: ledger
    task: record
    schedule: "@every 1s"
    timeout: 30s
    overlap: forbid
    delivery: at-most-once
    misfire: {policy: skip, grace: 10s}
    params: {path: %q, hold: %q}
`, path, hold)
}

// replicaConfig is a runner's config against the etcd endpoints eps: one
// shard, so that one replica leads and runs the job, and the scenarios of
// docs/chaos-results.md hold for one shard's leader (scenario 23 is the
// sharded cluster: chaos_shard_test.go).
func replicaConfig(t *testing.T, name, httpAddr string, eps []string, jobs string) string {
	return replicaConfigTTL(t, name, httpAddr, eps, jobs, chaosTTL)
}

func replicaConfigTTL(t *testing.T, name, httpAddr string, eps []string, jobs string, ttl time.Duration) string {
	return fmt.Sprintf(`
node: {name: %s}
cluster:
  name: chaos
  data_dir: %s
  lease_ttl: %s
  shards: 1
  etcd: {endpoints: [%s], dial_timeout: 2s, request_timeout: 1s}
http: {listen: %s}
plugins: {dir: %s}
history: {keep: 1000}
jobs:%s`, name, t.TempDir(), ttl, strings.Join(eps, ", "), httpAddr, filepath.Join(binDir, "plugins"), jobs)
}

// startReplicas starts n runners (r1…rn) against eps and waits until each
// runs its scheduler.
func startReplicas(t *testing.T, n int, eps []string, jobs string) []*proc {
	t.Helper()
	return startReplicasTTL(t, n, eps, jobs, chaosTTL)
}

func startReplicasTTL(t *testing.T, n int, eps []string, jobs string, ttl time.Duration) []*proc {
	t.Helper()
	chaosBinaries(t)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("r%d", i+1)
	}
	// The replica the assignment gives the cluster's one shard starts
	// first and leads before the others join, so the scenario starts from
	// a settled cluster: no hand-over to it once the settle delay passed.
	first := slices.Index(names, shard.Assign(1, names)[0])
	order := []int{first}
	for i := range n {
		if i != first {
			order = append(order, i)
		}
	}
	ps := make([]*proc, n)
	for _, i := range order {
		httpAddr := freeAddr(t)
		ps[i] = startPacer(t, names[i], httpAddr, replicaConfigTTL(t, names[i], httpAddr, eps, jobs, ttl))
		if i == first && n > 1 {
			ps[i].waitLogs(names[i]+" to lead", 30*time.Second, leading)
		}
	}
	for _, p := range ps {
		p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
	}
	return ps
}

// leading reports whether the last leadership line in lines says leading.
func leading(lines []logLine) bool {
	lead := false
	for _, l := range lines {
		switch l.str("msg") {
		case "became leader":
			lead = true
		case "leadership ended", "resigned leadership":
			lead = false
		}
	}
	return lead
}

func tokenOf(l logLine) int64 {
	f, _ := l["fencing_token"].(float64)
	return int64(f)
}

func logTime(l logLine) time.Time {
	ts, _ := time.Parse(time.RFC3339Nano, l.str("time"))
	return ts
}

// exitedProc reports whether p's process has exited.
func exitedProc(p *proc) bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitLeader waits until exactly one of ps (not exited) leads according to
// its log, and returns it.
func waitLeader(t *testing.T, ps []*proc, timeout time.Duration) *proc {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var leaders []*proc
		for _, p := range ps {
			if !exitedProc(p) && leading(p.logs()) {
				leaders = append(leaders, p)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leaders after %s, want 1", len(leaders), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstAfter returns the first line of lines matching pred whose timestamp
// is after ts.
func firstAfter(lines []logLine, ts time.Time, pred func(logLine) bool) (logLine, bool) {
	for _, l := range lines {
		if pred(l) && logTime(l).After(ts) {
			return l, true
		}
	}
	return nil, false
}

// waitRunsAfter waits until p has finished n runs that started after ts,
// and returns the first "run started" line after ts.
func waitRunsAfter(p *proc, n int, ts time.Time, timeout time.Duration) logLine {
	p.t.Helper()
	lines := p.waitLogs(fmt.Sprintf("%d runs after %s", n, ts.Format(time.RFC3339Nano)), timeout, func(ls []logLine) bool {
		c := 0
		for _, l := range match(ls, msgIs("run finished")) {
			if logTime(l).After(ts) {
				c++
			}
		}
		return c >= n
	})
	l, _ := firstAfter(lines, ts, msgIs("run started"))
	return l
}

// ledgerEntry is one line of the ledger plugin's file.
type ledgerEntry struct {
	Job           string    `json:"job"`
	ScheduledTime time.Time `json:"scheduled_time"`
	FencingToken  int64     `json:"fencing_token"`
	Node          string    `json:"node"`
	RunID         string    `json:"run_id"`
	CorrelationID string    `json:"correlation_id"`
	Attempt       int       `json:"attempt"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	Accepted      bool      `json:"accepted"`
	Highest       int64     `json:"highest"`
	Cancelled     bool      `json:"cancelled"`
	PID           int       `json:"pid"`
}

func readLedger(t *testing.T, path string) []ledgerEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	var out []ledgerEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var e ledgerEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("ledger line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// chaosResult is what a scenario measured.
type chaosResult struct {
	scenario int
	runs     int // faults injected
	entries  []ledgerEntry
	D        int
	M        int // -1: not measured
	F        []time.Duration
	Z        int
}

// checkLedger computes D from the ledger and M from the ledger and the skip
// records stored in etcd (read through eps).
func (r *chaosResult) checkLedger(t *testing.T, path string, eps []string) {
	t.Helper()
	r.checkLedgerUntil(t, path, eps, time.Time{})
}

// checkLedgerUntil is checkLedger with M counted only up to the last slot
// not after until (zero: no limit). Slots after it (run early by a clock
// far ahead) are not followed by the slots in between: those have not come
// due yet.
func (r *chaosResult) checkLedgerUntil(t *testing.T, path string, eps []string, until time.Time) {
	t.Helper()
	r.entries = readLedger(t, path)
	accepted := map[time.Time]int{}
	seen := map[time.Time]bool{}
	var first, last time.Time
	for _, e := range r.entries {
		s := e.ScheduledTime.UTC()
		seen[s] = true
		if e.Accepted {
			accepted[s]++
		}
		if first.IsZero() || s.Before(first) {
			first = s
		}
		if s.After(last) && (until.IsZero() || !s.After(until)) {
			last = s
		}
	}
	r.D = 0
	for slot, n := range accepted {
		if n > 1 {
			r.D++
			t.Errorf("slot %s: %d accepted executions", slot.Format(time.RFC3339Nano), n)
		}
	}
	skipped, err := skipRecords(eps, "tick")
	if err != nil {
		t.Logf("M not measured: %v", err)
		r.M = -1
		return
	}
	r.M = 0
	for s := first; !s.After(last); s = s.Add(time.Second) {
		if !seen[s] && !skipped[s] {
			r.M++
			t.Logf("slot %s: no ledger line and no record in etcd that accounts for it", s.Format(time.RFC3339Nano))
		}
	}
}

// skipRecords reads the job's run records from etcd and returns the
// scheduled times of those that account for a slot without a ledger line:
// skipped slots and failed, crashed or timed-out attempts.
func skipRecords(eps []string, job string) (map[time.Time]bool, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pacer/chaos/runs/"+job+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[time.Time]bool{}
	for _, kv := range resp.Kvs {
		var rec struct {
			ScheduledTime  time.Time `json:"scheduled_time"`
			ScheduledUntil time.Time `json:"scheduled_until"`
			State          string    `json:"state"`
		}
		if json.Unmarshal(kv.Value, &rec) == nil && rec.State != "success" && rec.State != "running" {
			out[rec.ScheduledTime.UTC()] = true
			// A record for consecutive slots of the job (@every 1s).
			for s := rec.ScheduledTime; !s.After(rec.ScheduledUntil); s = s.Add(time.Second) {
				out[s.UTC()] = true
			}
		}
	}
	return out, nil
}

// stopAll stops every runner still running (SIGCONT, then SIGTERM; SIGKILL
// after 30 s) and returns Z: how many plugin processes any of them started
// are still alive 10 s later. Survivors are killed.
func stopAll(t *testing.T, ps []*proc) int {
	t.Helper()
	for _, p := range ps {
		if !exitedProc(p) {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range ps {
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30 s of SIGTERM", p.name)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	var pids []int
	for _, p := range ps {
		pids = append(pids, pluginPIDs(p.logs())...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		alive := slices.DeleteFunc(slices.Clone(pids), func(pid int) bool { return !pidAlive(pid) })
		if len(alive) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			for _, pid := range alive {
				t.Errorf("plugin process %d outlived its runner", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return len(alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fmtF(fs []time.Duration) string {
	if len(fs) == 0 {
		return "n/a"
	}
	s := slices.Clone(fs)
	slices.Sort(s)
	return fmt.Sprintf("%s/%s", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// ledgerScenario starts what most scenarios need: a one-member etcd and n
// replicas running ledgerJob with the given hold, and the scenario's result.
func ledgerScenario(t *testing.T, scenario, n int, hold string) (res *chaosResult, ps []*proc, path string, eps []string) {
	t.Helper()
	eps = endpoints(startCluster(t, 1))
	path = filepath.Join(t.TempDir(), "ledger.jsonl")
	ps = startReplicas(t, n, eps, ledgerJob(path, hold))
	return &chaosResult{scenario: scenario}, ps, path, eps
}

// finish stops every replica in ps, checks the ledger at path against the
// records in etcd (eps), reports, and fails unless D and Z are 0.
func (r *chaosResult) finish(t *testing.T, ps []*proc, path string, eps []string) {
	t.Helper()
	r.Z = stopAll(t, ps)
	r.checkLedger(t, path, eps)
	r.report(t)
	if r.D != 0 || r.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", r.D, r.Z)
	}
}

func (r *chaosResult) report(t *testing.T) {
	t.Helper()
	m := "not-measured"
	if r.M >= 0 {
		m = fmt.Sprint(r.M)
	}
	var fs []string
	for _, f := range r.F {
		fs = append(fs, f.Round(time.Millisecond).String())
	}
	t.Logf("chaos: scenario %d: runs=%d D=%d M=%s F=%s Z=%d (ledger lines %d, accepted %d; F samples [%s])",
		r.scenario, r.runs, r.D, m, fmtF(r.F), r.Z, len(r.entries), countAccepted(r.entries), strings.Join(fs, " "))
}

func countAccepted(es []ledgerEntry) int {
	n := 0
	for _, e := range es {
		if e.Accepted {
			n++
		}
	}
	return n
}

// others returns ps without the given processes.
func others(ps []*proc, not ...*proc) []*proc {
	return slices.DeleteFunc(slices.Clone(ps), func(p *proc) bool { return slices.Contains(not, p) })
}

// failover waits for one of candidates to lead after fault and to start and
// finish a run, checks it led within the TTL plus a margin, and returns the
// new leader and F (fault → its first "run started").
func failover(t *testing.T, candidates []*proc, fault time.Time, margin time.Duration) (*proc, time.Duration) {
	t.Helper()
	return failoverTTL(t, candidates, fault, chaosTTL, margin)
}

// failoverTTL is failover for replicas whose lease TTL is ttl.
func failoverTTL(t *testing.T, candidates []*proc, fault time.Time, ttl, margin time.Duration) (*proc, time.Duration) {
	t.Helper()
	leader := waitLeader(t, candidates, ttl+margin+5*time.Second)
	became, _ := firstAfter(leader.logs(), fault, msgIs("became leader"))
	if became == nil {
		t.Fatalf("%s leads, but did not become leader after the fault", leader.name)
	}
	if d := logTime(became).Sub(fault); d > ttl+margin {
		t.Errorf("%s became leader %s after the fault; want within TTL %s + %s", leader.name, d.Round(time.Millisecond), ttl, margin)
	}
	started := waitRunsAfter(leader, 1, fault, 15*time.Second)
	return leader, logTime(started).Sub(fault)
}

func skipChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: starts real etcd and pacer processes (skipped with -short)")
	}
}

// Scenario 1: kill -9 of the leader, twice in a row, with three replicas.
// A standby leads within the TTL plus a margin; no slot is accepted twice;
// no plugin process is left.
func TestChaosLeaderKill(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 1, 3, "100ms")

	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	alive := ps
	for range 2 {
		pids := pluginPIDs(leader.logs())
		fault := time.Now()
		leader.signal(syscall.SIGKILL)
		leader.wait(10 * time.Second)
		alive = others(alive, leader)
		var f time.Duration
		leader, f = failover(t, alive, fault, 3*time.Second)
		res.runs++
		res.F = append(res.F, f)
		for _, pid := range pids {
			waitGone(t, pid, 10*time.Second)
		}
		waitRunsAfter(leader, 2, fault, 15*time.Second)
	}
	res.finish(t, ps, path, eps)
}

// Scenario 2: the leader and its plugin are paused (SIGSTOP) mid-run for
// three TTLs, then resumed. A standby leads meanwhile; the woken replica
// fences itself, starts nothing under its old term, and its late ledger
// write is rejected; no slot is accepted twice.
func TestChaosLeaderPause(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 2, 2, "1s")

	old := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(old, 1, time.Time{}, 15*time.Second)
	// Pause it while a run holds in the plugin.
	mark := time.Now()
	old.waitLogs("a run to start", 10*time.Second, func(ls []logLine) bool {
		_, ok := firstAfter(ls, mark, msgIs("run started"))
		return ok
	})
	stopped := append([]int{old.cmd.Process.Pid}, pluginPIDs(old.logs())...)
	fault := time.Now()
	for _, pid := range stopped {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	// The standby's log shows it leading; the paused one cannot log.
	standby := others(ps, old)[0]
	standby.waitLogs("the standby to lead", chaosTTL+8*time.Second, func(ls []logLine) bool {
		_, ok := firstAfter(ls, fault, msgIs("became leader"))
		return ok
	})
	became, _ := firstAfter(standby.logs(), fault, msgIs("became leader"))
	started := waitRunsAfter(standby, 1, fault, 15*time.Second)
	res.runs++
	res.F = append(res.F, logTime(started).Sub(fault))
	if d := logTime(became).Sub(fault); d > chaosTTL+3*time.Second {
		t.Errorf("standby led %s after the pause began", d.Round(time.Millisecond))
	}
	// Hold the pause: three TTLs in all (this is the fault, not a wait).
	time.Sleep(time.Until(fault.Add(3 * chaosTTL)))
	resumed := time.Now()
	for i := len(stopped) - 1; i >= 0; i-- {
		_ = syscall.Kill(stopped[i], syscall.SIGCONT)
	}
	old.waitLogs("the woken leader to step down", 10*time.Second, func(ls []logLine) bool {
		_, ok := firstAfter(ls, fault, msgIs("leadership ended"))
		return ok
	})
	// Let the woken replica's plugin finish its interrupted run, and the new
	// leader run two more slots.
	waitRunsAfter(standby, 2, resumed, 15*time.Second)
	if l, ok := firstAfter(old.logs(), fault, func(l logLine) bool {
		return l.str("msg") == "run started" && tokenOf(l) < tokenOf(became)
	}); ok {
		t.Errorf("woken replica started a run under its old term: %v", l)
	}
	res.Z = stopAll(t, ps)
	res.checkLedger(t, path, eps)
	late := 0
	for _, e := range res.entries {
		if e.Node == old.name {
			t.Logf("ledger line of the paused replica: slot %s token %d accepted=%v cancelled=%v end %s after the resume",
				e.ScheduledTime.Format(time.TimeOnly), e.FencingToken, e.Accepted, e.Cancelled, e.End.Sub(resumed).Round(time.Millisecond))
		}
		if e.Node == old.name && e.End.After(resumed) {
			late++
			if e.Accepted {
				t.Errorf("late write of the woken replica accepted: %+v", e)
			}
		}
	}
	t.Logf("woken replica: %d late ledger writes, all rejected", late)
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// Scenario 17: the leader is killed (kill -9) while its ledger task holds
// for seconds. The plugin process exits on its own; whatever it writes
// late is either rejected or lands before any write under a higher token.
func TestChaosRunnerKillMidRun(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 17, 2, "4s")

	old := waitLeader(t, ps, 30*time.Second)
	old.waitLogs("a run to start", 15*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("run started"))) > 0 })
	pids := pluginPIDs(old.logs())
	fault := time.Now()
	old.signal(syscall.SIGKILL)
	old.wait(10 * time.Second)
	for _, pid := range pids {
		waitGone(t, pid, 10*time.Second)
	}
	t.Logf("plugin exited %s after its runner was killed", time.Since(fault).Round(time.Millisecond))
	leader, f := failover(t, others(ps, old), fault, 3*time.Second)
	res.runs++
	res.F = append(res.F, f)
	waitRunsAfter(leader, 1, fault, 20*time.Second)
	res.Z = stopAll(t, ps)
	res.checkLedger(t, path, eps)

	// The ledger's own rule: no accepted write under a token lower than one
	// accepted before it.
	var highest int64
	for _, e := range res.entries {
		if e.Accepted {
			if e.FencingToken < highest {
				t.Errorf("accepted write under token %d after token %d: %+v", e.FencingToken, highest, e)
			}
			highest = max(highest, e.FencingToken)
		}
	}
	for _, e := range res.entries {
		if e.Node == old.name && e.End.After(fault) {
			t.Logf("dead runner's plugin wrote after the kill: accepted=%v cancelled=%v token=%d highest=%d", e.Accepted, e.Cancelled, e.FencingToken, e.Highest)
		}
	}
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}
