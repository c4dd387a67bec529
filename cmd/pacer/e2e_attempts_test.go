package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runRow is a row of "pacer runs JOB -o json".
type runRow struct {
	RunID         string `json:"run_id"`
	CorrelationID string `json:"correlation_id"`
	State         string `json:"state"`
	Reason        string `json:"reason"`
	Attempt       int    `json:"attempt"`
	Error         string `json:"error"`
	Output        string `json:"output"`
	Manual        bool   `json:"manual"`
}

// runsOf returns a job's rows, newest first.
func runsOf(t *testing.T, p *proc, job string) []runRow {
	t.Helper()
	out, code := p.cli(nil, "runs", job, "-o", "json")
	if code != 0 {
		t.Fatalf("pacer runs %s: exit %d\n%s", job, code, out)
	}
	var resp struct{ Runs []runRow }
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("pacer runs %s: %v\n%s", job, err, out)
	}
	return resp.Runs
}

// waitRuns polls a job's rows until pred holds, for up to timeout.
func waitRuns(t *testing.T, p *proc, job, what string, timeout time.Duration, pred func([]runRow) bool) []runRow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rows := runsOf(t, p, job)
		if pred(rows) {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out after %s waiting for %s; rows: %+v", job, timeout, what, rows)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func trigger(t *testing.T, p *proc, job string) {
	t.Helper()
	if out, code := p.cli(nil, "trigger", job); code != 0 {
		t.Fatalf("pacer trigger %s: exit %d\n%s", job, code, out)
	}
}

// Attempts through a real runner, its shell and test plugins and embedded
// etcd: what each records, and which processes live when.
func TestE2EAttempts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process (skipped with -short)")
	}
	dir := t.TempDir()
	replLog := filepath.Join(dir, "repl.log")
	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "e2e-att", cluster: "att", dataDir: filepath.Join(dir, "data"), plugins: "dir: " + builtPlugins() + ", cancel_grace: 1s"}.head(t, httpAddr) + fmt.Sprintf(`jobs:
  - id: repl
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    overlap: replace
    timeout: 1m
    params:
      shell: true
      command: |
        echo "start $PACER_RUN_ID" >> %[1]s
        echo "pid $$" >> %[1]s
        trap '' TERM
        while :; do echo "alive $PACER_RUN_ID" >> %[1]s; sleep 0.02; done
  - id: storm
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    retries: {max: 100, initial_backoff: 100ms, max_backoff: 200ms}
    params: {command: [sh, -c, "exit 1"]}
  - id: slow
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    retries: {max: 3, initial_backoff: 100ms}
    params: {command: [sh, -c, "sleep 2; exit 1"]}
  - id: nodir
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [echo, hi], dir: /nonexistent-pacer-dir}
  - id: tiny
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    timeout: 1ns
    params: {command: [echo, hi]}
  - id: deaf
    plugin: testplugin
    task: deaf
    schedule: "0 0 0 1 1 *"
    timeout: 1s
    params: {duration: 1500ms}
`, replLog)
	// The last repl run ignores SIGTERM and is still writing when the
	// test ends; killing the runner (the harness's cleanup) leaves it to
	// its plugin for a moment. It must be gone before dir is removed, or
	// its next line re-creates the file. (Cleanups run last first: this
	// one after the runner's, before dir's.)
	t.Cleanup(func() {
		b, _ := os.ReadFile(replLog)
		for _, l := range strings.Split(string(b), "\n") {
			if pid, err := strconv.Atoi(strings.TrimPrefix(l, "pid ")); err == nil && strings.HasPrefix(l, "pid ") {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				waitGone(t, pid, 10*time.Second)
			}
		}
	})
	p := startPacer(t, "e2e-att", httpAddr, cfg)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })

	// overlap: replace starts the new run only once every process of the
	// replaced one is dead (this one ignores SIGTERM: it dies at the
	// SIGKILL 2 s later). It used to start at once: the old run went on
	// writing for ~2 s after the new one started.
	t.Run("replace waits for the replaced run's processes", func(t *testing.T) {
		trigger(t, p, "repl")
		waitRuns(t, p, "repl", "the first run to start", 30*time.Second, func(rs []runRow) bool {
			b, _ := os.ReadFile(replLog)
			return strings.Contains(string(b), "alive ")
		})
		trigger(t, p, "repl")
		var first, second string
		waitRuns(t, p, "repl", "the second run to start", 60*time.Second, func([]runRow) bool {
			b, _ := os.ReadFile(replLog)
			var starts []string
			for _, l := range strings.Split(string(b), "\n") {
				if id, ok := strings.CutPrefix(l, "start "); ok {
					starts = append(starts, id)
				}
			}
			if len(starts) < 2 {
				return false
			}
			first, second = starts[0], starts[1]
			return true
		})
		b, _ := os.ReadFile(replLog)
		_, after, _ := strings.Cut(string(b), "start "+second+"\n")
		if n := strings.Count(after, "alive "+first); n > 0 {
			t.Errorf("the replaced run %s wrote %d times after the new run %s started", first, n, second)
		}
		rows := waitRuns(t, p, "repl", "the replaced run's record", 30*time.Second, func(rs []runRow) bool {
			for _, r := range rs {
				if r.RunID == first && r.State == "canceled" {
					return true
				}
			}
			return false
		})
		for _, r := range rows {
			if r.RunID == first && strings.Count(r.Error, "replaced by a newer slot") != 1 {
				t.Errorf("the replaced run's error names the cause %d times: %q", strings.Count(r.Error, "replaced by a newer slot"), r.Error)
			}
		}
	})

	// A manual trigger of a paused job runs one attempt: no retry of a
	// paused job starts. (It used to retry up to retries.max, and pausing
	// again did not stop it.)
	t.Run("a paused job's manual trigger does not retry", func(t *testing.T) {
		if out, code := p.cli(nil, "pause", "storm"); code != 0 {
			t.Fatalf("pause: exit %d\n%s", code, out)
		}
		trigger(t, p, "storm")
		rows := waitRuns(t, p, "storm", "the run's end", 30*time.Second, func(rs []runRow) bool {
			return len(rs) > 0 && rs[0].State == "skipped"
		})
		failures := 0
		for _, r := range rows {
			if r.State == "failure" {
				failures++
			}
		}
		if failures != 1 || rows[0].Reason != "paused" || rows[0].Attempt != 2 || !strings.Contains(rows[0].Error, "a manual trigger of a paused job runs one attempt") {
			t.Fatalf("rows %+v: want one failed attempt, then attempt 2 skipped as paused", rows)
		}
	})

	// While a retry runs, the run's row shows the attempt that runs. (It
	// showed attempt 1 throughout.)
	t.Run("the running row shows the attempt that runs", func(t *testing.T) {
		trigger(t, p, "slow")
		waitRuns(t, p, "slow", "attempt 2 to run", 30*time.Second, func(rs []runRow) bool {
			for _, r := range rs {
				if r.State == "running" && r.Attempt >= 2 {
					return true
				}
			}
			return false
		})
	})

	// A working directory that does not exist is named as such. (The error
	// said "fork/exec /usr/bin/echo: no such file or directory".)
	t.Run("a missing dir is blamed", func(t *testing.T) {
		trigger(t, p, "nodir")
		rows := waitRuns(t, p, "nodir", "the run's record", 30*time.Second, func(rs []runRow) bool { return len(rs) > 0 && rs[0].State != "running" && rs[0].State != "pending" })
		if want := `its working directory (dir) "/nonexistent-pacer-dir" does not exist`; rows[0].State != "failure" || !strings.Contains(rows[0].Error, want) {
			t.Fatalf("row %+v, want a failure saying %q", rows[0], want)
		}
	})

	// A timeout that passes before the task could start (here while the
	// attempt waits for its plugin) is a timeout, not a failure.
	t.Run("a timeout before the task starts is a timeout", func(t *testing.T) {
		trigger(t, p, "tiny")
		rows := waitRuns(t, p, "tiny", "the run's record", 30*time.Second, func(rs []runRow) bool { return len(rs) > 0 && rs[0].State != "running" && rs[0].State != "pending" })
		if rows[0].State != "timeout" {
			t.Fatalf("row %+v, want timeout", rows[0])
		}
	})

	// A task that ignores its cancellation and reports success after its
	// timeout (within the cancel grace) timed out. (It was recorded
	// success.)
	t.Run("success after the timeout is a timeout", func(t *testing.T) {
		trigger(t, p, "deaf")
		rows := waitRuns(t, p, "deaf", "the run's record", 30*time.Second, func(rs []runRow) bool { return len(rs) > 0 && rs[0].State != "running" && rs[0].State != "pending" })
		if r := rows[0]; r.State != "timeout" || !strings.Contains(r.Error, "timed out after 1s") || !strings.Contains(r.Output, "deaf to cancellation") {
			t.Fatalf("row %+v, want timeout, with the task's output", r)
		}
	})
}
