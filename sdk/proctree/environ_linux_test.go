package proctree_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/sdk/proctree"
)

// execLoopHelper execs itself, with the same environment, over and over:
// one process whose program changes all the time.
func execLoopHelper() {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	panic(syscall.Exec(self, os.Args, os.Environ()))
}

// A process that execs while its environment is read gives the whole
// environment, or none (ErrExecing when the new program's is not set up
// yet), never a part of it. Read in parts (os.ReadFile:
// 512 bytes, then more), an exec between two parts cut it: the plugin
// host read an orphan's environment without the run ID at its end, and
// killed it while its run went on.
func TestEnvironOfAProcessExecingIsWholeOrEmpty(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{helperEnv + "=execloop"}
	for _, c := range "ABCDEFGH" { // 16 KiB: read in parts by os.ReadFile
		env = append(env, "FILL_"+string(c)+"="+strings.Repeat(string(c), 2048))
	}
	env = append(env, "MARK=last")
	want := []byte(strings.Join(env, "\x00") + "\x00")
	c := exec.Command(self, "-test.run=^$")
	c.Env = env
	p := startHelper(t, c)
	// Reads for a second, across the helper's execs (hundreds of them),
	// and until one read found the helper in the middle of one.
	var whole, empty, execing, cut int
	start := time.Now()
	for time.Since(start) < time.Second || execing == 0 {
		if time.Since(start) > 20*time.Second {
			t.Fatal("no read in 20 s found the helper in the middle of an exec")
		}
		b, err := p.Environ()
		switch {
		case errors.Is(err, proctree.ErrExecing):
			execing++
		case err != nil:
			t.Fatalf("environ of the helper: %v", err)
		case len(b) == 0:
			empty++
		case bytes.Equal(b, want):
			whole++
		default:
			cut++
			if cut == 1 {
				t.Errorf("environ read %d bytes, not the %d given: ends %q", len(b), len(want), b[max(0, len(b)-40):])
			}
		}
	}
	t.Logf("reads of the helper's environment: %d whole, %d in the middle of an exec, %d empty (an exec between open and read), %d cut",
		whole, execing, empty, cut)
	if cut > 0 {
		t.Errorf("%d reads of the environment were cut", cut)
	}
	if whole == 0 {
		t.Error("no read found the whole environment")
	}
}

// An empty environment (env -i) is no exec in progress: Environ reads it
// empty, without ErrExecing, once the program runs.
func TestEnvironOfAnEmptyEnvironmentIsNoExec(t *testing.T) {
	c := exec.Command("/usr/bin/env", "-i", "/bin/sleep", "30")
	p := startHelper(t, c)
	// sleep's arguments are set up with its environment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
		if string(b) == "/bin/sleep\x0030\x00" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cmdline %q after 10 s", b)
		}
		time.Sleep(time.Millisecond)
	}
	if b, err := p.Environ(); err != nil || len(b) != 0 {
		t.Fatalf("environ of env -i sleep: %q, %v; want empty, no error", b, err)
	}
}

// startHelper starts c as the reaper's own, to be killed and waited for
// when the test ends, and returns its process.
func startHelper(t *testing.T, c *exec.Cmd) proctree.Process {
	t.Helper()
	if err := proctree.StartOwned(t.Cleanup, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	p, err := proctree.Read(c.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
