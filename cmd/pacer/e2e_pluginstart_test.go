//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/syncbuf"
)

// A plugin that never hands shake while its child holds its stdout: pacer
// validate and pacer run refuse the config (exit 2) after
// plugins.start_timeout, naming the plugin, what timed out and after how
// long, and no process the plugin started is left. (pacer run hung for 60 s
// and exited 1 with "context deadline exceeded", leaving the child under
// PID 1; pacer validate took as long as the child slept.)
func TestE2EPluginThatNeverHandshakesIsRefusedAndLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids")
	plugin := filepath.Join(dir, "hang.sh")
	must(os.WriteFile(plugin, []byte("#!/bin/sh\nsleep 300 &\necho $! >> "+pidFile+"\nwait\n"), 0o755))
	path := filepath.Join(dir, "hang.yaml")
	must(os.WriteFile(path, []byte(fmt.Sprintf(`cluster: {data_dir: %s, etcd: {embedded: {client_listen: %s, peer_listen: %s}}}
http: {listen: '127.0.0.1:0'}
plugins: {start_timeout: 2s, paths: {hang: %s}}
jobs:
  - {id: stuck, plugin: hang, task: any, schedule: "@every 1h"}
`, filepath.Join(dir, "data"), freeAddr(t), freeAddr(t), plugin)), 0o644))
	for _, cmd := range []string{"validate", "run"} {
		// A deadline far above the 2 s start timeout: should the bound
		// regress, the test fails instead of hanging.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "pacer"), cmd, "--config", path).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || timedOut ||
			!strings.Contains(string(out), `start plugin \"hang\"`) && !strings.Contains(string(out), `start plugin "hang"`) ||
			!strings.Contains(string(out), "no handshake within plugins.start_timeout (2s)") {
			t.Errorf("pacer %s: %v (timed out: %v)\n%s", cmd, err, timedOut, out)
		}
		b, _ := os.ReadFile(pidFile)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			deadline := time.Now().Add(10 * time.Second)
			for procAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if procAlive(pid) {
				t.Errorf("pacer %s: process %d the plugin started outlived it", cmd, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// procAlive reports whether pid runs (exists and is no zombie).
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// SIGTERM stops "pacer plugins check" at once: exit 1, "checks
// interrupted", and the plugin being checked is killed with what it
// started. (The check ran on to its end, minutes with a plugin that never
// hands shake.)
func TestE2EPluginsCheckStopsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process (skipped with -short)")
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids")
	plugin := filepath.Join(dir, "hang.sh")
	must(os.WriteFile(plugin, []byte("#!/bin/sh\nsleep 300 &\necho $! >> "+pidFile+"\nwait\n"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pacer"), "plugins", "check", plugin, "--start-timeout", "10m")
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(cmd.Start())
	for {
		if b, _ := os.ReadFile(pidFile); len(b) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the plugin never started\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	must(cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || ctx.Err() != nil || !strings.Contains(out.String(), "checks interrupted") {
		t.Fatalf("pacer plugins check after SIGTERM: %v (timed out: %v)\n%s", err, ctx.Err() != nil, out.String())
	}
	b, _ := os.ReadFile(pidFile)
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		deadline := time.Now().Add(10 * time.Second)
		for procAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if procAlive(pid) {
			t.Errorf("process %d the checked plugin started outlived the check", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
