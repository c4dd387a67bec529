package proctree

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Marker is the environment variable that tags every process of a command's
// tree; its value identifies the tree.
const Marker = "PACER_PROCESS_TREE"

// Defaults for Cmd's zero fields.
const (
	DefaultGrace       = 2 * time.Second
	DefaultKillTimeout = 5 * time.Second
)

// drainTimeout bounds how long Run waits for the output pipes to close once
// the tree is gone (or given up on): a process outside the tree that holds
// them (it was handed the descriptor) must not hold up the result.
const drainTimeout = time.Second

// ErrTreeAlive means processes of the command's tree were still alive when
// Run gave up on them: the attempt did not end whole.
var ErrTreeAlive = errors.New("processes of the command could not be confirmed dead")

// AliveError lists the processes Run could not confirm dead.
type AliveError struct {
	PIDs  []int
	After time.Duration // how long they had after SIGKILL
}

func (e *AliveError) Error() string {
	pids := make([]string, len(e.PIDs))
	for i, p := range e.PIDs {
		pids[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("%v: %d still alive %s after SIGKILL (pids %s; a process in uninterruptible sleep, e.g. on a hung NFS mount, cannot die until its I/O returns)",
		ErrTreeAlive, len(e.PIDs), e.After, strings.Join(pids, ", "))
}

func (e *AliveError) Unwrap() error { return ErrTreeAlive }

// WithoutGrace marks err, a context's cancellation cause, as allowing no
// grace: a command whose context ends with it (or with an error that wraps
// it) gets SIGKILL at once, not SIGTERM and Grace first. The SDK's run
// stream cancels its runs with it when the runner's lease has run out (a
// frozen runner): another replica may start the same slot any moment, and
// a process that ignores SIGTERM must not live on into that run. The
// error's text is err's.
func WithoutGrace(err error) error { return noGrace{err} }

type noGrace struct{ error }

func (e noGrace) Unwrap() error { return e.error }

// graceless says whether cause was marked by WithoutGrace.
func graceless(cause error) bool {
	var ng noGrace
	return errors.As(cause, &ng)
}

// Cmd is a command whose whole process tree ends when it does. Set its
// fields before Run, as with exec.Cmd.
type Cmd struct {
	// Path is the program; Args holds it and its arguments (Args[0] is the
	// program's name as it sees it).
	Path string
	Args []string
	// Env is the command's environment; nil means the plugin's own. Marker
	// is added to it.
	Env []string
	// Dir is the working directory; "" means the plugin's.
	Dir string
	// Stdout and Stderr receive the command's output; nil discards it. The
	// same writer for both gets both through one pipe, in order.
	Stdout, Stderr io.Writer
	// Grace is how long the tree gets to stop after SIGTERM when ctx ends,
	// before SIGKILL (DefaultGrace); none when ctx's cause is marked by
	// WithoutGrace.
	Grace time.Duration
	// KillTimeout is how long processes get to die after SIGKILL before Run
	// reports them as alive (DefaultKillTimeout).
	KillTimeout time.Duration

	ctx     context.Context
	lookErr error
}

// Command returns a Cmd that runs name with args until it exits or ctx
// ends. Like exec.Command, a name without a path separator is looked up in
// PATH.
func Command(ctx context.Context, name string, arg ...string) *Cmd {
	ec := exec.Command(name, arg...)
	return &Cmd{Path: ec.Path, Args: ec.Args, ctx: ctx, lookErr: ec.Err}
}

// Result is how a command and its tree ended.
type Result struct {
	// ExitCode is the command's exit status, or -1 if a signal ended it.
	ExitCode int
	// State says how the command ended, e.g. "exit status 3" or "signal: killed".
	State string
	// Stopped is set when ctx ended before the command exited.
	Stopped bool
	// Leftovers are processes of the tree that were still running when the
	// command ended. They were killed.
	Leftovers []int
	// Confirmed is set when a scan found no process of the tree alive
	// afterwards. It is always false where Supported is false.
	Confirmed bool
}

// Run starts the command, waits for it, ends what is left of its tree and
// returns how it went. It fails without a Result if the command cannot
// start; it returns a Result and an *AliveError if processes of the tree
// could not be confirmed dead.
func (c *Cmd) Run() (*Result, error) {
	if c.lookErr != nil {
		return nil, c.lookErr
	}
	if c.ctx == nil {
		return nil, errors.New("proctree: Cmd not made by Command")
	}
	if err := c.ctx.Err(); err != nil {
		return nil, context.Cause(c.ctx)
	}
	grace, killTimeout := c.Grace, c.KillTimeout
	if grace <= 0 {
		grace = DefaultGrace
	}
	if killTimeout <= 0 {
		killTimeout = DefaultKillTimeout
	}
	id := newID()
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, Marker+"=") }),
		Marker+"="+id)
	ec := &exec.Cmd{Path: c.Path, Args: c.Args, Env: env, Dir: c.Dir, SysProcAttr: sysProcAttr()}
	if f, err := devNull(); err == nil {
		ec.Stdin = f // else os/exec opens one
	}

	out, err := newOutputs(ec, c.Stdout, c.Stderr)
	if err != nil {
		return nil, err
	}
	t, err := start(ec, id)
	out.closeChildEnds()
	if err != nil {
		out.closeParentEnds()
		return nil, err
	}
	out.copy()

	exited := make(chan error, 1)
	go func() {
		t.awaitExit()
		exited <- ec.Wait()
	}()
	res := &Result{}
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-c.ctx.Done():
		res.Stopped = true
		ended := false
		if !graceless(context.Cause(c.ctx)) {
			t.signal(syscall.SIGTERM)
			select {
			case waitErr = <-exited:
				ended = true
			case <-time.After(grace):
			}
		}
		if !ended {
			t.signal(syscall.SIGKILL)
			select {
			case waitErr = <-exited:
			case <-time.After(killTimeout):
				// The command itself will not die: report it. Whenever it
				// does, its tree is ended as if Run had waited for it, so
				// that it stops counting as running (while it counts, no
				// other command is alone, nor the plugin idle, and orphans
				// nobody claims are not killed).
				t.waited(false)
				out.drain(0)
				res.ExitCode, res.State = -1, "not exited"
				alive := append([]int{t.pid}, t.live()...)
				go func() {
					<-exited
					t.waited(true)
					_, _, _ = t.end(killTimeout)
				}()
				return res, &AliveError{PIDs: alive, After: killTimeout}
			}
		}
	}
	t.waited(true)
	res.ExitCode, res.State = exitOf(ec, waitErr)
	res.Leftovers, res.Confirmed, err = t.end(killTimeout)
	out.drain(drainTimeout)
	return res, err
}

func exitOf(ec *exec.Cmd, waitErr error) (int, string) {
	if ec.ProcessState != nil {
		return ec.ProcessState.ExitCode(), ec.ProcessState.String()
	}
	return -1, waitErr.Error()
}

// devNull is the commands' standard input, opened once: os/exec would
// open /dev/null for each command and close it after the start. Sharing
// it is safe: reading /dev/null ends at once, whatever its offset or
// flags.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// outputs are the pipes between the command and Stdout/Stderr. The
// descriptors are pipes of our own rather than exec's, so that Wait returns
// when the command exits even if a leftover still holds them.
type outputs struct {
	child  []*os.File // write ends, the command's
	parent []*os.File // read ends, ours
	dst    []io.Writer
	done   chan struct{}
	n      int
}

func newOutputs(ec *exec.Cmd, stdout, stderr io.Writer) (*outputs, error) {
	o := &outputs{done: make(chan struct{}, 2)}
	pipe := func(w io.Writer) (*os.File, error) {
		if w == nil {
			return nil, nil
		}
		r, wr, err := outputPipe()
		if err != nil {
			return nil, err
		}
		o.parent, o.child, o.dst = append(o.parent, r), append(o.child, wr), append(o.dst, w)
		return wr, nil
	}
	var err error
	if ec.Stdout, err = pipe(stdout); err != nil {
		o.closeChildEnds()
		o.closeParentEnds()
		return nil, err
	}
	if stderr != nil && sameWriter(stderr, stdout) {
		ec.Stderr = ec.Stdout
	} else if ec.Stderr, err = pipe(stderr); err != nil {
		o.closeChildEnds()
		o.closeParentEnds()
		return nil, err
	}
	// exec.Cmd treats a nil *os.File stored in an io.Writer as a writer.
	if ec.Stdout == (*os.File)(nil) {
		ec.Stdout = nil
	}
	if ec.Stderr == (*os.File)(nil) {
		ec.Stderr = nil
	}
	return o, nil
}

// sameWriter reports whether a and b are the same writer; writers of
// uncomparable types are never the same (as in os/exec).
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

func (o *outputs) closeChildEnds() {
	for _, f := range o.child {
		f.Close()
	}
}

func (o *outputs) closeParentEnds() {
	for _, f := range o.parent {
		f.Close()
	}
}

func (o *outputs) copy() {
	for i, r := range o.parent {
		o.n++
		go func() {
			copyOut(o.dst[i], r)
			o.done <- struct{}{}
		}()
	}
}

// copyOut copies src to dst until src ends or dst fails, as io.Copy does,
// through a buffer from a pool: io.Copy from an *os.File allocates 32 KiB
// for each copy unless dst is an io.ReaderFrom, and a busy plugin starts
// hundreds of commands a second.
func copyOut(dst io.Writer, src *os.File) {
	buf := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(buf)
	for {
		n, err := src.Read(buf[:])
		if n > 0 {
			if w, werr := dst.Write(buf[:n]); werr != nil || w != n {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// drain waits up to d for the copies to reach the end of their pipes, then
// closes the read ends, which ends the copies.
func (o *outputs) drain(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	got := 0
wait:
	for got < o.n {
		select {
		case <-o.done:
			got++
		case <-timer.C:
			break wait
		}
	}
	o.closeParentEnds()
	for ; got < o.n; got++ {
		<-o.done
	}
}
