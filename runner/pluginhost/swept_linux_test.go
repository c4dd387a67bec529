package pluginhost

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacerun/pacer/sdk/proctree"
)

// The processes a sweep killed are reported to the call of the run they
// belonged to, whoever asks first: the health probe, which also sees a
// plugin die, takes only those of no run. Scenario 18 once recorded a
// killed plugin's timed-out run without naming its processes: the probe's
// report (which nobody reads) had taken them.
func TestSweptProcessesAreReportedToTheirRun(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	h := New(Options{TreeTimeout: 10 * time.Second}) // no sweeper of its own: this test sweeps
	defer h.Close()
	h.opts.Subreaper = true

	// orphan leaves background behind (a shell command line), with env
	// set, and returns its pid.
	orphan := func(background string, env ...string) int {
		cmd := exec.Command("sh", "-c", background+" </dev/null >/dev/null 2>&1 & echo $!")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
		return pid
	}
	a, b, none := orphan("sleep 60", runIDEnv+"=run-a"), orphan("sleep 60", runIDEnv+"=run-b"), orphan("sleep 60")
	// An orphan of no run (a dead plugin's command that died of Pdeathsig
	// reads so: its environment is gone) whose child carries run-b's ID:
	// the child is run-b's, not put down to no run with its parent.
	parent := orphan("sh -c 'env " + runIDEnv + "=run-b sleep 60 & wait'")
	var child int
	for deadline := time.Now().Add(10 * time.Second); child == 0; time.Sleep(5 * time.Millisecond) {
		if kids, _ := proctree.Children(parent); len(kids) == 1 {
			if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(kids[0].PID) + "/cmdline"); strings.HasPrefix(string(cmdline), "sleep\x00") {
				child = kids[0].PID
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the orphan's child did not start sleeping")
		}
	}
	t.Cleanup(func() { _ = unix.Kill(child, unix.SIGKILL) })

	killed, err := h.sweep(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{a, b, none, parent, child} {
		if !slices.Contains(killed, pid) {
			t.Fatalf("the sweep killed %v, not %d (orphans %d, %d, %d)", killed, pid, a, b, none)
		}
	}
	if got := h.sweptRecently(""); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values([]int{none, parent}))) {
		t.Errorf("the probe's report: %v, want only the orphans of no run, %d and %d", got, none, parent)
	}
	if got := h.sweptRecently("run-a"); !slices.Equal(got, []int{a}) {
		t.Errorf("run-a's report: %v, want %d", got, a)
	}
	if got := h.sweptRecently("run-b"); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values([]int{b, child}))) {
		t.Errorf("run-b's report: %v, want %d and %d (the child of an orphan of no run)", got, b, child)
	}
	if got := h.sweptRecently("run-b"); len(got) != 0 {
		t.Errorf("run-b's processes reported twice: %v", got)
	}
}
