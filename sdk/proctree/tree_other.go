//go:build !linux

package proctree

import (
	"os/exec"
	"syscall"
	"time"
)

// sysProcAttr: a process group of its own, so the group can be killed.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// tree is one running command: here, only its process group is known.
type tree struct{ pid int }

func start(ec *exec.Cmd, _ string) (*tree, error) {
	if err := ec.Start(); err != nil {
		return nil, err
	}
	return &tree{pid: ec.Process.Pid}, nil
}

func (t *tree) waited(bool) {}

func (t *tree) awaitExit() {}

func (t *tree) live() []int { return nil }

func (t *tree) signal(sig syscall.Signal) { _ = syscall.Kill(-t.pid, sig) }

// end kills the command's process group. Whether anything outside the
// group is left cannot be known here.
func (t *tree) end(time.Duration) ([]int, bool, error) {
	_ = syscall.Kill(-t.pid, syscall.SIGKILL)
	return nil, false, nil
}
