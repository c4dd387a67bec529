package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A runner frozen alone (SIGSTOP of its process, as a debugger or a
// job-control stop does; its plugin runs on) cannot fence itself when its
// lease runs out, and another replica may then lead and run the same job.
// Its plugin ends the run: the runner told it how long its runs may go on
// (its fence deadline, renewed while it is in touch), and when that passes
// unrenewed the plugin cancels the run and kills its processes. They are
// dead before the lease's TTL has passed since the freeze, though they
// ignore SIGTERM: the plugin kills them at once, with no grace.
// On the code before, they ran until the runner was woken (attack 10, F6);
// then, until attack 25's W5, the one ignoring SIGTERM lived 2 s past the
// deadline, into the new leader's re-run.
func TestE2EFrozenRunnersJobEndsBeforeItsLeaseCouldExpire(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	etcd := startEtcd(t, "shared")

	const ttl = 3 * time.Second
	pidFile := filepath.Join(t.TempDir(), "pids")
	httpAddr := freeAddr(t)
	a := startPacer(t, "a", httpAddr, fmt.Sprintf(`
node: {name: a}
cluster:
  name: e2e
  data_dir: %s
  lease_ttl: %s
  shards: 1
  etcd: {endpoints: [%s]}
http: {listen: %s}
plugins: {dir: %s}
jobs:
  - id: long
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 5m
    overlap: forbid
    params:
      shell: true
      command: |
        trap "" TERM
        echo $$ >> %s
        setsid sh -c 'echo $$ >> %s; exec sleep 300' &
        sleep 300
`, t.TempDir(), ttl, etcd.Endpoint(), httpAddr, builtPlugins(), pidFile, pidFile))
	t.Cleanup(func() { a.signal(syscall.SIGCONT) }) // before the harness stops it

	pids := waitPIDs(t, pidFile, 2, 30*time.Second)
	frozen := time.Now()
	a.signal(syscall.SIGSTOP)
	for _, pid := range pids {
		waitGone(t, pid, ttl)
	}
	t.Logf("the frozen runner's job processes %v were dead %s after the freeze (lease TTL %s)",
		pids, time.Since(frozen).Round(time.Millisecond), ttl)
	a.signal(syscall.SIGCONT)
	// Woken, the runner records the attempt with the plugin's reason.
	a.waitLogs("the run's record", 30*time.Second, func(ls []logLine) bool {
		for _, l := range match(ls, msgIs("run finished")) {
			if strings.Contains(fmt.Sprint(l), "has not renewed its lease") {
				return true
			}
		}
		return false
	})
}

// waitPIDs waits until path holds n pids, one a line.
func waitPIDs(t *testing.T, path string, n int, timeout time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		f := strings.Fields(string(b))
		if len(f) >= n && strings.HasSuffix(string(b), "\n") {
			pids := make([]int, n)
			for i := range n {
				pids[i], _ = strconv.Atoi(f[i])
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q, want %d pids", path, b, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
