package pluginhost

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// childPIDs sees this process's children, whichever thread started them.
func TestChildPIDs(t *testing.T) {
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	pids, err := childPIDs(false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if !slices.Contains(pids, c.Process.Pid) {
			t.Errorf("child %d not in %v", c.Process.Pid, pids)
		}
	}
}

// An orphan goes to the subreaper's main thread, whichever thread started
// the process that left it: the per-run look (childPIDs(true)) relies on it.
// The thread that started it lives on until the check is done, so that the
// orphan is not the main thread's only because that thread ended.
func TestOrphansAreAdoptedByTheMainThread(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	// A look before the orphan exists: the looks below read the same
	// open file again, and must see the list as it is then.
	if _, err := childPIDs(true); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	// Started from a thread of its own, not the main one, the shell leaves
	// a sleep behind and exits: the sleep is an orphan.
	type started struct {
		tid int
		err error
	}
	done := make(chan started, 1)
	checked := make(chan struct{})
	defer close(checked)
	leave := func() {
		runtime.LockOSThread() // this thread ends with the goroutine
		err := exec.Command("sh", "-c", "sleep 60 & echo $! > "+pidFile).Run()
		done <- started{unix.Gettid(), err}
		<-checked
	}
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != os.Getpid() {
			leave()
			return
		}
		// This goroutine got the main thread: it keeps it, so that the
		// one started now runs on another.
		defer runtime.UnlockOSThread()
		left := make(chan struct{})
		go func() { defer close(left); leave() }()
		<-left
	}()
	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	if s.tid == os.Getpid() {
		t.Fatal("the shell was started from the main thread")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	reaped := false
	reap := func() {
		if !reaped {
			_ = syscall.Kill(orphan, syscall.SIGKILL)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(orphan, &ws, 0, nil)
			reaped = true
		}
	}
	defer reap()
	// The kernel re-parents the orphan while the shell exits, before the
	// shell can be waited for: no need to wait for it here.
	pids, err := childPIDs(true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, orphan) {
		all, _ := childPIDs(false)
		t.Fatalf("orphan %d not among the main thread's children %v (all threads': %v)", orphan, pids, all)
	}
	reap()
	if pids, err = childPIDs(true); err != nil || slices.Contains(pids, orphan) {
		t.Fatalf("after the orphan %d was reaped, the main thread's children are %v (%v)", orphan, pids, err)
	}
}

func TestAppendPIDs(t *testing.T) {
	if got := appendPIDs(nil, []byte("12 345 6789 \n")); !slices.Equal(got, []int{12, 345, 6789}) {
		t.Fatalf("got %v", got)
	}
	if got := appendPIDs(nil, nil); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
}

// The look after a run leaves the stack of the goroutine that makes it as
// small as it was: a 4 KiB buffer in mainThreadChildren's frame made every
// run's goroutine (a new one per run) grow its stack, a copy of all of it,
// at each look (issue 16, ninth pass). Goroutines that look are measured
// against as many that do not, each group alive at its measurement, both
// started at the same stack size (the runtime sets it at each collection,
// from the stacks it scanned: none runs between the two).
func TestTheLookDoesNotGrowItsGoroutinesStack(t *testing.T) {
	if _, err := mainThreadChildren(); err != nil { // opens the file once
		t.Fatal(err)
	}
	runtime.GC()
	const n = 256
	stacks := func(look bool) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		release := make(chan struct{})
		var ready sync.WaitGroup
		for range n {
			ready.Add(1)
			go func() {
				if look {
					_, _ = mainThreadChildren()
				}
				ready.Done()
				<-release
			}()
		}
		ready.Wait()
		runtime.ReadMemStats(&after)
		close(release)
		return after.StackInuse - min(after.StackInuse, before.StackInuse)
	}
	idle, looked := stacks(false), stacks(true)
	t.Logf("stacks: %d bytes for %d goroutines that looked, %d for as many that did not", looked, n, idle)
	if extra := (int64(looked) - int64(idle)) / n; extra >= 4<<10 {
		t.Errorf("a goroutine that looked for children holds %d more bytes of stack than one that did not (%d against %d bytes for %d goroutines): its stack grew",
			extra, looked, idle, n)
	}
}

// BenchmarkLookOnARunsGoroutine is the look after a run as the runner makes
// it: on a new goroutine (a run's), some frames deep.
func BenchmarkLookOnARunsGoroutine(b *testing.B) {
	if _, err := mainThreadChildren(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			frames(16, func() { _, _ = mainThreadChildren() })
		}()
		<-done
	}
}

// frames calls f n frames deep, each frame holding a little stack.
//
//go:noinline
func frames(n int, f func()) {
	var pad [64]byte
	if n == 0 {
		f()
		return
	}
	frames(n-1, f)
	runtime.KeepAlive(pad)
}
