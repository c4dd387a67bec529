package proctree_test

import (
	"bytes"
	"os"
	"os/exec"
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
// environment, or none, never a part of it. Read in parts (os.ReadFile:
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
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	p, err := proctree.Read(c.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// Reads for a second, across the helper's execs (hundreds of them).
	var whole, empty, cut int
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		b, err := p.Environ()
		switch {
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
	t.Logf("reads of the helper's environment: %d whole, %d empty (mid-exec), %d cut", whole, empty, cut)
	if cut > 0 {
		t.Errorf("%d reads of the environment were cut", cut)
	}
	if whole == 0 {
		t.Error("no read found the whole environment")
	}
}
