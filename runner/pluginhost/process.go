package pluginhost

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"
	"golang.org/x/sys/unix"

	"github.com/pacerun/pacer/sdk/proctree"
)

// procRunner starts and kills one plugin process for go-plugin
// (ClientConfig.RunnerFunc), in place of go-plugin's own, so that:
//
//   - the process is known to the host from the moment it is forked (see
//     orphans.go): the spawn lock is held for the fork only, not for the
//     whole start, so a plugin that is slow to handshake holds up no sweep
//     and no other plugin's runs;
//   - Kill ends the plugin's whole process tree (its process group and every
//     descendant), not just the plugin's process: a plugin that never
//     handshakes leaves nothing behind when its start fails;
//   - go-plugin never waits without a bound for the plugin's stdout and
//     stderr to close: a process that escaped the kill while holding them
//     (one the host cannot find: a daemon re-parented to init when the host
//     is not a subreaper) would otherwise hold go-plugin's Kill, and the
//     start that called it, forever. Kill closes the host's ends of the
//     pipes when they are still open pipeGrace after the kill.
type procRunner struct {
	h    *Host
	cmd  *exec.Cmd
	path string

	stdout, stderr io.ReadCloser

	mu     sync.Mutex
	pid    int
	proc   proctree.Process // the process as started
	exited bool
	closer *time.Timer // closes the pipes after a kill
}

var _ runner.Runner = (*procRunner)(nil)

// pipeGrace is how long Kill lets the killed tree's pipes close by
// themselves before closing the host's ends.
const pipeGrace = time.Second

// newProcRunner returns the RunnerFunc that runs path: spec carries the
// environment go-plugin adds (handshake cookie, AutoMTLS certificate, the
// socket directory) to the one the host gives the plugin (env).
func (h *Host) newProcRunner(path string, env []string) func(hclog.Logger, *exec.Cmd, string) (runner.Runner, error) {
	return func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
		cmd := exec.Command(path)
		cmd.SysProcAttr = processAttrs()
		cmd.Env = append(append([]string{}, env...), spec.Env...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return nil, err
		}
		return &procRunner{h: h, cmd: cmd, path: path, stdout: stdout, stderr: stderr}, nil
	}
}

// missingInterpreter explains a start that failed with "no such file or
// directory" for a plugin file that exists: what is missing is the program
// it names to run it, its #! line's interpreter (a script), or an ELF
// binary's dynamic loader. Any other error is returned as it is.
func missingInterpreter(path string, err error) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, ferr := os.Open(path)
	if ferr != nil {
		return err // the file itself is missing: the error says so
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if line, ok := bytes.CutPrefix(head, []byte("#!")); ok {
		line, _, _ = bytes.Cut(line, []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return fmt.Errorf("%s: its #! line names no interpreter (%w)", path, err)
		}
		interp := fields[0]
		if strings.HasSuffix(string(line), "\r") && len(fields) == 1 {
			return fmt.Errorf("%s: its #! line ends with a carriage return (Windows line endings), so its interpreter %q does not exist; convert the file to Unix line endings (%w)",
				path, interp+"\r", err)
		}
		return fmt.Errorf("%s: its interpreter %s (from its #! line) does not exist; install it or change the #! line (%w)", path, interp, err)
	}
	if ef, eerr := elf.NewFile(f); eerr == nil {
		defer ef.Close()
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				b, _ := io.ReadAll(p.Open())
				return fmt.Errorf("%s: its dynamic loader %s (the ELF interpreter it was linked for) does not exist: built for another system or C library? (%w)",
					path, strings.TrimRight(string(b), "\x00"), err)
			}
		}
	}
	return err
}

// Start forks the plugin and registers it, under the spawn lock (read), so
// that no sweep takes it for an orphan.
func (r *procRunner) Start(context.Context) error {
	r.h.spawn.RLock()
	defer r.h.spawn.RUnlock()
	if err := r.cmd.Start(); err != nil {
		return missingInterpreter(r.path, err)
	}
	pid := r.cmd.Process.Pid
	proc, err := proctree.Read(pid)
	if err != nil {
		proc = proctree.Process{PID: pid} // no /proc: signals go by ID
	}
	r.mu.Lock()
	r.pid, r.proc = pid, proc
	r.mu.Unlock()
	r.h.ownMu.Lock()
	r.h.forked[pid] = r
	r.h.ownMu.Unlock()
	return nil
}

// Wait waits for the process to exit (go-plugin calls it once the pipes
// are closed) and forgets it.
func (r *procRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.mu.Lock()
	r.exited = true
	if r.closer != nil {
		r.closer.Stop()
	}
	pid := r.pid
	r.mu.Unlock()
	r.h.ownMu.Lock()
	delete(r.h.forked, pid)
	r.h.ownMu.Unlock()
	return err
}

// Kill SIGKILLs the plugin's process tree: every descendant it has now,
// its process group, and the process itself.
func (r *procRunner) Kill(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pid == 0 || r.exited {
		return nil
	}
	r.killTreeLocked()
	if r.closer == nil {
		r.closer = time.AfterFunc(pipeGrace, r.closePipes)
	}
	return nil
}

func (r *procRunner) killTreeLocked() {
	// Descendants first, while the plugin still holds them together: once
	// it is dead, those outside its group are re-parented out of reach
	// (unless the host is a subreaper, whose sweeps then find them).
	below, _ := proctree.Descendants(r.pid)
	if r.proc.Alive() {
		// The group is the plugin's own (Setpgid): signal it only while
		// the plugin lives, so that its ID cannot have been reused.
		_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	}
	_ = r.proc.Signal(syscall.SIGKILL)
	for _, p := range below {
		_ = p.Signal(syscall.SIGKILL)
	}
}

// closePipes closes the host's ends of the plugin's stdout and stderr,
// which a process that escaped the kill may still hold: go-plugin's
// readers then end, and with them its wait for the process.
func (r *procRunner) closePipes() {
	r.mu.Lock()
	exited := r.exited
	r.mu.Unlock()
	if exited {
		return
	}
	r.h.log.Warn("a killed plugin's stdout or stderr is still held open, probably by a process it started that escaped the kill; no longer reading them",
		"pid", r.pid, "path", r.path)
	_ = r.stdout.Close()
	_ = r.stderr.Close()
}

// Diagnose is go-plugin's note on a failed handshake. What the plugin wrote
// to stderr, and how its process ended, are added after it (Host.start),
// once the process has been waited for.
func (r *procRunner) Diagnose(context.Context) string {
	return "the file at " + r.path + " did not start as a Pacer plugin: a plugin prints its handshake line on stdout first (docs/plugin-protocol.md)"
}

// endedBy says how the process ended by itself, once waited for: "exit
// status N", or "killed by SIG…" for any signal but SIGKILL (which may be
// the host's own kill); "" while it runs or after a SIGKILL.
func (r *procRunner) endedBy() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.exited || r.cmd.ProcessState == nil {
		return ""
	}
	ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return ""
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled() && ws.Signal() != syscall.SIGKILL:
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return ""
}

func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *procRunner) Name() string          { return r.path }

func (r *procRunner) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}

// PID returns the process's ID, 0 before it started.
func (r *procRunner) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid
}

func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
