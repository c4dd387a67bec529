package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pausableReader reads r until paused: a Read then waits until resumed.
type pausableReader struct {
	r      io.Reader
	mu     sync.Mutex
	paused chan struct{} // nil while reading
}

func (g *pausableReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	c := g.paused
	g.mu.Unlock()
	if c != nil {
		<-c
	}
	return g.r.Read(p)
}

func (g *pausableReader) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused == nil {
		g.paused = make(chan struct{})
	}
}

func (g *pausableReader) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused != nil {
		close(g.paused)
		g.paused = nil
	}
}

// Attack 10, F11: a runner whose log output blocks (its stderr a pipe
// nobody reads) runs its jobs on: while the test reads nothing, run records
// keep appearing; once it reads again, a line says how many lines were
// dropped, and pacer_log_lines_dropped_total counts them. Every line that
// arrives is whole; stopped while its output is blocked again, it exits
// cleanly. Before the fix the runner's runs waited on their log
// lines: no record appeared while the pipe was full.
func TestE2EBlockedLogOutputHoldsUpNoRun(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	httpAddr := freeAddr(t)
	// The smallest queue (64 KiB), which the chatty job's hundred lines a
	// second (some 40 KiB) fill in two seconds.
	cfg := runnerConfig{node: "blocked-log", cluster: "blocked-log"}.head(t, httpAddr) + `
observability: {log: {queue_bytes: 65536}}
jobs:
  - id: tick
    plugin: shell
    task: exec
    schedule: "@every 1s"
    params: {command: "true"}
  - id: chatty
    plugin: shell
    task: exec
    schedule: "@every 1s"
    params:
      command: 'for i in $(seq 100); do echo "line $i of a job that says a lot, to fill the log output quickly"; done'
      shell: true
`
	path := filepath.Join(t.TempDir(), "blocked-log.yaml")
	must(os.WriteFile(path, []byte(cfg), 0o644))

	// The runner's stderr: a pipe of one page, which a few lines fill.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() }) // after the harness read it to the end
	const pipeSize = 4096
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, pipeSize); err != nil {
		t.Fatal(err)
	}
	unread := func() int {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	cmd := exec.Command(filepath.Join(binDir, "pacer"), "run", "--config", path)
	cmd.Stderr = w
	gate := &pausableReader{r: r}
	p := startReading(t, "blocked-log", httpAddr, path, cmd, gate)
	w.Close()
	t.Cleanup(gate.resume) // before the harness kills it and reads to the end

	client := &http.Client{Timeout: 5 * time.Second}
	successes := func() int {
		t.Helper()
		resp, err := client.Get(p.httpURL + "/api/v1/runs?limit=1000&job=tick")
		if err != nil {
			t.Fatalf("GET /api/v1/runs: %v", err)
		}
		defer resp.Body.Close()
		var out struct{ Runs []apiRecord }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("GET /api/v1/runs: %v", err)
		}
		n := 0
		for _, rec := range out.Runs {
			if rec.State == "success" {
				n++
			}
		}
		return n
	}
	p.waitLogs("two runs of tick", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "tick" })) >= 2
	})

	gate.pause()
	// Blocked: a write has waited half a second. (Not "the pipe is
	// full": the queue writes its lines in batches, and a batch of up to
	// 4 KiB waits whole for room, so the pipe can stay half empty.)
	deadline := time.Now().Add(30 * time.Second)
	for p.metric("pacer_log_output_blocked_seconds") < 0.5 {
		if time.Now().After(deadline) {
			t.Fatalf("the log output is not blocked 30 s after the test stopped reading: %d bytes unread", unread())
		}
		time.Sleep(20 * time.Millisecond)
	}
	full := successes()
	t.Logf("log output blocked (%d bytes unread); tick has %d successful runs", unread(), full)
	deadline = time.Now().Add(30 * time.Second)
	for successes() < full+5 {
		if time.Now().After(deadline) {
			t.Fatalf("tick ran %d times in 30 s while the log output was blocked, want 5", successes()-full)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := p.metric("pacer_log_output_blocked_seconds"); v <= 0 {
		t.Errorf("pacer_log_output_blocked_seconds = %v while the output is blocked, want > 0", v)
	}
	if v := p.metric("pacer_log_lines_dropped_total"); v <= 0 {
		t.Errorf("pacer_log_lines_dropped_total = %v while the output is blocked, want > 0", v)
	}

	gate.resume()
	lines := p.waitLogs("the dropped-lines line", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("log lines dropped: output blocked"))) > 0
	})
	notice := match(lines, msgIs("log lines dropped: output blocked"))[0]
	if n, _ := notice["dropped_lines"].(float64); n < 1 || notice.str("level") != "WARN" || notice.str("node") != "blocked-log" ||
		notice.str("dropped_from") == "" || notice.str("dropped_until") == "" {
		t.Fatalf("dropped-lines line lacks its fields: %v", notice)
	}
	if v := p.metric("pacer_log_lines_dropped_total"); v < notice["dropped_lines"].(float64) {
		t.Fatalf("pacer_log_lines_dropped_total = %v, below the %v lines the log said it dropped", v, notice["dropped_lines"])
	}
	if v := p.metric("pacer_log_output_blocked_seconds"); v != 0 {
		t.Fatalf("pacer_log_output_blocked_seconds = %v after the output resumed, want 0", v)
	}
	// Every line that arrived is whole.
	p.mu.Lock()
	raw := append([]string(nil), p.raw...)
	p.mu.Unlock()
	for _, l := range raw {
		if !json.Valid([]byte(l)) {
			t.Fatalf("torn or foreign log line: %q", l)
		}
	}
	t.Logf("dropped-lines line: %v; %d lines in all", notice, len(raw))

	// Stopped while its output is blocked, it gives up on the log after
	// 2 s and exits, cleanly.
	gate.pause()
	dropped := p.metric("pacer_log_lines_dropped_total")
	deadline = time.Now().Add(30 * time.Second)
	for p.metric("pacer_log_lines_dropped_total") == dropped {
		if time.Now().After(deadline) {
			t.Fatal("no line dropped within 30 s of blocking the log output again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopped := time.Now()
	p.signal(syscall.SIGTERM)
	waitGone(t, p.cmd.Process.Pid, 30*time.Second)
	t.Logf("exited %s after SIGTERM, its log output blocked", time.Since(stopped).Round(10*time.Millisecond))
	gate.resume()
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM with the log output blocked, want 0", code)
	}
}

// Attack 16, G4: a runner whose log reader goes away (a log shipper that
// exits, `pacer run 2>&1 | logger` whose logger dies) runs on: its writes
// to the broken pipe fail and are counted as dropped lines. Before the fix
// Go's default for a write to a broken fd 2 ended the process with SIGPIPE
// (exit 141 in a shell), a crash with no drain and no hand-over.
func TestE2EClosedLogOutputIsNotFatal(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "closed-log", cluster: "closed-log"}.head(t, httpAddr) + `
jobs:
  - id: tick
    plugin: shell
    task: exec
    schedule: "@every 1s"
    params: {command: "true"}
`
	path := filepath.Join(t.TempDir(), "closed-log.yaml")
	must(os.WriteFile(path, []byte(cfg), 0o644))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "pacer"), "run", "--config", path)
	cmd.Stderr = w
	p := startReading(t, "closed-log", httpAddr, path, cmd, r)
	w.Close()
	p.waitLogs("a run of tick", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "tick" })) >= 1
	})

	// The reader goes away: the runner's next log line meets a broken pipe.
	r.Close()
	runs := func() int {
		t.Helper()
		resp, err := http.Get(p.httpURL + "/api/v1/runs?limit=1000&job=tick")
		if err != nil {
			select { // gone, or not answering?
			case <-p.exited:
				t.Fatalf("the runner exited after its log reader went away: %v", p.exitErr)
			case <-time.After(5 * time.Second):
				t.Fatalf("GET /api/v1/runs: %v", err)
			}
		}
		defer resp.Body.Close()
		var out struct{ Runs []apiRecord }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("GET /api/v1/runs: %v", err)
		}
		return len(out.Runs)
	}
	closed := runs()
	deadline := time.Now().Add(30 * time.Second)
	for runs() < closed+3 || p.metric("pacer_log_lines_dropped_total") <= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("30 s after its log reader went away: %d more runs of tick (want 3), pacer_log_lines_dropped_total %v (want > 0)",
				runs()-closed, p.metric("pacer_log_lines_dropped_total"))
		}
		select {
		case <-p.exited:
			t.Fatalf("the runner exited after its log reader went away: %v", p.exitErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("%d runs of tick after the log reader went away, %v lines dropped", runs()-closed, p.metric("pacer_log_lines_dropped_total"))
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM with its log reader gone (%v), want 0", code, p.exitErr)
	}
}
