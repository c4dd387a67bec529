//go:build linux

package pluginhost_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// hangingPlugin returns a "plugin" that never hands shake while processes
// it started hold its stdout: one in its process group, one in a session
// of its own. Their pids go to pidFile.
func hangingPlugin(t *testing.T, pidFile string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hang")
	script := "#!/bin/sh\n: > " + pidFile + "\nsleep 300 &\necho $! >> " + pidFile + "\nsetsid sleep 300 &\necho $! >> " + pidFile + "\nwait\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// runWithin runs c on h and fails the test if it has not returned within
// limit (a hang, not a measurement: limit is far above what it takes).
func runWithin(t *testing.T, h *pluginhost.Host, c pluginhost.Call, limit time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := h.Run(context.Background(), c); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("Run of plugin %q has not returned after %s", c.Plugin, limit)
		return nil
	}
}

// A plugin that never hands shake fails its start after
// plugins.start_timeout, saying so, and no process it started outlives the
// failed start, even one that holds its stdout. (go-plugin's Kill waited for
// the plugin's stdout to close, which the plugin's child held: the call
// hung as long as the child lived, and the child outlived it.)
func TestStartTimeoutEndsAPluginThatNeverHandshakesAndItsChildren(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pids")
	b := setup(t, pluginhost.Options{Paths: map[string]string{"hang": hangingPlugin(t, pidFile)}, StartTimeout: time.Second})
	c := call("echo", nil)
	c.Plugin = "hang"
	err := runWithin(t, b.host, c, time.Minute)
	if err == nil || !strings.Contains(err.Error(), `start plugin "hang"`) || !strings.Contains(err.Error(), "no handshake within plugins.start_timeout (1s)") {
		t.Fatalf("err = %v, want the plugin, the timeout and its length", err)
	}
	for _, pid := range pidsIn(t, pidFile, 2) {
		if alive(pid) {
			t.Errorf("process %d of the plugin that failed to start is alive after the start failed", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	st, _ := statusOf(b.host, "hang")
	if st.State != "down" || st.Cause != pluginhost.CauseHandshake || !strings.Contains(st.LastError, "start_timeout") {
		t.Fatalf("status %+v: want down, cause handshake, the timeout", st)
	}
}

// While one plugin is slow to start, the host serves everything else: its
// status, and runs of other plugins (which the runner's subreaper sweep
// after each run used to hold until the start ended: the start held the
// lock sweeps take).
//
// Not parallel: Subreaper (see orphans_test.go).
func TestASlowPluginStartBlocksNothingElse(t *testing.T) {
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	pidFile := filepath.Join(t.TempDir(), "pids")
	b := setup(t, pluginhost.Options{Subreaper: true, Paths: map[string]string{"hang": hangingPlugin(t, pidFile)}, StartTimeout: 2 * time.Minute})
	c := call("echo", nil)
	c.Plugin = "hang"
	hung := make(chan error, 1)
	go func() { _, err := b.host.Run(context.Background(), c); hung <- err }()
	pidsIn(t, pidFile, 2) // the start is in progress

	status := make(chan []pluginhost.Status, 1)
	go func() { status <- b.host.Status() }()
	select {
	case <-status:
	case err := <-hung:
		t.Fatalf("the slow start ended (%v) before Status answered", err)
	}
	if err := runWithin(t, b.host, shellCall("echo hi"), time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-hung:
		t.Fatalf("the slow start ended (%v) before the other plugin's run did: it waited for it", err)
	default:
	}
	b.host.Close() // ends the slow start
	if err := <-hung; err == nil {
		t.Fatal("the hanging plugin's run succeeded")
	}
	for _, pid := range pidsIn(t, pidFile, 2) {
		waitGone(t, pid)
	}
}

// A failed start ends even when a daemon the plugin started (double fork:
// out of the plugin's tree before the kill, so not killed with it) holds
// the plugin's stdout: the host stops reading it. (go-plugin waited for the
// pipe to close, as long as the daemon lived.)
func TestFailedStartEndsWhileAnEscapedDaemonHoldsStdout(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pids")
	path := filepath.Join(t.TempDir(), "daemonizing")
	script := "#!/bin/sh\n(setsid sh -c 'echo $$ > " + pidFile + "; exec sleep 300' &)\nexec sleep 300\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	b := setup(t, pluginhost.Options{Paths: map[string]string{"d": path}, StartTimeout: time.Second})
	c := call("echo", nil)
	c.Plugin = "d"
	err := runWithin(t, b.host, c, time.Minute)
	daemon := pidsIn(t, pidFile, 1)[0]
	t.Cleanup(func() { _ = syscall.Kill(daemon, syscall.SIGKILL) })
	if err == nil || !strings.Contains(err.Error(), "no handshake within plugins.start_timeout (1s)") {
		t.Fatalf("err = %v, want the start timeout", err)
	}
}

// A run's deadline bounds its wait for its plugin to start: the run ends
// at it, saying what it waited for, and the start goes on for the next
// run, which gets the process it started. (Attack 14, K12: a run with
// timeout 2s waited 7.4 s for a slow plugin start, holding its job.)
func TestRunDeadlineBoundsItsWaitForThePluginToStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	path := filepath.Join(dir, "testplugin")
	script := "#!/bin/sh\nwhile [ ! -e " + gate + " ]; do sleep 0.02; done\nexec " + filepath.Join(pluginDir, "testplugin") + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	b := setup(t, pluginhost.Options{Paths: map[string]string{"testplugin": path}, StartTimeout: time.Minute})
	ctx, cancel := context.WithTimeoutCause(context.Background(), 200*time.Millisecond, errors.New("timed out after 200ms"))
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := b.host.Run(ctx, call("echo", map[string]any{"message": "hi"})); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), `waiting for plugin "testplugin" to start: timed out after 200ms`) {
			t.Fatalf("err = %v, want the wait for the start and the run's timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the run still waits for its plugin to start, 30 s after its deadline passed")
	}
	if st, _ := statusOf(b.host, "testplugin"); st.State == "up" || st.PID != 0 {
		t.Fatalf("status %+v while the start waits at the gate", st)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "hi"}))
	if err != nil || res.TaskError != "" {
		t.Fatalf("the next run: %+v, %v", res, err)
	}
	if st, _ := statusOf(b.host, "testplugin"); st.State != "up" || st.Restarts != 0 {
		t.Fatalf("status %+v, want up, started once", st)
	}
}
