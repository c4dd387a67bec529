//go:build linux

package python_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
