//go:build linux

package pluginhost_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// When a plugin process is killed mid-run, what its task started (the
// command's children, a setsid grandchild, a double-forked daemon) is
// re-parented to the host's process, a subreaper, and is dead (and reaped)
// before the call that saw the plugin die returns: a retry cannot overlap
// it. Without the sweep they live on (the retry's side effects and theirs
// interleave).
//
// Not parallel: the subreaper is process-wide, and a Subreaper host takes
// every child of the test binary it did not start for an orphan.
func TestDeadPluginsProcessesDieBeforeTheCallReturns(t *testing.T) {
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	b := setup(t, pluginhost.Options{Subreaper: true})
	pidFile := filepath.Join(t.TempDir(), "pids")
	script := `: > ` + pidFile + `
sh -c 'echo $$ >> ` + pidFile + `; exec sleep 300' &
setsid sh -c 'echo $$ >> ` + pidFile + `; exec sleep 300' &
(setsid sh -c 'echo $$ >> ` + pidFile + `; sleep 300' &)
sleep 300`
	type ran struct {
		res *pluginhost.Result
		err error
	}
	done := make(chan ran, 1)
	go func() { r, err := b.host.Run(context.Background(), shellCall(script)); done <- ran{r, err} }()
	pids := pidsIn(t, pidFile, 3)
	var plugin int
	for _, st := range b.host.Status() {
		if st.Name == "shell" {
			plugin = st.PID
		}
	}
	if plugin == 0 {
		t.Fatal("shell plugin not up")
	}
	if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if !errors.Is(r.err, pluginhost.ErrPluginCrashed) || !strings.Contains(r.err.Error(), "processes it left behind") {
		t.Fatalf("err = %v, want a crash that names the processes it killed", r.err)
	}
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
			st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			t.Errorf("process %d of the crashed run exists when the call returned: %s", pid, st)
		}
	}
}

// A plugin that is no subreaper (testplugin starts its commands with plain
// os/exec) loses a daemon its run leaves to the host's process. When the run
// ends, the daemon is dead before the call returns, whether or not it
// carries the run's ID (with it, it was spared while the run went on), and
// the run's output says so. Before, it lived on until some child of the
// host exited.
func TestRunsOrphansDieBeforeTheCallReturns(t *testing.T) {
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	b := setup(t, pluginhost.Options{Subreaper: true})
	for _, name := range []string{"with its run ID", "anonymous"} {
		path := filepath.Join(t.TempDir(), "pid")
		c := call("daemon", map[string]any{"path": path, "message": name})
		c.Info.RunID = "run-" + strings.ReplaceAll(name, " ", "-")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := b.host.Run(ctx, c)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pid := pidsIn(t, path, 1)[0]
		if alive(pid) {
			t.Errorf("%s: the daemon %d the run left is alive when the call returned", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if want := "killed: pids " + strconv.Itoa(pid); !strings.Contains(res.Output, want) || res.ProcessesLeft != "" {
			t.Errorf("%s: output %q (processes left %q), want a note with %q", name, res.Output, res.ProcessesLeft, want)
		}
	}
}

// Runs that end together share the look for what they left
// (orphanedSince); each call still returns only once its run's daemon is
// dead. And a run's daemon is spared while its run goes on, even when
// another run's sweep finds it in the middle of an exec, when its
// environment reads empty: before runOf read it again, one run in two of
// this test (4 of 8) lost its daemon to another's sweep and waited out its
// deadline.
func TestOrphansOfRunsEndingTogetherDieBeforeTheirCallsReturn(t *testing.T) {
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	const n = 10
	b := setup(t, pluginhost.Options{Subreaper: true, MaxConcurrency: n})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			path := filepath.Join(t.TempDir(), "pid")
			c := call("daemon", map[string]any{"path": path, "message": fmt.Sprint("run ", i)})
			c.Info.RunID = fmt.Sprint("run-together-", i)
			// A run whose daemon another run's sweep killed waits out this
			// deadline: generous, since ten runs with daemons and sweeps
			// take seconds on a loaded machine, not minutes.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := b.host.Run(ctx, c)
			if err != nil {
				errs <- fmt.Errorf("run %d: %w", i, err)
				return
			}
			if res.TaskError != "" {
				errs <- fmt.Errorf("run %d: task failed: %s (output %q)", i, res.TaskError, res.Output)
				return
			}
			pid, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(res.Output, "\n", 2)[0], "daemon "))
			if err != nil {
				errs <- fmt.Errorf("run %d: output %q names no daemon", i, res.Output)
				return
			}
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				errs <- fmt.Errorf("run %d: its daemon %d is alive when the call returned", i, pid)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
