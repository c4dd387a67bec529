package main

// BenchmarkSoak is fault scenario 22 of docs/chaos-results.md (long soak: many
// jobs every second; etcd's keys and database size flat once the history
// is full; RSS flat), and issue 12's soak: one real `pacer run` with N jobs
// "@every 1s" on testplugin's stamp task, for PACER_SOAK_DURATION (10m),
// sampled at a tenth, half and the whole of it (1, 5 and 10 minutes):
//
//	go test -run '^$' -bench 'Soak/embedded/jobs=100$' -benchtime 1x -timeout 30m ./cmd/pacer/
//	go test -run '^$' -bench 'Soak/external' -benchtime 1x -timeout 30m ./cmd/pacer/
//
// embedded/jobs=N: the default configuration with an embedded etcd
// (history.keep 100, so each job's history is full after 100 s).
// external/jobs=50: an etcd in its own process started with
// --auto-compaction-retention=0, as an operator might run it: only the
// leader's compaction (cluster.etcd.compaction_interval, PACER_SOAK_COMPACTION
// or the default 5m) keeps its revision history bounded.
//
// Reported per sample (suffix -1, -5, -10 for the tenth, half and whole):
// keys under the cluster's prefix, the database file and its size in use
// (MiB), the revision history (current revision minus the compacted one,
// in thousands), and the runner's RSS (MiB); and the peaks of each over the
// first and the second half (suffix -peak1, -peak2; sampled every 15 s):
// compaction makes the size in use a sawtooth, bounded when the two halves'
// peaks match. keys-bound is what the
// configuration allows: per job history.keep + a tenth (the prune runs
// every keep/10 writes) + its claim key; per shard (cluster.shards, 16 by
// default) the one replica's election key and a hand-over mark. D and M are
// checked over the whole run as in BenchmarkE2EJobs; either above 0 fails.
//
// PACER_SOAK_BIN runs another pacer binary (the previous version, to
// compare); it must accept the configuration below.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/runner/shard"
	"github.com/pacerun/pacer/sdk/sdktest"
)

func BenchmarkSoak(b *testing.B) {
	if testing.Short() {
		b.Skip("soak: runs a real pacer for minutes (skipped with -short)")
	}
	d := envDuration(b, "PACER_SOAK_DURATION", 10*time.Minute)
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("embedded/jobs=%d", n), func(b *testing.B) {
			for range b.N {
				soak(b, soakOptions{jobs: n, duration: d})
			}
		})
	}
	b.Run("external/jobs=50", func(b *testing.B) {
		for range b.N {
			soak(b, soakOptions{jobs: 50, duration: d, external: true,
				compaction: envDuration(b, "PACER_SOAK_COMPACTION", 5*time.Minute)})
		}
	})
}

type soakOptions struct {
	jobs       int
	duration   time.Duration
	external   bool
	compaction time.Duration
}

type soakSample struct {
	keys, dbSize, inUse, history int64
	rev                          int64 // etcd's current revision
	rss                          float64
}

func soak(b *testing.B, o soakOptions) {
	b.Helper()
	dir := b.TempDir()
	stamps := filepath.Join(dir, "stamps.jsonl")
	logPath := filepath.Join(dir, "pacer.log")
	client := benchAddr(b)
	var etcd string
	if o.external {
		startUncompactedEtcd(b, filepath.Join(dir, "etcd"), client, benchAddr(b))
		etcd = fmt.Sprintf("  etcd: {endpoints: ['http://%s'], compaction_interval: %s}", client, o.compaction)
	} else {
		etcd = fmt.Sprintf("  etcd: {embedded: {client_listen: %s, peer_listen: %s}}", client, benchAddr(b))
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `
node: {name: soak}
cluster:
  name: soak
  data_dir: %s
%s
http: {listen: %s}
plugins: {dir: %s, max_concurrency: 1000}
observability: {log: {level: warn}}
jobs:
`, filepath.Join(dir, "data"), etcd, benchAddr(b), filepath.Join(binDir, "plugins"))
	for i := range o.jobs {
		fmt.Fprintf(&cfg, "  - {id: soak-%04d, plugin: testplugin, task: stamp, schedule: \"@every 1s\", timeout: 10s, params: {path: %q}}\n", i, stamps)
	}
	bin := filepath.Join(binDir, "pacer")
	if alt := os.Getenv("PACER_SOAK_BIN"); alt != "" {
		bin = alt
	}
	r := startBenchRunnerBin(b, bin, filepath.Join(dir, "pacer.yaml"), logPath, cfg.String())
	r.waitRuns(b, stamps, 60*time.Second)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + client}, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()

	start := time.Now()
	b.ResetTimer()
	marks := []struct {
		at   time.Duration
		name string
	}{{o.duration / 10, "1"}, {o.duration / 2, "5"}, {o.duration, "10"}}
	// A sample at each mark, and every 15 s between them for the peaks:
	// compaction makes the size in use a sawtooth, so a single sample
	// lands anywhere between its low and its high.
	var samples []soakSample
	var peak [2]soakSample // over the first and the second half
	next := 0
	for at := 15 * time.Second; next < len(marks); at += 15 * time.Second {
		if at > marks[next].at {
			at = marks[next].at
		}
		sleepUntil(start.Add(at))
		s := sampleSoak(b, cli, r.pid())
		half := 0
		if at > o.duration/2 {
			half = 1
		}
		p := &peak[half]
		p.keys, p.dbSize, p.inUse = max(p.keys, s.keys), max(p.dbSize, s.dbSize), max(p.inUse, s.inUse)
		p.history, p.rss = max(p.history, s.history), max(p.rss, s.rss)
		if at == marks[next].at {
			samples = append(samples, s)
			b.Logf("after %s: %d keys, database %.1f MiB (%.1f MiB in use), revision history %d, runner RSS %.1f MiB",
				at, s.keys, mibOf(s.dbSize), mibOf(s.inUse), s.history, s.rss)
			next++
		}
	}
	for i, p := range peak {
		b.Logf("peaks over the %s half: %d keys, database %.1f MiB (%.1f MiB in use), revision history %d, runner RSS %.1f MiB",
			[]string{"first", "second"}[i], p.keys, mibOf(p.dbSize), mibOf(p.inUse), p.history, p.rss)
	}
	b.StopTimer()
	r.signal(b, syscall.SIGTERM)
	if code := r.wait(b, 60*time.Second); code != 0 {
		b.Errorf("pacer exited with %d after SIGTERM", code)
	}
	for i, m := range marks {
		s := samples[i]
		b.ReportMetric(float64(s.keys), "keys-"+m.name)
		b.ReportMetric(mibOf(s.dbSize), "db-MiB-"+m.name)
		b.ReportMetric(mibOf(s.inUse), "inuse-MiB-"+m.name)
		b.ReportMetric(float64(s.history)/1000, "history-krev-"+m.name)
		b.ReportMetric(s.rss, "rss-MiB-"+m.name)
	}
	for i, name := range []string{"peak1", "peak2"} {
		b.ReportMetric(float64(peak[i].keys), "keys-"+name)
		b.ReportMetric(mibOf(peak[i].inUse), "inuse-MiB-"+name)
		b.ReportMetric(float64(peak[i].history)/1000, "history-krev-"+name)
		b.ReportMetric(peak[i].rss, "rss-MiB-"+name)
	}
	b.ReportMetric(float64(o.jobs*(100+10+1)+2*shard.Default), "keys-bound")
	end := start.Add(o.duration - 2*time.Second)
	recorded, stalled := soakWarnings(b, logPath, start, end)
	dup, miss := soakExactlyOnce(b, stamps, o.jobs, start, end, recorded)
	b.ReportMetric(float64(dup), "D")
	b.ReportMetric(float64(miss), "M")
	b.ReportMetric(float64(len(recorded)), "skipped")
	b.ReportMetric(float64(stalled), "sched-missed")
	if dup > 0 || miss > 0 {
		b.Errorf("not exactly once: D=%d M=%d (slots skipped with a record: %d; missed while the scheduler could not run: %d)",
			dup, miss, len(recorded), stalled)
	}
}

// soakWarnings reads the runner's warnings about slots in [from, to]: the
// slots skipped with a record (overlap, refused claims), and how many slots
// the scheduler reported missed while it could not run (a stalled process:
// counted in pacer_job_skipped_total{reason="misfire"}, not recorded). It
// logs how many warnings of each kind there were.
func soakWarnings(b testing.TB, path string, from, to time.Time) (recorded map[soakSlot]bool, stalled int) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	recorded = map[soakSlot]bool{}
	kinds := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Time          time.Time `json:"time"`
			Level, Msg    string
			Job           string    `json:"job"`
			ScheduledTime time.Time `json:"scheduled_time"`
			Reason        string    `json:"reason"`
			Missed        int       `json:"missed"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || (l.Level != "WARN" && l.Level != "ERROR") || l.Time.Before(from) || l.Time.After(to) {
			continue
		}
		kinds[l.Msg+" "+l.Reason]++
		switch {
		case l.Msg == "slots missed while the scheduler could not run":
			stalled += l.Missed
		case !l.ScheduledTime.IsZero() && l.Reason != "":
			recorded[soakSlot{l.Job, l.ScheduledTime.UnixNano()}] = true
		}
	}
	for k, n := range kinds {
		b.Logf("runner warned %d× %q", n, k)
	}
	return recorded, stalled
}

type soakSlot struct {
	job string
	at  int64
}

func mibOf(n int64) float64 { return float64(n) / (1 << 20) }

// sampleSoak reads the keys under the cluster's prefix, the database's
// sizes, the revision history and the runner's RSS.
func sampleSoak(b testing.TB, cli *clientv3.Client, pid int) soakSample {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := cli.Get(ctx, "/pacer/soak/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		b.Fatal(err)
	}
	// The compacted revision: what a watch from revision 1 is told (a
	// watch of keys that exist, so an etcd never compacted answers at once
	// too, with their first events).
	var compacted int64
	wctx, wcancel := context.WithCancel(ctx)
	for wr := range cli.Watch(wctx, "/pacer/soak/", clientv3.WithPrefix(), clientv3.WithRev(1)) {
		compacted = wr.CompactRevision
		break
	}
	wcancel()
	return soakSample{keys: keys.Count, dbSize: st.DbSize, inUse: st.DbSizeInUse,
		history: keys.Header.Revision - compacted, rev: keys.Header.Revision, rss: memMiB(b, pid, "VmRSS")}
}

// soakExactlyOnce counts, over the slots in [from, to], executions beyond
// the first of a (job, slot), and slots with none and no record.
func soakExactlyOnce(b testing.TB, path string, jobs int, from, to time.Time, recorded map[soakSlot]bool) (dup, miss int) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	type slot = soakSlot
	seen := map[slot]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s struct {
			Job    string `json:"job"`
			SlotNS int64  `json:"slot_ns"`
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			b.Fatalf("stamp line %q: %v", sc.Text(), err)
		}
		if seen[slot{s.Job, s.SlotNS}]++; seen[slot{s.Job, s.SlotNS}] > 1 {
			dup++
		}
	}
	first := from.Truncate(time.Second).Add(time.Second)
	for i := range jobs {
		for at := first; at.Before(to); at = at.Add(time.Second) {
			if k := (slot{fmt.Sprintf("soak-%04d", i), at.UnixNano()}); seen[k] == 0 && !recorded[k] {
				miss++
			}
		}
	}
	return dup, miss
}

// startUncompactedEtcd runs an etcd member in its own process (internal/etcdmember)
// that never compacts itself (--auto-compaction-retention=0), as an
// operator might run one, and stops it at cleanup.
func startUncompactedEtcd(b testing.TB, dir, client, peer string) {
	b.Helper()
	etcdmember := sdktest.Build(b, b.TempDir(), "github.com/pacerun/pacer/internal/etcdmember")
	cmd := exec.Command(etcdmember, "--name", "soak", "--dir", dir, "--client", client,
		"--peer", peer, "--auto-compaction-retention", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	// It dies with the test binary too: a test that times out panics
	// without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "ready" {
		b.Fatalf("etcdmember: %q", line)
	}
}
