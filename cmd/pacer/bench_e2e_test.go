package main

// BenchmarkE2EJobs is the end-to-end benchmark of issue 5 ("1,000 jobs at
// `@every 1s`, claim + no-op plugin run: every slot runs exactly once, start
// lag p99 ≤ 50 ms; report CPU and RSS"):
//
//	go test -run '^$' -bench E2EJobs -benchtime 1x -timeout 10m ./cmd/pacer/
//	go test -run '^$' -bench 'E2EJobs/jobs=1000$' -benchtime 1x -count 3 -timeout 15m ./cmd/pacer/
//
// Each sub-benchmark starts one real `pacer run` (embedded single-node etcd,
// default settings unless an environment variable below says otherwise) with
// N jobs "@every 1s" on testplugin's "stamp" task, which does nothing but
// read the clock and append one line (job, slot, start, run ID, attempt, pid)
// to a file with one write(2). (The chaos suite's ledger plugin records the
// same, but takes an flock and reads and rewrites a JSON file of tokens on
// every run, which serialises all runs through one lock: it measures the
// ledger; PACER_BENCH_TASK=ledger shows by how much.) After the first run and
// PACER_BENCH_WARMUP (5s), the window covers the slots of the next PACER_BENCH_WINDOW (20s)
// whole seconds; every @every 1s slot is at a whole second, so all N jobs are
// due at the same instant, the worst case for the claim batcher and the
// plugin. A second and a half after the window's last slot the runner gets
// SIGTERM and must exit 0.
//
// Reported, over the slots in the window:
//
//	lag-p50-ms, lag-p99-ms, lag-max-ms
//	    start lag: the time the task began in the plugin process (its first
//	    statement reads the clock) minus the slot's scheduled time, so it
//	    includes the scheduler, the claim transaction, the runner's
//	    bookkeeping, the wait for a free plugin slot (plugins.max_concurrency)
//	    and the gRPC call. Target: p99 ≤ 50 ms.
//	runner-p50-ms, runner-p99-ms
//	    the runner's part of it: the time of its "run started" log line
//	    (written after the claim, before the plugin call) minus the slot.
//	host-p50-ms, host-p99-ms
//	    the rest: plugin start minus "run started", matched by run ID, i.e.
//	    the wait for a plugin slot and the call. Both pairs are missing when
//	    the log level hides info lines.
//	runs, D, M, skipped
//	    executions recorded; D = executions beyond the first of a (job, slot);
//	    M = (job, slot) pairs in the window with no execution and no skip
//	    record saying why; skipped = those with one (overlap: the job's
//	    previous run was still running; misfire: the scheduler could not
//	    fire in time; both happen when the machine is too busy to run
//	    every job within its second). D or M above zero fails the
//	    benchmark.
//	cpu-cores-runner, cpu-cores-plugin
//	    user+system CPU seconds of each process (from /proc/<pid>/stat) from
//	    half a second before the window's first slot to half a second before
//	    the slot after its last, divided by that wall time. The runner's
//	    figure includes the embedded etcd, which runs in its process.
//	rss-MiB-runner, hwm-MiB-runner, rss-MiB-plugin, hwm-MiB-plugin
//	    VmRSS and VmHWM (peak) from /proc/<pid>/status at the end of the window.
//	warns
//	    warning and error lines the runner logged during the window (skipped
//	    slots, failed claims, unwritten records, slow etcd requests); the
//	    benchmark logs how many of each kind, with an example, and apart
//	    the kinds logged before the window (start-up and warm-up).
//
// ns/op is the window's wall time: one window is the whole benchmark, so run
// it with -benchtime 1x; with b.N > 1 the windows run one after the other and
// the figures cover all of them.
//
// Knobs (environment): PACER_BENCH_WINDOW and PACER_BENCH_WARMUP (Go
// durations); PACER_BENCH_MAX_CONCURRENCY (plugins.max_concurrency, default
// 32), PACER_BENCH_KEEP (history.keep, default 100) and
// PACER_BENCH_LOG_LEVEL (default info) to see what a setting costs;
// PACER_BENCH_TASK=ledger to run the ledger plugin instead of stamp, and
// PACER_BENCH_TASK=shell to run the shell plugin's exec task on /bin/true
// (then every lag is the runner's "run started" line minus the slot, and
// runs, D and M come from those lines: /bin/true stamps nothing).
//
// Before and after, side by side: PACER_BENCH_BASE names a directory with
// another build (pacer, and plugins/ with the task's plugin, e.g. of
// main, built with CGO_ENABLED=0 as this benchmark builds its own, or the
// two differ in more than the code; not under /tmp/perf-*, which perf
// takes for JIT symbol maps and does not symbolise); each sub-benchmark then runs as build=base and build=new, one
// after the other. (-count repeats each of them in a row: to alternate
// them on a machine whose load changes, run the benchmark with -count 1
// several times, e.g. with -c and a loop.) PACER_BENCH_PERF names a directory where `perf record -g` writes
// a CPU profile of the runner and of the plugin for each window
// (<build>-jobs=N-<task>-<i>.{runner,plugin}.data) and logs each split by
// component (internal/perfprofile); perf costs CPU itself, so measure
// without it.
//
// Also reported: cpu-us-per-run, the CPU time of the runner (with its
// etcd) and the plugin over the window divided by the executions in it, and
// cpu-cores-total, their sum in cores; with the shell task the commands'
// own CPU is in neither (cpu-cores-children shows it). From the embedded
// etcd's own /metrics, per execution over the same window:
// etcd-txns-per-run, etcd-ranges-per-run and etcd-deletes-per-run (the
// requests its gRPC server handled: claim and record batches, reads,
// prunes; 0 for a build whose runner calls its embedded etcd in the
// process, as pacer run does since issue 16's fourth pass, in
// docs/guarantees.md), etcd-proposals-per-run (raft proposals committed: every write
// request, one that changed nothing too) and etcd-revisions-per-run (the
// writes that changed a key).

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/perfprofile"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// BenchmarkE2EJobs: see the comment at the top of this file.
func BenchmarkE2EJobs(b *testing.B) {
	if testing.Short() {
		b.Skip("end-to-end benchmark: runs a real pacer process for tens of seconds (skipped with -short)")
	}
	o := e2eOptions{
		window:         envDuration(b, "PACER_BENCH_WINDOW", 20*time.Second),
		warmup:         envDuration(b, "PACER_BENCH_WARMUP", 5*time.Second),
		maxConcurrency: envInt(b, "PACER_BENCH_MAX_CONCURRENCY"),
		keep:           envInt(b, "PACER_BENCH_KEEP"),
		logLevel:       os.Getenv("PACER_BENCH_LOG_LEVEL"),
		task:           cmp.Or(os.Getenv("PACER_BENCH_TASK"), "stamp"),
		perfDir:        os.Getenv("PACER_BENCH_PERF"),
	}
	if t := o.task; t != "stamp" && t != "ledger" && t != "shell" {
		b.Fatalf("PACER_BENCH_TASK=%q: want stamp, ledger or shell", t)
	}
	if o.task == "ledger" {
		sdktest.Build(b, filepath.Join(binDir, "plugins"), "github.com/pacerun/pacer/internal/testplugins/ledger")
	}
	builds := []benchBuild{{"", binDir}}
	if base := os.Getenv("PACER_BENCH_BASE"); base != "" {
		plugin := map[string]string{"stamp": "testplugin", "ledger": "ledger", "shell": "shell"}[o.task]
		for _, f := range []string{"pacer", "plugins/" + plugin} {
			if _, err := os.Stat(filepath.Join(base, f)); err != nil {
				b.Fatalf("PACER_BENCH_BASE: %v", err)
			}
		}
		builds = []benchBuild{{"build=base", base}, {"build=new", binDir}}
	}
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("jobs=%d", n), func(b *testing.B) {
			for _, build := range builds {
				run := func(b *testing.B) {
					o := o
					o.jobs, o.bin = n, build.dir
					var all e2eResult
					b.StopTimer()
					b.ResetTimer()
					for i := range b.N {
						o.perfName = fmt.Sprintf("%s-jobs=%d-%s-%d", cmp.Or(strings.TrimPrefix(build.name, "build="), "new"), n, o.task, i)
						all = all.merge(measureE2E(b, o))
					}
					all.report(b, o)
				}
				if build.name == "" {
					run(b)
				} else {
					b.Run(build.name, run)
				}
			}
		})
	}
}

// benchBuild is a pacer binary and its plugins: the tree's own, or the
// base of a before/after comparison.
type benchBuild struct{ name, dir string }

type e2eOptions struct {
	jobs           int
	window, warmup time.Duration
	maxConcurrency int    // 0: the default
	keep           int    // 0: the default
	logLevel       string // "": the default
	task           string // stamp, ledger or shell
	bin            string // holds pacer and plugins/
	perfDir        string // "": no profiles
	perfName       string // this window's profile files, in perfDir
}

// e2eResult is what one or more windows measured.
type e2eResult struct {
	lags       []time.Duration // plugin start − slot, one per first execution
	runnerLags []time.Duration // "run started" − slot
	hostLags   []time.Duration // plugin start − "run started", by run ID
	runs       int
	dup, miss  int
	skipped    int             // slots without an execution, with a skip line
	skips      map[string]bool // "job@slot" of the skip lines in the window
	// schedMissed counts, by job, the slots the scheduler logged it could
	// not fire in the window (the process was starved): a record, though
	// not one per slot.
	schedMissed map[string]int
	warns       int
	dupStarts   int     // "run started" lines of a first attempt seen again (shell)
	cpuRunner   float64 // CPU seconds
	cpuPlugin   float64
	cpuKids     float64    // the plugin's reaped children: the shell task's commands
	etcd        etcdCounts // etcd's requests over the CPU window
	wall        float64    // seconds the CPU figures cover
	rss         procMem    // worst of the windows
}

type procMem struct{ runnerRSS, runnerHWM, pluginRSS, pluginHWM float64 } // MiB

func (r e2eResult) merge(o e2eResult) e2eResult {
	r.lags = append(r.lags, o.lags...)
	r.runnerLags = append(r.runnerLags, o.runnerLags...)
	r.hostLags = append(r.hostLags, o.hostLags...)
	r.runs += o.runs
	r.dup += o.dup
	r.miss += o.miss
	r.skipped += o.skipped
	r.warns += o.warns
	r.cpuRunner += o.cpuRunner
	r.cpuPlugin += o.cpuPlugin
	r.cpuKids += o.cpuKids
	r.etcd = r.etcd.plus(o.etcd)
	r.wall += o.wall
	r.rss = procMem{max(r.rss.runnerRSS, o.rss.runnerRSS), max(r.rss.runnerHWM, o.rss.runnerHWM),
		max(r.rss.pluginRSS, o.rss.pluginRSS), max(r.rss.pluginHWM, o.rss.pluginHWM)}
	return r
}

func (r e2eResult) report(b *testing.B, o e2eOptions) {
	if len(r.lags) == 0 {
		b.Fatal("no execution recorded in the window")
	}
	q := quantiles(r.lags)
	b.ReportMetric(q(0.50), "lag-p50-ms")
	b.ReportMetric(q(0.99), "lag-p99-ms")
	b.ReportMetric(q(1), "lag-max-ms")
	if len(r.runnerLags) > 0 {
		rq := quantiles(r.runnerLags)
		b.ReportMetric(rq(0.50), "runner-p50-ms")
		b.ReportMetric(rq(0.99), "runner-p99-ms")
	}
	if len(r.hostLags) > 0 {
		hq := quantiles(r.hostLags)
		b.ReportMetric(hq(0.50), "host-p50-ms")
		b.ReportMetric(hq(0.99), "host-p99-ms")
	}
	b.ReportMetric(float64(r.runs), "runs")
	b.ReportMetric(float64(r.dup), "D")
	b.ReportMetric(float64(r.miss), "M")
	b.ReportMetric(float64(r.skipped), "skipped")
	b.ReportMetric(r.cpuRunner/r.wall, "cpu-cores-runner")
	b.ReportMetric(r.cpuPlugin/r.wall, "cpu-cores-plugin")
	b.ReportMetric((r.cpuRunner+r.cpuPlugin)/r.wall, "cpu-cores-total")
	if o.task == "shell" {
		b.ReportMetric(r.cpuKids/r.wall, "cpu-cores-children")
	}
	b.ReportMetric((r.cpuRunner+r.cpuPlugin)/float64(r.runs)*1e6, "cpu-us-per-run")
	for _, m := range []struct {
		n    float64
		unit string
	}{
		{r.etcd.txns, "etcd-txns-per-run"}, {r.etcd.ranges, "etcd-ranges-per-run"}, {r.etcd.deletes, "etcd-deletes-per-run"},
		{r.etcd.proposals, "etcd-proposals-per-run"}, {r.etcd.revisions, "etcd-revisions-per-run"},
	} {
		b.ReportMetric(m.n/float64(r.runs), m.unit)
	}
	b.ReportMetric(r.rss.runnerRSS, "rss-MiB-runner")
	b.ReportMetric(r.rss.runnerHWM, "hwm-MiB-runner")
	b.ReportMetric(r.rss.pluginRSS, "rss-MiB-plugin")
	b.ReportMetric(r.rss.pluginHWM, "hwm-MiB-plugin")
	b.ReportMetric(float64(r.warns), "warns")
	if r.dup > 0 || r.miss > 0 {
		// A failed benchmark prints no metrics: say the main ones here.
		b.Errorf("%d jobs: not exactly once: D=%d (extra executions), M=%d (slots that did not run); "+
			"runs=%d lag p50/p99/max %.1f/%.1f/%.1f ms, cpu-cores runner/plugin %.2f/%.2f, rss MiB runner/plugin %.1f/%.1f",
			o.jobs, r.dup, r.miss, r.runs, q(0.50), q(0.99), q(1), r.cpuRunner/r.wall, r.cpuPlugin/r.wall, r.rss.runnerRSS, r.rss.pluginRSS)
	}
	if p99 := q(0.99); p99 > 50 {
		b.Logf("%d jobs: start lag p99 %.1f ms is above the 50 ms target", o.jobs, p99)
	}
}

// quantiles sorts ds and returns its p-quantile function, in milliseconds.
func quantiles(ds []time.Duration) func(p float64) float64 {
	slices.Sort(ds)
	return func(p float64) float64 {
		return float64(ds[int(p*float64(len(ds)-1))]) / float64(time.Millisecond)
	}
}

// measureE2E runs one window with its own runner, etcd data and stamp file.
func measureE2E(b *testing.B, o e2eOptions) e2eResult {
	b.Helper()
	dir := b.TempDir()
	stamps := filepath.Join(dir, "stamps.jsonl")
	logPath := filepath.Join(dir, "pacer.log")
	client := benchAddr(b)
	r := startBenchRunnerBin(b, filepath.Join(o.bin, "pacer"), filepath.Join(dir, "pacer.yaml"), logPath, e2eConfig(b, dir, stamps, client, o))

	r.waitRuns(b, stamps, 60*time.Second)
	time.Sleep(o.warmup) // let the runner reach its steady state, not synchronisation

	// The window's slots are first, first+1s, …, last. CPU is sampled half
	// a second before first and half a second before last+1s, between bursts.
	first := time.Now().Truncate(time.Second).Add(time.Second)
	if time.Until(first) < 500*time.Millisecond {
		first = first.Add(time.Second)
	}
	seconds := int(o.window / time.Second)
	if seconds < 1 {
		b.Fatalf("PACER_BENCH_WINDOW %s: want at least 1s", o.window)
	}
	last := first.Add(time.Duration(seconds-1) * time.Second)
	plugin := r.pluginPID(b)
	hz := clockTicks(b)

	sleepUntil(first.Add(-500 * time.Millisecond))
	var profiles []*exec.Cmd
	if o.perfDir != "" {
		for _, p := range []struct {
			what string
			pid  int
		}{{"runner", r.pid()}, {"plugin", plugin}} {
			profiles = append(profiles, startPerf(b, filepath.Join(o.perfDir, o.perfName+"."+p.what+".data"), p.pid))
		}
	}
	t0 := time.Now()
	c0r, c0p := cpuTicks(b, r.pid()), cpuTicks(b, plugin)
	k0 := childTicks(b, plugin)
	e0 := readEtcdCounts(b, client)
	b.StartTimer()
	sleepUntil(last.Add(500 * time.Millisecond))
	b.StopTimer()
	t1 := time.Now()
	c1r, c1p := cpuTicks(b, r.pid()), cpuTicks(b, plugin)
	k1 := childTicks(b, plugin)
	e1 := readEtcdCounts(b, client)
	for _, p := range profiles {
		_ = p.Process.Signal(syscall.SIGINT)
		_ = p.Wait()
	}
	mem := procMem{memMiB(b, r.pid(), "VmRSS"), memMiB(b, r.pid(), "VmHWM"), memMiB(b, plugin, "VmRSS"), memMiB(b, plugin, "VmHWM")}

	sleepUntil(last.Add(1500 * time.Millisecond)) // the last slot's runs have finished, normally
	r.signal(b, syscall.SIGTERM)
	if code := r.wait(b, 30*time.Second); code != 0 {
		b.Errorf("pacer exited with %d after SIGTERM, want 0", code)
	}

	res := e2eResult{cpuRunner: (c1r - c0r) / hz, cpuPlugin: (c1p - c0p) / hz, cpuKids: (k1 - k0) / hz, wall: t1.Sub(t0).Seconds(), rss: mem,
		etcd: e1.minus(e0)}
	started := res.readLog(b, logPath, first, last, o.task == "shell")
	if o.task == "shell" {
		res.countStarts(b, started, o.jobs, first, last)
	} else {
		res.countStamps(b, stamps, o.jobs, first, last, started)
	}
	if o.perfDir != "" && res.runs > 0 {
		for _, p := range []struct {
			what string
			cpu  float64
		}{{"runner", res.cpuRunner}, {"plugin", res.cpuPlugin}} {
			data := filepath.Join(o.perfDir, o.perfName+"."+p.what+".data")
			shares, total, err := perfprofile.Script(data)
			if err != nil {
				b.Logf("profile of the %s: %v", p.what, err)
				continue
			}
			b.Logf("profile of the %s (%s; µs/op: of its CPU per run, with perf running):\n%s", p.what, data,
				perfprofile.Format(shares, total, p.cpu/float64(res.runs)*1e6))
		}
	}
	return res
}

// etcdCounts are counters of the embedded etcd, from the /metrics it
// serves on its client address: the requests its gRPC server handled, by
// kind (any outcome), the raft proposals it committed, and its revision
// (one more for every write that changed a key).
type etcdCounts struct{ txns, ranges, deletes, puts, proposals, revisions float64 }

func (e etcdCounts) minus(o etcdCounts) etcdCounts {
	return etcdCounts{e.txns - o.txns, e.ranges - o.ranges, e.deletes - o.deletes, e.puts - o.puts,
		e.proposals - o.proposals, e.revisions - o.revisions}
}

func (e etcdCounts) plus(o etcdCounts) etcdCounts {
	return etcdCounts{e.txns + o.txns, e.ranges + o.ranges, e.deletes + o.deletes, e.puts + o.puts,
		e.proposals + o.proposals, e.revisions + o.revisions}
}

func readEtcdCounts(b *testing.B, client string) etcdCounts {
	b.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + client + "/metrics")
	if err != nil {
		b.Fatalf("etcd's metrics: %v", err)
	}
	defer resp.Body.Close()
	var e etcdCounts
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			rest = line[i+1:]
		}
		v, err := strconv.ParseFloat(rest, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "grpc_server_handled_total{") && strings.Contains(line, `grpc_service="etcdserverpb.KV"`):
			switch {
			case strings.Contains(line, `grpc_method="Txn"`):
				e.txns += v
			case strings.Contains(line, `grpc_method="Range"`):
				e.ranges += v
			case strings.Contains(line, `grpc_method="DeleteRange"`):
				e.deletes += v
			case strings.Contains(line, `grpc_method="Put"`):
				e.puts += v
			}
		case name == "etcd_server_proposals_committed_total":
			e.proposals = v
		case name == "etcd_debugging_mvcc_current_revision":
			e.revisions = v
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("etcd's metrics: %v", err)
	}
	return e
}

// startPerf profiles pid with perf until it gets SIGINT.
func startPerf(b *testing.B, out string, pid int) *exec.Cmd {
	b.Helper()
	cmd := exec.Command("perf", "record", "-g", "-F", "499", "-o", out, "-p", strconv.Itoa(pid))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatalf("PACER_BENCH_PERF: %v", err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// e2eConfig is the runner's config: o.jobs jobs on o.task.
func e2eConfig(b *testing.B, dir, stamps, client string, o e2eOptions) string {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `
node: {name: bench}
cluster:
  name: bench
  data_dir: %s
  etcd: {embedded: {client_listen: %s, peer_listen: %s}}
http: {listen: %s}
plugins:
  dir: %s
`, filepath.Join(dir, "data"), client, benchAddr(b), benchAddr(b), filepath.Join(o.bin, "plugins"))
	if o.maxConcurrency > 0 {
		fmt.Fprintf(&cfg, "  max_concurrency: %d\n", o.maxConcurrency)
	}
	if o.keep > 0 {
		fmt.Fprintf(&cfg, "history: {keep: %d}\n", o.keep)
	}
	if o.logLevel != "" {
		fmt.Fprintf(&cfg, "observability: {log: {level: %s}}\n", o.logLevel)
	}
	cfg.WriteString("jobs:\n")
	task := fmt.Sprintf("plugin: testplugin, task: stamp, params: {path: %q}", stamps)
	switch o.task {
	case "ledger":
		task = fmt.Sprintf("plugin: ledger, task: record, params: {path: %q}", stamps)
	case "shell":
		task = "plugin: shell, task: exec, params: {command: [/bin/true]}"
	}
	for i := range o.jobs {
		fmt.Fprintf(&cfg, `  - {id: bench-%04d, %s, schedule: "@every 1s", timeout: 10s}
`, i, task)
	}
	return cfg.String()
}

// countStarts counts the runs of slots in [first, last] from the runner's
// "run started" lines (started, by job and slot), for tasks that stamp
// nothing; every lag is then the runner's.
func (r *e2eResult) countStarts(b *testing.B, started map[string]time.Time, jobs int, first, last time.Time) {
	b.Helper()
	r.lags = append(r.lags, r.runnerLags...)
	r.runs = len(started)
	for i := range jobs {
		for at := first; !at.After(last); at = at.Add(time.Second) {
			if _, ok := started[slotKey(fmt.Sprintf("bench-%04d", i), at)]; !ok {
				r.missed(fmt.Sprintf("bench-%04d", i), at)
			}
		}
	}
	r.dup = r.dupStarts
}

// slotKey names a slot in the maps readLog fills.
func slotKey(job string, slot time.Time) string {
	return job + "@" + slot.UTC().Format(time.RFC3339Nano)
}

// missed counts a slot without an execution, as skipped if the runner
// logged why.
func (r *e2eResult) missed(job string, slot time.Time) {
	switch {
	case r.skips[slotKey(job, slot)]:
		r.skipped++
	case r.schedMissed[job] > 0:
		r.schedMissed[job]--
		r.skipped++
	default:
		r.miss++
	}
}

// countStamps reads the stamp file and keeps the executions of slots in
// [first, last]. started holds the runner's start time of each run, by ID.
func (r *e2eResult) countStamps(b *testing.B, path string, jobs int, first, last time.Time, started map[string]time.Time) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	type slot struct {
		job string
		at  int64
	}
	seen := map[slot]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s struct {
			Job     string `json:"job"`
			SlotNS  int64  `json:"slot_ns"`
			StartNS int64  `json:"start_ns"`
			RunID   string `json:"run_id"`
			// The ledger plugin's names for the slot and the start.
			ScheduledTime time.Time `json:"scheduled_time"`
			Start         time.Time `json:"start"`
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			b.Fatalf("stamp line %q: %v", sc.Text(), err)
		}
		if s.SlotNS == 0 {
			s.SlotNS, s.StartNS = s.ScheduledTime.UnixNano(), s.Start.UnixNano()
		}
		if s.SlotNS < first.UnixNano() || s.SlotNS > last.UnixNano() {
			continue
		}
		k := slot{s.Job, s.SlotNS}
		if seen[k]++; seen[k] == 1 {
			r.lags = append(r.lags, time.Duration(s.StartNS-s.SlotNS))
			if t, ok := started[s.RunID]; ok {
				r.hostLags = append(r.hostLags, time.Unix(0, s.StartNS).Sub(t))
			}
		} else {
			r.dup++
		}
		r.runs++
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	for i := range jobs {
		for at := first; !at.After(last); at = at.Add(time.Second) {
			if seen[slot{fmt.Sprintf("bench-%04d", i), at.UnixNano()}] == 0 {
				r.missed(fmt.Sprintf("bench-%04d", i), at)
			}
		}
	}
}

// readLog takes the runner's side of the lag from its "run started" lines,
// and counts the warnings about slots in the window, logging how many of
// each kind with an example (and, apart, those from before the window). It
// returns the time of each run's "run started" line, by run ID, or with
// bySlot of each slot's first attempt, by "job@slot".
func (r *e2eResult) readLog(b *testing.B, path string, first, last time.Time, bySlot bool) map[string]time.Time {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inWindow := func(t time.Time) bool { return !t.Before(first) && !t.After(last) }
	started := map[string]time.Time{}
	kinds, examples, before := map[string]int{}, map[string]string{}, map[string]int{}
	for sc.Scan() {
		line := sc.Bytes()
		isStart := bytes.Contains(line, []byte(`"msg":"run started"`))
		warn := bytes.Contains(line, []byte(`"level":"WARN"`)) || bytes.Contains(line, []byte(`"level":"ERROR"`))
		if !isStart && !warn {
			continue
		}
		var l struct {
			Time          time.Time `json:"time"`
			ScheduledTime time.Time `json:"scheduled_time"`
			RunID         string    `json:"run_id"`
			Job           string    `json:"job"`
			Attempt       int       `json:"attempt"`
			Msg           string    `json:"msg"`
			Reason        string    `json:"reason"`
			Missed        int       `json:"missed"`
			Error         string    `json:"error"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			continue // not one of ours
		}
		when := l.ScheduledTime
		if when.IsZero() {
			when = l.Time.Truncate(time.Second)
		}
		kind := l.Msg
		if l.Reason != "" {
			kind += " (" + l.Reason + ")"
		}
		if e := l.Error; e != "" {
			if i := strings.LastIndex(e, ": "); i >= 0 {
				e = e[i+2:] // the cause; the rest names the slot
			}
			kind += ": " + e
		}
		switch {
		case warn && when.Before(first):
			before[kind]++
		case isStart && inWindow(l.ScheduledTime) && bySlot:
			if l.Attempt != 1 {
				break
			}
			k := slotKey(l.Job, l.ScheduledTime)
			if _, dup := started[k]; dup {
				r.dupStarts++
				break
			}
			started[k] = l.Time
			r.runnerLags = append(r.runnerLags, l.Time.Sub(l.ScheduledTime))
		case isStart && inWindow(l.ScheduledTime):
			r.runnerLags = append(r.runnerLags, l.Time.Sub(l.ScheduledTime))
			started[l.RunID] = l.Time
		case warn && inWindow(when):
			r.warns++
			if l.Msg == "slot skipped" {
				if r.skips == nil {
					r.skips = map[string]bool{}
				}
				r.skips[slotKey(l.Job, l.ScheduledTime)] = true
			}
			if kinds[kind]++; kinds[kind] == 1 {
				examples[kind] = string(line)
			}
			if l.Missed > 0 {
				kinds[kind+": slots"] += l.Missed
				if r.schedMissed == nil {
					r.schedMissed = map[string]int{}
				}
				r.schedMissed[l.Job] += l.Missed
			}
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		b.Logf("before the window (start-up, warm-up) the runner warned %d× %q", before[k], k)
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		b.Logf("runner warned %d× %q, e.g. %s", kinds[k], k, examples[k])
	}
	return started
}

// pluginPID returns the pid of the plugin process the runner last logged
// as started.
func (r *benchRunner) pluginPID(b *testing.B) int {
	b.Helper()
	data, err := os.ReadFile(r.logPath)
	if err != nil {
		b.Fatal(err)
	}
	pid := 0
	for line := range bytes.Lines(data) {
		if !bytes.Contains(line, []byte(`"msg":"plugin started"`)) {
			continue
		}
		var l struct {
			PID int `json:"pid"`
		}
		if err := json.Unmarshal(line, &l); err == nil && l.PID != 0 {
			pid = l.PID
		}
	}
	if pid == 0 {
		b.Fatalf("no \"plugin started\" line with a pid in %s", r.logPath)
	}
	return pid
}

// benchRunner is a `pacer run` whose stderr goes straight to a file, so that
// reading its log costs the runner nothing during the window.
type benchRunner struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// startBenchRunnerBin writes cfg to cfgPath and starts bin (a pacer
// binary: this build's, or PACER_BENCH_BASE's) on it, logging to logPath.
func startBenchRunnerBin(b *testing.B, bin, cfgPath, logPath, cfg string) *benchRunner {
	b.Helper()
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := &benchRunner{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(r.exited)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.exited
	})
	return r
}

func (r *benchRunner) pid() int { return r.cmd.Process.Pid }

// waitRuns waits until the first execution is in the stamp file, or the
// runner logs its first finished run (the shell task stamps nothing): the
// runner leads, runs its scheduler and has its plugin up.
func (r *benchRunner) waitRuns(b *testing.B, stamps string, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if st, err := os.Stat(stamps); err == nil && st.Size() > 0 {
			return
		}
		if log, err := os.ReadFile(r.logPath); err == nil && bytes.Contains(log, []byte(`"msg":"run finished"`)) {
			return
		}
		select {
		case <-r.exited:
			log, _ := os.ReadFile(r.logPath)
			b.Fatalf("pacer exited before running anything:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(r.logPath)
			b.Fatalf("nothing ran within %s:\n%s", timeout, log)
		}
	}
}

func (r *benchRunner) signal(b *testing.B, sig syscall.Signal) {
	b.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		b.Fatal(err)
	}
}

func (r *benchRunner) wait(b *testing.B, timeout time.Duration) int {
	b.Helper()
	select {
	case <-r.exited:
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		b.Fatalf("pacer did not exit within %s", timeout)
		return -1
	}
}

// cpuTicks is pid's user+system CPU time so far, in clock ticks, from
// /proc/<pid>/stat.
func cpuTicks(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("CPU time of %d: %v", pid, err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, err1 := strconv.ParseFloat(fields[14-3], 64)
	stime, err2 := strconv.ParseFloat(fields[15-3], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("bad /proc/%d/stat: %s", pid, data)
	}
	return utime + stime
}

// childTicks is the CPU time so far of pid's children that it has waited
// for (cutime + cstime), in clock ticks.
func childTicks(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("CPU time of %d: %v", pid, err)
	}
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	cu, err1 := strconv.ParseFloat(fields[16-3], 64)
	cs, err2 := strconv.ParseFloat(fields[17-3], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("bad /proc/%d/stat: %s", pid, data)
	}
	return cu + cs
}

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ).
func clockTicks(b *testing.B) float64 {
	b.Helper()
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100 // what Linux uses on every common architecture
	}
	hz, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || hz <= 0 {
		b.Fatalf("getconf CLK_TCK: %q", out)
	}
	return hz
}

// memMiB reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status, in MiB.
func memMiB(b testing.TB, pid int, field string) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("memory of %d: %v", pid, err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatalf("bad %s line %q", field, line)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func benchAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// sleepUntil sleeps until t: the benchmark's windows are wall-clock spans.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func envInt(b *testing.B, name string) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a whole number", name, v)
	}
	return n
}
