//go:build linux

package proctree_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/sdk/proctree"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "threads":
		threadsHelper()
		return
	case "execloop":
		execLoopHelper()
		return
	}
	// The reaper runs for the life of the process, by design.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/pacerun/pacer/sdk/proctree.(*reaperState).start.func1"))
}

// lockedBuffer is an io.Writer safe for the copy goroutines and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func sh(ctx context.Context, script string) (*proctree.Cmd, *lockedBuffer) {
	var out lockedBuffer
	c := proctree.Command(ctx, "/bin/sh", "-c", script)
	c.Stdout, c.Stderr = &out, &out
	return c, &out
}

// gone reports whether pid no longer exists at all: not even a zombie,
// which a subreaper that does not reap would leave behind.
func gone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(err, os.ErrNotExist)
}

func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
				t.Fatalf("process %d still exists: %s", pid, st)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// readPIDs waits until path holds n lines of pids and returns them.
func readPIDs(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Fields(string(b))
		if len(lines) >= n && strings.HasSuffix(string(b), "\n") {
			var pids []int
			for _, l := range lines {
				pid, err := strconv.Atoi(l)
				if err != nil {
					t.Fatalf("%s: %q", path, b)
				}
				pids = append(pids, pid)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q after 10s, want %d pids", path, b, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A command that exits 0 while a background child still holds its output
// is reported by its exit status at once; the child is killed and listed.
func TestExitStatusWinsOverABackgroundChildHoldingTheOutput(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	c, out := sh(context.Background(), "echo hello; sleep 300 & echo $! > "+pidFile+"; exit 0")
	start := time.Now()
	res, err := c.Run()
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("Run took %s: it waited for the background child", took)
	}
	bg := readPIDs(t, pidFile, 1)[0]
	if res.ExitCode != 0 || res.Stopped || !res.Confirmed || len(res.Leftovers) != 1 || res.Leftovers[0] != bg {
		t.Fatalf("result %+v, want exit 0, confirmed, leftover %d", res, bg)
	}
	if out.String() != "hello\n" {
		t.Fatalf("output %q", out.String())
	}
	if !gone(bg) {
		t.Fatalf("leftover %d still exists after Run returned", bg)
	}
}

// setsid and a daemon's double fork leave the command's process group and
// its ancestry; they are still part of its tree and die with it, before Run
// returns, and are reaped (no zombies).
func TestSetsidAndDaemonisedDescendantsDieWithTheCommand(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		n      int
	}{
		{"exit", `setsid sh -c 'echo $$ >> %[1]s; exec sleep 300' &
(setsid sh -c 'echo $$ >> %[1]s; sleep 300; echo late') &
sh -c 'echo $$ >> %[1]s; sleep 300' &
while [ $(wc -l < %[1]s) -lt 3 ]; do sleep 0.01; done
exit 3`, 3},
		{"cancel", `setsid sh -c 'echo $$ >> %[1]s; exec sleep 300' &
(setsid sh -c 'echo $$ >> %[1]s; sleep 300') &
echo $$ >> %[1]s
sleep 300`, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			if err := os.WriteFile(pidFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c, out := sh(ctx, strings.ReplaceAll(tc.script, "%[1]s", pidFile))
			type ran struct {
				res *proctree.Result
				err error
			}
			done := make(chan ran, 1)
			go func() { res, err := c.Run(); done <- ran{res, err} }()
			pids := readPIDs(t, pidFile, tc.n)
			if tc.name == "cancel" {
				cancel()
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !r.res.Confirmed {
				t.Fatalf("tree not confirmed dead: %+v", r.res)
			}
			if tc.name == "exit" && (r.res.ExitCode != 3 || len(r.res.Leftovers) < 3) {
				t.Fatalf("result %+v, want exit 3 and the 3 background processes as leftovers", r.res)
			}
			if tc.name == "cancel" && !r.res.Stopped {
				t.Fatalf("result %+v, want stopped", r.res)
			}
			for _, pid := range pids {
				if !gone(pid) {
					st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
					t.Errorf("process %d of the tree exists after Run returned: %s", pid, st)
				}
			}
			if strings.Contains(out.String(), "late") {
				t.Errorf("a killed process wrote: %q", out.String())
			}
		})
	}
}

// runLeavingAnUnmarkedOrphan runs a command that leaves a process that
// cleared its environment and left the command's group and ancestry, and
// returns that process's pid and how the command ended.
func runLeavingAnUnmarkedOrphan(t *testing.T) (int, *proctree.Result) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pids")
	c, _ := sh(context.Background(), `(setsid env -i /bin/sh -c 'echo $$ > `+pidFile+`; exec sleep 300' &)
while [ ! -s `+pidFile+` ]; do sleep 0.01; done`)
	res, err := c.Run()
	if err != nil {
		t.Fatal(err)
	}
	return readPIDs(t, pidFile, 1)[0], res
}

// A process that clears its environment and leaves the group and ancestry
// carries no trace of its command. With no other command running it can
// only be this one's, and dies with it.
func TestAnUnmarkedOrphanDiesWhenNoOtherCommandRuns(t *testing.T) {
	pid, res := runLeavingAnUnmarkedOrphan(t)
	if !gone(pid) || !res.Confirmed {
		t.Fatalf("unmarked orphan %d survived (result %+v)", pid, res)
	}
}

// Concurrent commands keep their trees apart: ending one leaves the other's
// processes, including its setsid descendants, alone.
func TestConcurrentTreesAreKeptApart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long, _ := sh(ctx, `setsid sh -c 'echo $$ > `+dir+`/long; exec sleep 300' & wait`)
	done := make(chan error, 1)
	go func() { _, err := long.Run(); done <- err }()
	longPID := readPIDs(t, dir+"/long", 1)[0]

	short, _ := sh(context.Background(), `setsid sh -c 'echo $$ > `+dir+`/short; exec sleep 300' &
while [ ! -s `+dir+`/short ]; do sleep 0.01; done`)
	res, err := short.Run()
	if err != nil {
		t.Fatal(err)
	}
	shortPID := readPIDs(t, dir+"/short", 1)[0]
	if !gone(shortPID) || len(res.Leftovers) != 1 {
		t.Fatalf("short command's leftover %d: result %+v", shortPID, res)
	}
	if gone(longPID) {
		t.Fatal("ending one command killed another command's process")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitGone(t, longPID)
}

// A command that ends while another's scan is being read is not taken for
// that one's: the other counts as alone only if no command ran at any time
// during its scan. Before, a command ending as another one's scan was
// judged found the ended command's processes in the scan, no command but
// itself running, and reported them as its own leftovers (and killed what
// was left of them). The short command leaves a daemon of its own, so that
// its end has something to scan for (a command that leaves nothing ends
// without a scan).
func TestACommandEndingDuringAnotherScanIsNotItsLeftover(t *testing.T) {
	dir := t.TempDir()
	long, _ := sh(context.Background(), `echo $$ > `+dir+`/up; while [ ! -e `+dir+`/go ]; do sleep 0.01; done`)
	var longErr error
	longEnded := make(chan struct{})
	var scans atomic.Int32
	proctree.SetScanHook(t.Cleanup, func() {
		if scans.Add(1) == 1 { // the short command's first scan, long's sh in it
			if err := os.WriteFile(dir+"/go", nil, 0o644); err != nil {
				panic(err)
			}
			<-longEnded
		}
	})
	go func() {
		defer close(longEnded)
		_, longErr = long.Run()
	}()
	readPIDs(t, dir+"/up", 1)

	short, _ := sh(context.Background(), `setsid sh -c 'echo $$ > `+dir+`/short; exec sleep 300' &
while [ ! -s `+dir+`/short ]; do sleep 0.01; done`)
	res, err := short.Run()
	if err != nil {
		t.Fatal(err)
	}
	<-longEnded
	if longErr != nil {
		t.Fatal(longErr)
	}
	daemon := readPIDs(t, dir+"/short", 1)[0]
	if !slices.Equal(res.Leftovers, []int{daemon}) || !gone(daemon) {
		t.Fatalf("the short command's leftovers %v (result %+v), want its daemon %d alone, killed: not the ended command's processes", res.Leftovers, res, daemon)
	}
}

// A command that leaves nothing (its group empty, no process adopted)
// ends without a scan of the processes below this one: two cheap looks
// tell that nothing of its tree is left. Before, every end scanned.
func TestACommandThatLeavesNothingEndsWithoutAScan(t *testing.T) {
	var scans atomic.Int32
	proctree.SetScanHook(t.Cleanup, func() { scans.Add(1) })
	for _, script := range []string{`exit 0`, `sh -c 'sleep 0.01' & sleep 0.01 & wait; exit 3`} {
		c, _ := sh(context.Background(), script)
		res, err := c.Run()
		if err != nil || !res.Confirmed || len(res.Leftovers) != 0 {
			t.Fatalf("%q: result %+v, error %v, want confirmed, no leftovers", script, res, err)
		}
	}
	if n := scans.Load(); n != 0 {
		t.Fatalf("%d scans for commands that left nothing, want none", n)
	}
}

// Commands that end together share the scans of the processes below this
// one: each still finds and kills its own leftover, and only its own,
// before its Run returns.
func TestCommandsEndingTogetherEachEndTheirOwnTree(t *testing.T) {
	const n = 16
	dir := t.TempDir()
	type ran struct {
		res *proctree.Result
		err error
	}
	done := make([]chan ran, n)
	for i := range n {
		c, _ := sh(context.Background(), fmt.Sprintf(`setsid sh -c 'echo $$ > %[1]s/%[2]d; exec sleep 300' &
while [ ! -s %[1]s/%[2]d ] || [ ! -e %[1]s/go ]; do sleep 0.01; done`, dir, i))
		done[i] = make(chan ran, 1)
		go func() { res, err := c.Run(); done[i] <- ran{res, err} }()
	}
	pids := make([]int, n)
	for i := range n {
		pids[i] = readPIDs(t, fmt.Sprintf("%s/%d", dir, i), 1)[0]
	}
	if err := os.WriteFile(dir+"/go", nil, 0o644); err != nil { // every command exits now
		t.Fatal(err)
	}
	for i := range n {
		r := <-done[i]
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !gone(pids[i]) || !r.res.Confirmed || !slices.Equal(r.res.Leftovers, []int{pids[i]}) {
			t.Errorf("command %d: leftover %d gone %v; result %+v, want its leftover alone, killed and confirmed", i, pids[i], gone(pids[i]), r.res)
		}
	}
}

// On cancellation the tree gets SIGTERM and Grace to stop, then SIGKILL.
func TestStopSendsTermThenKillAfterGrace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		state  string
	}{
		{"stops on TERM", `trap 'echo term; exit 0' TERM; echo ready; while :; do sleep 0.05; done`, "exit status 0"},
		{"ignores TERM", `trap '' TERM; echo ready; while :; do sleep 0.05; done`, "signal: killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := stopOnceReady(t, tc.script, 300*time.Millisecond, context.Canceled)
			if res == nil || !res.Stopped || res.State != tc.state || !res.Confirmed {
				t.Fatalf("result %+v, want stopped with %q", res, tc.state)
			}
		})
	}
}

// A command whose context ends with a cause marked WithoutGrace (the
// runner's lease ran out: another replica may start the slot) gets SIGKILL
// at once: it never sees SIGTERM, and an hour's grace does not hold it up.
// Before, it got SIGTERM and the grace, and a command that ignores SIGTERM
// lived on into the successor's run (attack 25, W5).
func TestStopWithoutGraceKillsAtOnce(t *testing.T) {
	cause := errors.New("the runner has not renewed its lease")
	res, out := stopOnceReady(t, `trap 'echo term; exit 0' TERM; echo ready; while :; do sleep 0.05; done`, time.Hour, proctree.WithoutGrace(cause))
	if res == nil || !res.Stopped || res.State != "signal: killed" || !res.Confirmed {
		t.Fatalf("result %+v, want stopped by SIGKILL", res)
	}
	if strings.Contains(out.String(), "term") {
		t.Fatalf("the command saw SIGTERM: %q", out.String())
	}
	if got := proctree.WithoutGrace(cause); got.Error() != cause.Error() || !errors.Is(got, cause) {
		t.Fatalf("cause %v: want the marked error's text, and to wrap it", got)
	}
}

// stopOnceReady runs script (which prints "ready" once its traps are set)
// with the given grace, cancels its context with cause once it is ready,
// and returns how it ended and what it wrote.
func stopOnceReady(t *testing.T, script string, grace time.Duration, cause error) (*proctree.Result, *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	c, out := sh(ctx, script)
	c.Grace = grace
	done := make(chan *proctree.Result, 1)
	go func() {
		res, err := c.Run()
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "ready") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel(cause)
	return <-done, out
}

// A command that did not die within KillTimeout is reported alive, and
// once it does die its tree is ended as if Run had waited: it stops
// counting as running, so a later command alone still kills an unmarked
// orphan it leaves. Before, it counted as running for the life of the
// process, and no orphan nobody claims was killed again.
func TestACommandThatDiedLateStopsCountingAsRunning(t *testing.T) {
	var notExited bool
	for try := 0; try < 50 && !notExited; try++ {
		ctx, cancel := context.WithCancel(context.Background())
		c, out := sh(ctx, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
		c.Grace, c.KillTimeout = time.Millisecond, time.Nanosecond // dies later than that
		done := make(chan error, 1)
		var res *proctree.Result
		go func() {
			var err error
			res, err = c.Run()
			done <- err
		}()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "ready"); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the command did not start")
			}
		}
		cancel()
		err := <-done
		notExited = res != nil && res.State == "not exited"
		if notExited && !errors.Is(err, proctree.ErrTreeAlive) {
			t.Fatalf("a command not exited within KillTimeout: %v, want ErrTreeAlive", err)
		}
	}
	if !notExited {
		t.Fatal("in 50 tries no command outlived a KillTimeout of 1 ns")
	}
	for deadline := time.Now().Add(10 * time.Second); proctree.LiveCommands() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d commands still count as running 10 s after the last one was killed", proctree.LiveCommands())
		}
	}
	if pid, res := runLeavingAnUnmarkedOrphan(t); !gone(pid) || !res.Confirmed {
		t.Fatalf("unmarked orphan %d survived after a command that died late (result %+v)", pid, res)
	}
}

func TestEnvironmentCarriesTheMarker(t *testing.T) {
	c, out := sh(context.Background(), `echo "$`+proctree.Marker+`|$FOO"`)
	c.Env = []string{"FOO=bar", proctree.Marker + "=forged"}
	res, err := c.Run()
	if err != nil || res.ExitCode != 0 {
		t.Fatal(res, err)
	}
	marker, foo, _ := strings.Cut(strings.TrimSpace(out.String()), "|")
	if len(marker) != 16 || marker == "forged" || foo != "bar" {
		t.Fatalf("output %q: want a fresh 16-digit marker and FOO=bar", out.String())
	}
}

func TestCommandThatCannotStart(t *testing.T) {
	for _, name := range []string{"/nonexistent/prog", "no-such-program-anywhere"} {
		res, err := proctree.Command(context.Background(), name).Run()
		if err == nil || res != nil {
			t.Errorf("%s: res %+v err %v, want an error and no result", name, res, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := proctree.Command(ctx, "/bin/true").Run(); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before start: %v", err)
	}
}

func TestSeparateOutputStreams(t *testing.T) {
	var stdout, stderr lockedBuffer
	c := proctree.Command(context.Background(), "/bin/sh", "-c", "echo out; echo err >&2")
	c.Stdout, c.Stderr = &stdout, &stderr
	if _, err := c.Run(); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestDescendantsAndSignal(t *testing.T) {
	if err := proctree.EnableSubreaper(); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _ := sh(ctx, "sh -c 'echo $$ > "+pidFile+"; exec sleep 300' & wait")
	done := make(chan struct{})
	go func() { _, _ = c.Run(); close(done) }()
	pid := readPIDs(t, pidFile, 1)[0]
	// The pid file is written just before the shell execs sleep; while
	// the kernel replaces the image, /proc/<pid>/environ can read empty.
	// Wait for the process to have its environment, within a deadline.
	var found *proctree.Process
	var ds []proctree.Process
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if ds, err = proctree.Descendants(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		found = nil
		for i := range ds {
			if ds[i].PID == pid {
				found = &ds[i]
			}
		}
		if found == nil || !found.Alive() || found.Zombie() {
			t.Fatalf("process %d not among descendants %+v", pid, ds)
		}
		if v, ok := found.Env(proctree.Marker); ok && v != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no marker in the environment of %d", pid)
		}
	}
	if err := found.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	waitGone(t, pid)
	// A process that is gone is not an error, and is not "alive".
	if err := found.Signal(syscall.SIGKILL); err != nil || found.Alive() {
		t.Fatalf("signal to a gone process: %v, alive %v", err, found.Alive())
	}
}
