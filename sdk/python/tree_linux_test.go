//go:build linux

package python_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// A Python plugin's task children end with their attempt through the
// runner's plugin host, as the Go SDK's proctree gives Go plugins: a
// command that exits leaves nothing behind; a plugin killed with SIGKILL
// mid-run leaves nothing alive when the call returns (its spawner ends every
// tree when the plugin goes, and the host, a child subreaper, kills and
// waits for whatever comes to it); processes a plugin cannot confirm dead
// reach the host's result.
//
// Not parallel: the subreaper is process-wide, and a Subreaper host takes
// every child of the test binary it did not start for an orphan (the other
// tests' Python processes are started after this one, in parallel).
func TestPythonPluginTreesThroughTheHost(t *testing.T) {
	Python(t)
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	plugin, err := filepath.Abs(filepath.Join("tests", "plugins", "testplugin.py"))
	if err != nil {
		t.Fatal(err)
	}
	h := pluginhost.New(pluginhost.Options{Paths: map[string]string{"testplugin": plugin}, Subreaper: true})
	t.Cleanup(func() { h.Close() })
	call := func(run string, params map[string]any) pluginhost.Call {
		return pluginhost.Call{Plugin: "testplugin", Task: "tree", Params: params,
			Info: pluginhost.RunInfo{JobID: "j", RunID: run, CorrelationID: "c-" + run, Attempt: 1, Node: "n",
				ScheduledTime: time.Now()}}
	}

	t.Run("the command exits", func(t *testing.T) {
		dir := t.TempDir()
		res, err := h.Run(context.Background(), call("exits", map[string]any{"dir": dir, "hold": 30, "exit": 3}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Data["returncode"] != float64(3) || res.Data["confirmed"] != true || res.ProcessesLeft != "" {
			t.Errorf("result %+v; want exit status 3, the tree confirmed gone", res)
		}
		if left, _ := res.Data["leftovers"].([]any); len(left) < 3 {
			t.Errorf("leftovers %v; want the child, the grandchild and the daemon", res.Data["leftovers"])
		}
		noneAlive(t, treePIDs(t, dir))
	})

	t.Run("the plugin is killed", func(t *testing.T) {
		dir := t.TempDir()
		type ran struct {
			res *pluginhost.Result
			err error
		}
		done := make(chan ran, 1)
		go func() {
			r, err := h.Run(context.Background(), call("killed", map[string]any{"dir": dir, "hold": 30, "mode": "wait"}))
			done <- ran{r, err}
		}()
		pids := treePIDs(t, dir)
		var pid int
		for _, st := range h.Status() {
			if st.Name == "testplugin" {
				pid = st.PID
			}
		}
		if pid == 0 {
			t.Fatal("testplugin not up")
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var r ran
		select {
		case r = <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("the call did not return within 60 s of the kill")
		}
		// The spawner kills every keeper and tree when the plugin's end of
		// its socket closes, and the host kills whatever reaches it: either
		// may be first, so the error may or may not name processes it killed.
		if !errors.Is(r.err, pluginhost.ErrPluginCrashed) {
			t.Errorf("err = %v; want a crash", r.err)
		}
		noneAlive(t, pids)
	})

	t.Run("processes not confirmed dead", func(t *testing.T) {
		dir := t.TempDir()
		res, err := h.Run(context.Background(), call("alive", map[string]any{"dir": dir, "hold": 30, "kill_timeout": 0}))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.ProcessesLeft, "could not be confirmed dead") {
			t.Errorf("ProcessesLeft %q; want the plugin's report", res.ProcessesLeft)
		}
	})
}

// treePIDs waits until the tree task's command, child, grandchild and
// daemon have written their pids to dir/pids.
func treePIDs(t *testing.T, dir string) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "pids"))
		if f := strings.Fields(string(b)); len(f) >= 4 && strings.HasSuffix(string(b), "\n") {
			pids := make([]int, len(f))
			for i, s := range f {
				pids[i], _ = strconv.Atoi(s)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tree did not start: pids %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noneAlive fails for every pid that still exists (alive, or a zombie not
// yet reaped), and kills it.
func noneAlive(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			t.Errorf("process %d exists when the call returned: %s", pid, st)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// A runner frozen alone (SIGSTOP, a debugger) after it sent a run cannot
// cancel it when its lease runs out; a Python plugin does, as a Go one
// does (runner/pluginhost
// TestRunStreamRunEndsWithItsProcessesWhenTheLeaseIsNotRenewed): the host
// calls it over RunStream, the run carries the lease, nothing renews it
// (the renewal period is an hour: the host "freezes" after the run's
// message), and the run ends at the lease's deadline with the lease named,
// every process of its ctx.run command's tree (a setsid grandchild and a
// daemon included) dead, long before its own end. Per run, as Python
// plugins were called before, the run goes on for its 300 s.
func TestPythonPluginRunEndsWithItsTreeWhenTheLeaseIsNotRenewed(t *testing.T) {
	t.Parallel()
	Python(t)
	plugin, err := filepath.Abs(filepath.Join("tests", "plugins", "testplugin.py"))
	if err != nil {
		t.Fatal(err)
	}
	h := pluginhost.New(pluginhost.Options{Paths: map[string]string{"testplugin": plugin}, CancelGrace: 30 * time.Second})
	t.Cleanup(func() { h.Close() })
	// Long enough for Python to start the whole tree before it ends, on a
	// loaded machine too (with a second, the full suite once ended the run
	// after two of the tree's four processes had started).
	const lease = 5 * time.Second
	var deadline atomic.Pointer[time.Time]
	h.SetLease(func() (time.Time, bool) {
		if d := deadline.Load(); d != nil {
			return *d, true
		}
		return time.Time{}, false
	}, time.Hour)
	// The plugin is up first (the lease must not pass while Python
	// starts): no lease yet, so none is sent.
	if res, err := h.Run(context.Background(), pluginhost.Call{Plugin: "testplugin", Task: "echo", Params: map[string]any{"message": "up"},
		Info: pluginhost.RunInfo{JobID: "j", RunID: "up", CorrelationID: "c-up", Attempt: 1, Node: "n", ScheduledTime: time.Now()}}); err != nil || res.Output != "up" {
		t.Fatalf("the plugin's first run: %+v, %v", res, err)
	}
	d := time.Now().Add(lease)
	deadline.Store(&d)
	dir := t.TempDir()
	type outcome struct {
		res *pluginhost.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := h.Run(context.Background(), pluginhost.Call{Plugin: "testplugin", Task: "tree",
			Params: map[string]any{"dir": dir, "hold": 300, "mode": "wait"},
			Info: pluginhost.RunInfo{JobID: "j", RunID: "frozen", CorrelationID: "c-frozen", Attempt: 1, Node: "n",
				ScheduledTime: time.Now()}})
		done <- outcome{res, err}
	}()
	pids := treePIDs(t, dir)
	var out outcome
	select {
	case out = <-done:
	case <-time.After(20 * time.Second):
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("the run still ran 20s after a lease of %s that was not renewed (processes %v; the plugin called %s)", lease, pids, transport(h))
	}
	t.Logf("run ended %s after the lease's deadline: %+v, %v", time.Since(d).Round(time.Millisecond), out.res, out.err)
	if out.err != nil {
		t.Fatal(out.err)
	}
	if reason, _ := out.res.Data["reason"].(string); !strings.Contains(reason, "has not renewed its lease") || out.res.Data["stopped"] != true {
		t.Fatalf("run ended with %+v; want its command stopped for the lease", out.res)
	}
	if out.res.Data["confirmed"] != true || out.res.ProcessesLeft != "" {
		t.Errorf("result %+v; want the tree confirmed gone", out.res)
	}
	noneAlive(t, pids)
	if tr := transport(h); tr != "run_stream" {
		t.Fatalf("the Python plugin was called %s; want run_stream", tr)
	}
}

// transport is how h calls testplugin (pluginhost.Status.Transport).
func transport(h *pluginhost.Host) string {
	for _, st := range h.Status() {
		if st.Name == "testplugin" {
			return st.Transport
		}
	}
	return "(not running)"
}
