package proctree_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/sdk/proctree"
)

// helperEnv makes the test binary a helper process (TestMain): "threads"
// for threadsHelper, "execloop" for execLoopHelper.
const helperEnv = "PROCTREE_TEST_HELPER"

// threadsHelper is a process with several threads, each blocked in a read,
// and a child (sleep) started from one of them: it prints the child's ID
// and waits to be killed.
func threadsHelper() {
	for range 8 {
		go func() {
			runtime.LockOSThread()
			var p [2]int
			if err := syscall.Pipe(p[:]); err != nil {
				panic(err)
			}
			_, _ = syscall.Read(p[0], make([]byte, 1))
		}()
	}
	c := exec.Command("sleep", "300")
	if err := c.Start(); err != nil {
		panic(err)
	}
	fmt.Println(c.Process.Pid)
	select {}
}

// A killed process with threads has ended only once every thread has: its
// main thread is a zombie while the others still exit, and its children
// are handed to a subreaper (or init) only when the last has. So when Ended
// says it has ended, its child is no longer its own. Before Ended, the
// plugin host waited for a killed plugin to be a zombie (Alive false) and
// then looked for its orphans: under load it found none, and the run's
// error did not name the processes a sweep killed later (a stopped plugin
// killed with its command's tree, once in a chaos run); a zombie's child
// was still the zombie's in about one kill in four here.
func TestEndedWaitsForEveryThreadOfAKilledProcess(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 20
	early := 0
	for range rounds {
		c := exec.Command(self, "-test.run=^$")
		c.Env = append(os.Environ(), helperEnv+"=threads")
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := proctree.StartOwned(t.Cleanup, c); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
		child, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("helper printed %q", line)
		}
		p, err := proctree.Read(c.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		// Stopped, then killed, as the plugin host kills a stopped plugin.
		_ = p.Signal(syscall.SIGSTOP)
		_ = p.Signal(syscall.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for !p.Ended() {
			if time.Now().After(deadline) {
				st, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
				t.Fatalf("killed helper %d has not ended after 10 s: %s", p.PID, st)
			}
			runtime.Gosched()
		}
		if q, err := proctree.Read(child); err == nil && q.PPID == p.PID {
			early++
		}
		_ = syscall.Kill(child, syscall.SIGKILL)
		_ = c.Wait()
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(child, &ws, 0, nil) // adopted if this process is a subreaper
	}
	if early > 0 {
		t.Errorf("in %d of %d kills, the helper had ended while its child was still its own", early, rounds)
	}
}
