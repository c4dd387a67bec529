//go:build linux

package plugincheck_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/plugincheck"
)

// hangingPlugin writes a "plugin" that never hands shake while processes
// it starts hold its stdout: one in its group, one in a session of its
// own. Each start appends their pids to pidFile.
func hangingPlugin(t *testing.T, pidFile string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hang")
	script := "#!/bin/sh\nsleep 300 &\necho $! >> " + pidFile + "\nsetsid sleep 300 &\necho $! >> " + pidFile + "\nwait\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkWithin runs the checks and fails the test if they have not ended
// within limit (a hang, not a measurement: limit is far above what they
// take).
func checkWithin(t *testing.T, ctx context.Context, path string, opts plugincheck.Options, limit time.Duration) *plugincheck.Report {
	t.Helper()
	done := make(chan *plugincheck.Report, 1)
	go func() { done <- plugincheck.Run(ctx, path, opts) }()
	select {
	case rep := <-done:
		for _, r := range rep.Results {
			t.Logf("%-4s %-14s %-8s %s", r.Status, r.Check, r.Task, r.Reason)
		}
		return rep
	case <-time.After(limit):
		t.Fatalf("the checks have not ended after %s", limit)
		return nil
	}
}

func pidsOf(t *testing.T, pidFile string) []int {
	t.Helper()
	b, _ := os.ReadFile(pidFile)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// aliveProc reports whether pid runs (exists and is no zombie).
func aliveProc(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func noneAlive(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		// Killed, it may take a moment to be reaped by init.
		deadline := time.Now().Add(10 * time.Second)
		for aliveProc(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if aliveProc(pid) {
			t.Errorf("process %d the plugin started is alive after the checks ended", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// A plugin that never hands shake while its children hold its stdout fails
// the handshake check after --start-timeout, and its children die with it.
// (Each start used to wait for the children to close stdout: the checks took
// as long as they slept, several times over, and left them running.)
func TestCheckOfAPluginThatNeverHandshakesEndsAndKillsItsChildren(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pids")
	rep := checkWithin(t, context.Background(), hangingPlugin(t, pidFile), plugincheck.Options{StartTimeout: time.Second}, 2*time.Minute)
	if r := rep.Result(plugincheck.CheckHandshake, ""); r == nil || r.Status != plugincheck.Fail {
		t.Fatalf("handshake: %+v, want a failure", r)
	}
	pids := pidsOf(t, pidFile)
	if len(pids) < 2 {
		t.Fatalf("pids %v: the plugin did not start", pids)
	}
	noneAlive(t, pids)
}

// Cancelling the checks (SIGTERM in "pacer plugins check") ends them: the
// plugin being started is killed with its children, and the checks not done
// are skipped as interrupted. (They used to run on to the end.)
func TestInterruptedCheckEndsAndKillsThePlugin(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pids")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Once the plugin is being started, interrupt.
		for len(pidsOf(t, pidFile)) < 2 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	rep := checkWithin(t, ctx, hangingPlugin(t, pidFile), plugincheck.Options{StartTimeout: 10 * time.Minute,
		Only: []string{plugincheck.CheckHandshake, plugincheck.CheckSIGTERM}}, 2*time.Minute)
	if r := rep.Result(plugincheck.CheckSIGTERM, ""); r == nil || r.Status != plugincheck.Skip || !strings.Contains(r.Reason, "interrupted") {
		t.Fatalf("sigterm check: %+v, want skipped as interrupted", r)
	}
	noneAlive(t, pidsOf(t, pidFile))
}
