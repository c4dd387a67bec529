package main

// BenchmarkE2EShards is the scale-out benchmark of issue 13: the same jobs on
// 1, 2 and 3 replicas sharing one etcd, to show that the work splits and
// that each replica's CPU falls with the replica count:
//
//	go test -run '^$' -bench 'E2EShards/jobs=1000$' -benchtime 1x -count 3 -timeout 60m ./cmd/pacer/
//	go test -run '^$' -bench 'E2EShards/jobs=100000$' -benchtime 1x -count 3 -timeout 60m ./cmd/pacer/
//
// The etcd is an embedded single-node server in the benchmark's own process
// (so no replica's CPU includes it); every replica is a real `pacer run`
// with cluster.shards 16 (jobs=1000/replicas=1/shards=1: one shard, to
// compare), on testplugin's stamp task (see BenchmarkE2EJobs).
// jobs=1000 runs 1,000 jobs "@every 1s". Once every replica leads the shards
// the assignment gives it and PACER_BENCH_WARMUP (5s) has passed, the window
// covers PACER_BENCH_WINDOW (20s) of slots. Reported:
//
//	lag-p50-ms, lag-p99-ms   start lag over every slot in the window
//	runs, D, M               as BenchmarkE2EJobs; D or M above 0 fails
//	runs-rN                  executions whose run started on replica N
//	cpu-cores-rN             replica N's runner process, user+system CPU
//	                         over the window's wall time
//	cpu-cores-plugin-rN      its plugin processes
//	cpu-cores-etcd           this benchmark's process: the embedded etcd
//	                         (and the benchmark, which sleeps meanwhile)
//	rss-MiB-rN               replica N's runner VmRSS at the window's end
//
// jobs=100000 is the memory benchmark: 100,000 jobs that fire once a year,
// so nothing runs; once settled, each replica's VmRSS and VmHWM, and how
// many jobs its scheduler holds (its last "shard's jobs scheduled" line),
// are reported as rss-MiB-rN, hwm-MiB-rN and scheduled-rN.
//
// PACER_BENCH_REPLICAS (e.g. "3") runs one replica count only.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/runner/shard"
)

const benchShards = 16

func BenchmarkE2EShards(b *testing.B) {
	if testing.Short() {
		b.Skip("end-to-end benchmark: runs several pacer processes for tens of seconds (skipped with -short)")
	}
	replicas := []int{1, 2, 3}
	if n := envInt(b, "PACER_BENCH_REPLICAS"); n > 0 {
		replicas = []int{n}
	}
	o := shardBenchOptions{
		window: envDuration(b, "PACER_BENCH_WINDOW", 20*time.Second),
		warmup: envDuration(b, "PACER_BENCH_WARMUP", 5*time.Second),
	}
	for _, jobs := range []int{1000, 100000} {
		for _, n := range replicas {
			// One replica also runs with one shard: what a single node
			// pays for the default 16 (issue 13's burst question).
			shardCounts := []int{benchShards}
			if n == 1 && jobs <= 10000 {
				shardCounts = append(shardCounts, 1)
			}
			for _, shards := range shardCounts {
				name := fmt.Sprintf("jobs=%d/replicas=%d", jobs, n)
				if shards != benchShards {
					name += fmt.Sprintf("/shards=%d", shards)
				}
				b.Run(name, func(b *testing.B) {
					o := o
					o.jobs, o.replicas, o.shards = jobs, n, shards
					b.StopTimer()
					b.ResetTimer()
					for range b.N {
						if jobs > 10000 {
							measureShardMemory(b, o)
						} else {
							measureShards(b, o)
						}
					}
				})
			}
		}
	}
}

type shardBenchOptions struct {
	jobs, replicas int
	shards         int // cluster.shards
	window, warmup time.Duration
}

// shardBench is one run of the benchmark: its etcd, replicas and files.
type shardBench struct {
	dir, stamps string
	shards      int
	started     time.Time
	etcd        *etcdembed.Embedded
	names       []string
	rs          []*benchRunner
}

func startShardBench(b *testing.B, o shardBenchOptions, schedule string) *shardBench {
	b.Helper()
	dir := b.TempDir()
	e, err := etcdembed.Start(context.Background(), etcdembed.Options{
		Name: "bench", Dir: filepath.Join(dir, "etcd"), ClientListen: benchAddr(b), PeerListen: benchAddr(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	s := &shardBench{dir: dir, stamps: filepath.Join(dir, "stamps.jsonl"), shards: o.shards, etcd: e, started: time.Now()}
	var jobs strings.Builder
	id := "bench-%04d" // as countStamps counts them
	if o.jobs > 10000 {
		id = "bench-%06d"
	}
	for i := range o.jobs {
		fmt.Fprintf(&jobs, "  - {id: "+id+", plugin: testplugin, task: stamp, schedule: %q, timeout: 10s, params: {path: %q}}\n",
			i, schedule, s.stamps)
	}
	for i := range o.replicas {
		name := fmt.Sprintf("r%d", i+1)
		http := benchAddr(b)
		cfg := fmt.Sprintf(`
node: {name: %s}
cluster:
  name: bench
  data_dir: %s
  lease_ttl: 5s
  shards: %d
  shard_settle: 1s
  etcd: {endpoints: [%s], request_timeout: 5s}
http: {listen: %s}
plugins: {dir: %s}
jobs:
%s`, name, filepath.Join(dir, name), o.shards, e.Endpoint(), http, filepath.Join(binDir, "plugins"), jobs.String())
		s.names = append(s.names, name)
		s.rs = append(s.rs, startBenchRunnerBin(b, filepath.Join(binDir, "pacer"), filepath.Join(dir, name+".yaml"), filepath.Join(dir, name+".log"), cfg))
	}
	return s
}

// ledShards replays a replica's log file and returns the shards it leads.
func (s *shardBench) ledShards(b *testing.B, i int) []int {
	b.Helper()
	f, err := os.Open(s.rs[i].logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	led := map[int]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), "leader") && !strings.Contains(string(line), "leadership") {
			continue
		}
		var l struct {
			Msg   string `json:"msg"`
			Shard *int   `json:"shard"`
		}
		if json.Unmarshal(line, &l) != nil || l.Shard == nil {
			continue
		}
		switch l.Msg {
		case "became leader":
			led[*l.Shard] = true
		case "leadership ended", "resigned leadership":
			delete(led, *l.Shard)
		}
	}
	return slices.Sorted(maps.Keys(led))
}

// waitSettled waits until every replica leads the shards the assignment
// gives it.
func (s *shardBench) waitSettled(b *testing.B, timeout time.Duration) {
	b.Helper()
	want := shard.Assign(s.shards, s.names)
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for i, name := range s.names {
			if !slices.Equal(s.ledShards(b, i), shard.Owned(want, name)) {
				ok = false
			}
			select {
			case <-s.rs[i].exited:
				log, _ := os.ReadFile(s.rs[i].logPath)
				b.Fatalf("%s exited:\n%s", name, log)
			default:
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var got []string
			for i, name := range s.names {
				got = append(got, fmt.Sprintf("%s=%v", name, s.ledShards(b, i)))
			}
			b.Fatalf("shards not settled within %s: %s", timeout, strings.Join(got, " "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop stops every replica (SIGTERM) and checks each exits 0.
func (s *shardBench) stop(b *testing.B) {
	b.Helper()
	for _, r := range s.rs {
		r.signal(b, syscall.SIGTERM)
	}
	for i, r := range s.rs {
		if code := r.wait(b, 60*time.Second); code != 0 {
			b.Errorf("%s exited with %d after SIGTERM, want 0", s.names[i], code)
		}
	}
}

// children returns the processes whose parent is pid (its plugins).
func children(b *testing.B, pid int) []int {
	b.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func cpuOf(b *testing.B, pids []int) float64 {
	var sum float64
	for _, p := range pids {
		sum += cpuTicks(b, p)
	}
	return sum
}

func measureShards(b *testing.B, o shardBenchOptions) {
	b.Helper()
	s := startShardBench(b, o, "@every 1s")
	s.waitSettled(b, 120*time.Second)
	s.rs[0].waitRuns(b, s.stamps, 60*time.Second)
	time.Sleep(o.warmup) // steady state, not synchronisation

	first := time.Now().Truncate(time.Second).Add(time.Second)
	if time.Until(first) < 500*time.Millisecond {
		first = first.Add(time.Second)
	}
	last := first.Add(time.Duration(int(o.window/time.Second)-1) * time.Second)
	hz := clockTicks(b)
	plugins := make([][]int, len(s.rs))
	for i, r := range s.rs {
		plugins[i] = children(b, r.pid())
	}
	sleepUntil(first.Add(-500 * time.Millisecond))
	t0 := time.Now()
	e0 := cpuTicks(b, os.Getpid()) // the embedded etcd runs in this process
	c0, p0 := make([]float64, len(s.rs)), make([]float64, len(s.rs))
	for i, r := range s.rs {
		c0[i], p0[i] = cpuTicks(b, r.pid()), cpuOf(b, plugins[i])
	}
	b.StartTimer()
	sleepUntil(last.Add(500 * time.Millisecond))
	b.StopTimer()
	wall := time.Since(t0).Seconds()
	etcdCPU := (cpuTicks(b, os.Getpid()) - e0) / hz / wall
	b.ReportMetric(etcdCPU, "cpu-cores-etcd")
	usage := []string{fmt.Sprintf("etcd (and this benchmark): cpu %.2f", etcdCPU)} // for the failure message: a failed benchmark prints no metrics
	for i, r := range s.rs {
		cpu, pcpu, rss := (cpuTicks(b, r.pid())-c0[i])/hz/wall, (cpuOf(b, plugins[i])-p0[i])/hz/wall, memMiB(b, r.pid(), "VmRSS")
		b.ReportMetric(cpu, fmt.Sprintf("cpu-cores-%s", s.names[i]))
		b.ReportMetric(pcpu, fmt.Sprintf("cpu-cores-plugin-%s", s.names[i]))
		b.ReportMetric(rss, fmt.Sprintf("rss-MiB-%s", s.names[i]))
		usage = append(usage, fmt.Sprintf("%s: cpu %.2f, plugin %.2f, rss %.0f MiB", s.names[i], cpu, pcpu, rss))
	}
	sleepUntil(last.Add(1500 * time.Millisecond))
	s.stop(b)

	var all e2eResult
	byRun := map[string]int{} // run ID -> replica
	for i, r := range s.rs {
		started := all.readLog(b, r.logPath, first, last, false) // by run ID: runsByReplica attributes runs
		for id := range started {
			byRun[id] = i
		}
	}
	all.countStamps(b, s.stamps, o.jobs, first, last, nil)
	perReplica := s.runsByReplica(b, first, last, byRun)
	q := quantiles(all.lags)
	b.ReportMetric(q(0.50), "lag-p50-ms")
	b.ReportMetric(q(0.99), "lag-p99-ms")
	b.ReportMetric(float64(all.runs), "runs")
	b.ReportMetric(float64(all.dup), "D")
	b.ReportMetric(float64(all.miss), "M")
	for i, n := range perReplica {
		b.ReportMetric(float64(n), "runs-"+s.names[i])
	}
	if all.dup > 0 || all.miss > 0 {
		b.Errorf("%d jobs on %d replicas: not exactly once: D=%d M=%d; runs per replica %v; lag p50/p99 %.0f/%.0f ms; %s",
			o.jobs, o.replicas, all.dup, all.miss, perReplica, q(0.50), q(0.99), strings.Join(usage, "; "))
	}
}

// runsByReplica counts the executions of slots in [first, last] by the
// replica whose "run started" line has their run ID.
func (s *shardBench) runsByReplica(b *testing.B, first, last time.Time, byRun map[string]int) []int {
	b.Helper()
	f, err := os.Open(s.stamps)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	out := make([]int, len(s.rs))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var st struct {
			SlotNS int64  `json:"slot_ns"`
			RunID  string `json:"run_id"`
		}
		if json.Unmarshal(sc.Bytes(), &st) != nil || st.SlotNS < first.UnixNano() || st.SlotNS > last.UnixNano() {
			continue
		}
		if i, ok := byRun[st.RunID]; ok {
			out[i]++
		}
	}
	return out
}

func measureShardMemory(b *testing.B, o shardBenchOptions) {
	b.Helper()
	s := startShardBench(b, o, "0 0 0 1 1 *") // once a year: nothing runs during the benchmark
	s.waitSettled(b, 10*time.Minute)
	// Each term schedules its shard's jobs once its catch-up is done.
	want := shard.Assign(s.shards, s.names)
	deadline := time.Now().Add(20 * time.Minute)
	for i, name := range s.names {
		for s.scheduledShards(b, i) < len(shard.Owned(want, name)) {
			if time.Now().After(deadline) {
				b.Fatalf("%s scheduled %d of its %d shards' jobs in 20 minutes", name, s.scheduledShards(b, i), len(shard.Owned(want, name)))
			}
			time.Sleep(time.Second)
		}
	}
	b.Logf("every replica scheduled its shards' jobs %s after the start", time.Since(s.started).Round(time.Second))
	time.Sleep(o.warmup) // let the heap settle after start-up, not synchronisation
	b.StartTimer()
	b.StopTimer()
	for i, r := range s.rs {
		b.ReportMetric(memMiB(b, r.pid(), "VmRSS"), "rss-MiB-"+s.names[i])
		b.ReportMetric(memMiB(b, r.pid(), "VmHWM"), "hwm-MiB-"+s.names[i])
		b.ReportMetric(float64(s.scheduled(b, i)), "scheduled-"+s.names[i])
	}
	s.stop(b)
}

// scheduledShards counts replica i's "shard's jobs scheduled" lines.
func (s *shardBench) scheduledShards(b *testing.B, i int) int {
	b.Helper()
	data, err := os.ReadFile(s.rs[i].logPath)
	if err != nil {
		b.Fatal(err)
	}
	return strings.Count(string(data), `"msg":"shard's jobs scheduled"`)
}

// scheduled returns how many jobs replica i's scheduler holds, from its
// last "shard's jobs scheduled" or "unscheduled" line (its /metrics, with the series of
// tens of thousands of jobs, is too large to read in a benchmark).
func (s *shardBench) scheduled(b *testing.B, i int) int {
	b.Helper()
	data, err := os.ReadFile(s.rs[i].logPath)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		var l struct {
			Scheduled int `json:"scheduled"`
		}
		if (strings.Contains(line, `"msg":"shard's jobs scheduled"`) || strings.Contains(line, `"msg":"shard's jobs unscheduled"`)) &&
			json.Unmarshal([]byte(line), &l) == nil {
			n = l.Scheduled // the newest: after a shard was added or removed
		}
	}
	return n
}
