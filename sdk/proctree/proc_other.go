//go:build !linux

package proctree

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Supported reports whether this system has what the package needs to
// confirm a tree is gone: child subreapers and /proc (Linux).
const Supported = false

// errNoProc is returned where the package needs Linux's /proc.
var errNoProc = fmt.Errorf("process trees: %w on this system (needs Linux)", errors.ErrUnsupported)

// EnableSubreaper fails: only Linux has child subreapers.
func EnableSubreaper() error { return errNoProc }

// Process is one process.
type Process struct {
	PID, PPID, PGID, SID int
	State                byte
}

// Zombie reports whether the process has exited and waits to be reaped.
func (p Process) Zombie() bool { return p.State == 'Z' }

// Read is not available on this system.
func Read(pid int) (Process, error) { return Process{}, errNoProc }

// Children is not available on this system.
func Children(pid int) ([]Process, error) { return nil, errNoProc }

// Descendants is not available on this system.
func Descendants(pid int) ([]Process, error) { return nil, errNoProc }

// Same reports whether a process with p's ID exists (it cannot tell a
// reused ID here).
func (p Process) Same() bool { return syscall.Kill(p.PID, 0) == nil }

// Alive is Same on this system.
func (p Process) Alive() bool { return p.Same() }

// Ended reports whether no process with p's ID exists.
func (p Process) Ended() bool { return !p.Same() }

// ErrExecing is Environ's error for a process in the middle of an exec
// (Linux only).
var ErrExecing = errors.New("the process is in the middle of an exec")

// Environ is not available on this system.
func (p Process) Environ() ([]byte, error) { return nil, errNoProc }

// Env is not available on this system.
func (p Process) Env(string) (string, bool) { return "", false }

// Signal sends sig to the process.
func (p Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// Reap collects the exit status of p, a child that exited.
func (p Process) Reap() bool {
	var ws syscall.WaitStatus
	pid, err := syscall.Wait4(p.PID, &ws, syscall.WNOHANG, nil)
	return err == nil && pid == p.PID
}

// outputPipe returns a pipe for a command's output.
func outputPipe() (r, w *os.File, err error) { return os.Pipe() }
