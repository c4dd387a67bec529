package plugincheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"

	"github.com/pacerun/pacer/sdk/proctree"
)

// proc runs the plugin for go-plugin's client (ClientConfig.RunnerFunc) and
// watches its stdout on the way: the first line is the handshake, anything
// after it is noise that would otherwise be lost without a trace.
type proc struct {
	cmd    *exec.Cmd
	path   string
	stdout *io.PipeReader // what go-plugin reads: the handshake line, then the rest
	stderr io.ReadCloser
	out    io.ReadCloser // the plugin's stdout, which tee reads

	process *os.Process // set by Start, under mu

	closeOnce sync.Once
	closer    *time.Timer

	waitOnce sync.Once
	waitErr  error
	exited   chan struct{}

	mu        sync.Mutex
	handshake string
	gotLine   chan struct{} // closed once the first line (or EOF) arrived
	noise     []byte        // stdout after the handshake line (first bytes)
	noiseLen  int
	killed    bool
}

var _ runner.Runner = (*proc)(nil)

// newProc returns a go-plugin RunnerFunc that starts path with env plus
// go-plugin's handshake variables, and hands the proc to keep.
func newProc(path string, env []string, keep func(*proc)) func(hclog.Logger, *exec.Cmd, string) (runner.Runner, error) {
	return func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
		cmd := exec.Command(path)
		cmd.Env = append(append([]string(nil), env...), spec.Env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		p := &proc{cmd: cmd, path: path, exited: make(chan struct{}), gotLine: make(chan struct{})}
		keep(p)
		return p, nil
	}
}

func (p *proc) Start(context.Context) error {
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if p.stderr, err = p.cmd.StderrPipe(); err != nil {
		return err
	}
	if err := p.cmd.Start(); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	p.mu.Lock()
	p.stdout, p.out, p.process = pr, out, p.cmd.Process
	killed := p.killed
	p.mu.Unlock()
	go p.tee(out, pw)
	if killed { // killed (interrupted) while it started
		_ = p.Kill(context.Background())
	}
	return nil
}

const maxNoise = 256

func (p *proc) tee(out io.Reader, pw *io.PipeWriter) {
	defer pw.Close()
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	p.mu.Lock()
	p.handshake = line
	close(p.gotLine)
	p.mu.Unlock()
	if line != "" {
		if _, werr := pw.Write([]byte(line)); werr != nil {
			_, _ = io.Copy(io.Discard, r)
			return
		}
	}
	if err != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if len(p.noise) < maxNoise {
				p.noise = append(p.noise, buf[:min(n, maxNoise-len(p.noise))]...)
			}
			p.noiseLen += n
			p.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// firstLine waits up to d for the first stdout line (without its newline
// when it has one) and reports whether one came.
func (p *proc) firstLine(d time.Duration) (string, bool) {
	select {
	case <-p.gotLine:
	case <-time.After(d):
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handshake, true
}

// stray returns what the plugin wrote to stdout after the handshake.
func (p *proc) stray() ([]byte, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.noise), p.noiseLen
}

func (p *proc) Wait(context.Context) error {
	p.waitOnce.Do(func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	})
	return p.waitErr
}

// waitExit waits up to d for the process to exit (go-plugin's client reaps
// it) and reports whether it did.
func (p *proc) waitExit(d time.Duration) bool {
	select {
	case <-p.exited: // first on its own: a select with a ready timer picks at random
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// Kill SIGKILLs the plugin's process tree: every descendant it has now,
// its process group and itself, so that nothing it started outlives the
// check. If a process that escaped (a daemon re-parented to init) still
// holds its stdout or stderr pipeGrace later, the pipes are closed, so that
// go-plugin's wait for them, and the check, end.
func (p *proc) Kill(context.Context) error {
	p.mu.Lock()
	p.killed = true
	process, out, stderr := p.process, p.out, p.stderr
	p.mu.Unlock()
	if process == nil {
		return nil // Start kills it
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	pid := process.Pid
	below, _ := proctree.Descendants(pid)
	if alive(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL) // its own group (Setpgid)
	}
	err := process.Kill()
	for _, d := range below {
		_ = d.Signal(syscall.SIGKILL)
	}
	p.closeOnce.Do(func() {
		p.closer = time.AfterFunc(pipeGrace, func() {
			select {
			case <-p.exited:
			default:
				_ = out.Close()
				_ = stderr.Close()
			}
		})
	})
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// killGroup SIGKILLs the process group a plugin process leads (it is
// started with Setpgid; the group outlives its leader while members live)
// and every descendant the leader has.
func killGroup(pid int) {
	below, _ := proctree.Descendants(pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, d := range below {
		_ = d.Signal(syscall.SIGKILL)
	}
}

// pipeGrace is how long a killed plugin's pipes may stay open before Kill's
// closer closes them.
const pipeGrace = time.Second

func (p *proc) wasKilled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed
}

func (p *proc) pid() int {
	if p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) Stdout() io.ReadCloser { return p.stdout }
func (p *proc) Stderr() io.ReadCloser { return p.stderr }
func (p *proc) Name() string          { return p.path }
func (p *proc) ID() string            { return strconv.Itoa(p.pid()) }

func (p *proc) Diagnose(context.Context) string { return "" }

func (p *proc) PluginToHost(network, address string) (string, string, error) {
	return network, address, nil
}

func (p *proc) HostToPlugin(network, address string) (string, string, error) {
	return network, address, nil
}

// describeExit names how a process ended, for reasons.
func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	return err.Error()
}
