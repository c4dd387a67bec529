package proctree

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Supported reports whether this system has what the package needs to
// confirm a tree is gone: child subreapers and /proc (Linux).
const Supported = true

// EnableSubreaper makes the calling process a child subreaper: orphaned
// descendants are re-parented to it rather than to init. The caller must
// then reap the children it adopts (Command's users have it done for them;
// see the package doc).
func EnableSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become a child subreaper: %w", err)
	}
	return nil
}

// Process is one process as /proc shows it.
type Process struct {
	PID, PPID, PGID, SID int
	// State is the state letter of /proc/PID/stat: R, S, D, Z, T ...
	State byte
	// start is the start time in clock ticks since boot: with PID it
	// identifies the process even if the ID is reused later.
	start uint64
	// threads is the number of the process's threads not yet released:
	// more than one in a zombie whose other threads still exit.
	threads int
}

// Zombie reports whether the process has exited and waits to be reaped.
func (p Process) Zombie() bool { return p.State == 'Z' || p.State == 'X' }

// Read returns the process pid, or an error wrapping os.ErrNotExist if there
// is none.
func Read(pid int) (Process, error) {
	b, err := readProc("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			err = os.ErrNotExist
		}
		return Process{}, fmt.Errorf("process %d: %w", pid, err)
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice num_threads
	// itrealvalue starttime ... comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return Process{}, fmt.Errorf("process %d: unexpected stat %q", pid, b)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 {
		return Process{}, fmt.Errorf("process %d: unexpected stat %q", pid, b)
	}
	p := Process{PID: pid, State: f[0][0]}
	p.PPID, _ = strconv.Atoi(f[1])
	p.PGID, _ = strconv.Atoi(f[2])
	p.SID, _ = strconv.Atoi(f[3])
	p.threads, _ = strconv.Atoi(f[17])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, nil
}

// Children lists pid's child processes. It reads each of pid's threads'
// children lists, so it costs little however many processes the host runs.
func Children(pid int) ([]Process, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tids, err := listProc(dir)
	if err != nil {
		if errors.Is(err, errListOpen) {
			return nil, fmt.Errorf("process %d: %w", pid, os.ErrNotExist)
		}
		return nil, err
	}
	var out []Process
	seen := map[int]bool{}
	read := 0
	for _, tid := range tids {
		b, err := readProc(dir + tid + "/children")
		if err != nil {
			continue // the thread ended, or no children files (old kernel)
		}
		read++
		for _, s := range strings.Fields(string(b)) {
			c, err := strconv.Atoi(s)
			if err != nil || seen[c] {
				continue
			}
			seen[c] = true
			if p, err := Read(c); err == nil && p.PPID == pid {
				out = append(out, p)
			}
		}
	}
	if read == 0 {
		return scanChildren(pid)
	}
	return out, nil
}

// scanChildren is Children for kernels without the children files: a scan
// of every process.
func scanChildren(pid int) ([]Process, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []Process
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := Read(c); err == nil && p.PPID == pid {
			out = append(out, p)
		}
	}
	return out, nil
}

// Descendants lists every process below pid: children, their children, and
// so on.
func Descendants(pid int) ([]Process, error) {
	kids, err := Children(pid)
	if err != nil {
		return nil, err
	}
	out := kids
	for i := 0; i < len(out); i++ {
		if out[i].Zombie() {
			continue // its children went to a subreaper, or init, when it exited
		}
		more, err := Children(out[i].PID)
		if err != nil {
			continue // it exited meanwhile
		}
		out = append(out, more...)
	}
	return out, nil
}

// Same reports whether the process still exists as the same process (not a
// new one that reused its ID), zombie or not.
func (p Process) Same() bool {
	q, err := Read(p.PID)
	return err == nil && q.start == p.start
}

// Alive reports whether the process still runs: it exists, is the same
// process, and is not a zombie.
func (p Process) Alive() bool {
	q, err := Read(p.PID)
	return err == nil && q.start == p.start && !q.Zombie()
}

// Ended reports whether the process has ended as a whole: it is gone (or
// its ID is another process's now), or it is a zombie none of whose other
// threads is still exiting. A killed process's main thread can be a zombie
// while its other threads still exit, and the kernel gives its children
// to a subreaper (or init) only when the last of them has: until then they
// are still its, so a look for them below the subreaper finds none.
func (p Process) Ended() bool {
	q, err := Read(p.PID)
	return err != nil || q.start != p.start || (q.Zombie() && q.threads <= 1)
}

// Env returns the value of key in the environment the process started
// with, and whether it was there. A zombie or a process whose environment
// cannot be read (another user's) has none.
func (p Process) Env(key string) (string, bool) {
	b, err := p.Environ()
	if err != nil {
		return "", false
	}
	prefix := []byte(key + "=")
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			return string(v), true
		}
	}
	return "", false
}

// Environ returns the environment the process's program started with
// (NAME=value entries, each ended by a NUL), read in one piece: of a
// process that execs meanwhile, the whole environment of one of its
// programs, or none (in the middle of an exec, before the new program's is
// set up), never a part. /proc/PID/environ is read from the process's
// memory at each read call, and an exec between two calls ends the file
// early: a plugin host once read a process's environment cut before its
// run's ID, took it for no run's and killed it while its run went on. The
// errors are os.ReadFile's (a process gone: ENOENT or ESRCH), and
// ErrExecing for a process whose new program's environment is not set up
// yet.
func (p Process) Environ() ([]byte, error) {
	path := "/proc/" + strconv.Itoa(p.PID) + "/environ"
	var fd int
	var err error
	for {
		if fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	// One read from the start, again with more room until the whole file
	// fits: a read that fills the buffer may have stopped short of the end.
	b := make([]byte, 4096)
	for {
		n, err := syscall.Pread(fd, b, 0)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0 && p.execing():
			return nil, fmt.Errorf("environment of process %d: %w", p.PID, ErrExecing)
		case n < len(b):
			return b[:n], nil
		}
		b = make([]byte, 4*len(b))
	}
}

// ErrExecing is Environ's error for a process in the middle of an exec:
// its new program's environment is not set up yet (read it again), which
// an empty read alone does not tell from an empty environment (env -i).
var ErrExecing = errors.New("the process is in the middle of an exec")

// execing reports whether the process is in the middle of an exec, going
// by its stat (Linux 3.5 and later): its memory's environment has no end
// yet (env_end, field 51, is 0 until the kernel sets up the new program's
// stack), and it is neither a zombie nor exiting (its memory gone, the
// field reads 0 too). The caller has read the process's environ, so it may
// see the field.
func (p Process) execing() bool {
	b, err := readProc("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) <= 48 {
		return false
	}
	const pfExiting = 0x4 // PF_EXITING, in the flags field
	flags, _ := strconv.ParseUint(f[6], 10, 64)
	return f[48] == "0" && f[0][0] != 'Z' && f[0][0] != 'X' && flags&pfExiting == 0
}

// Signal sends sig to the process through a pidfd, after checking the
// process is still the one p describes. A process that is gone is not an
// error.
func (p Process) Signal(sig syscall.Signal) error {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if errors.Is(err, unix.ENOSYS) {
		// Kernels before 5.3: fall back to kill(2) after the identity check.
		if !p.Same() {
			return nil
		}
		return ignoreGone(syscall.Kill(p.PID, sig))
	}
	if err != nil {
		return fmt.Errorf("signal process %d: %w", p.PID, err)
	}
	defer unix.Close(fd)
	// The pidfd now pins this PID to one process; make sure it is ours.
	if !p.Same() {
		return nil
	}
	return ignoreGone(unix.PidfdSendSignal(fd, sig, nil, 0))
}

func ignoreGone(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Reap collects the exit status of p, a zombie child of the calling process,
// so it disappears. It reports whether p was reaped.
func (p Process) Reap() bool {
	var ws unix.WaitStatus
	pid, err := unix.Wait4(p.PID, &ws, unix.WNOHANG, nil)
	return err == nil && pid == p.PID
}

// readProc reads a file of /proc with plain system calls: os.ReadFile's
// os.File costs a stat, a try at the poller and a change of mode on every
// open, and a command's end reads several such files of every process
// below the plugin. Its errors are os.ReadFile's.
func readProc(path string) ([]byte, error) {
	fd, err := openProc(path)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	b, err := preadProc(fd, make([]byte, 0, 512))
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

// openProc opens a file of /proc for reading.
func openProc(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		switch {
		case err == syscall.EINTR:
		case err != nil:
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		default:
			return fd, nil
		}
	}
}

// preadProc reads the file fd from its start into b, growing it past its
// capacity for a long file.
func preadProc(fd int, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := syscall.Pread(fd, b[len(b):cap(b)], int64(len(b)))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// pidsOf yields the space-separated numbers of a children list.
func pidsOf(b []byte) iter.Seq[int] {
	return func(yield func(int) bool) {
		n, digits := 0, false
		for i := 0; i <= len(b); i++ {
			if i < len(b) && '0' <= b[i] && b[i] <= '9' {
				n, digits = n*10+int(b[i]-'0'), true
				continue
			}
			if digits && !yield(n) {
				return
			}
			n, digits = 0, false
		}
	}
}

// errListOpen is listProc's error when the directory cannot be opened.
var errListOpen = errors.New("cannot open")

// listProc lists the names in a directory of /proc with plain system
// calls, as readProc reads a file.
func listProc(dir string) ([]string, error) {
	var fd int
	var err error
	for {
		if fd, err = syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0); err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errListOpen, dir, err)
	}
	defer syscall.Close(fd)
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := syscall.ReadDirent(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
}

// outputPipe returns a pipe for a command's output: the read end this
// process's, non-blocking in the runtime's poller; the write end the
// command's, blocking as programs expect their output to be, and never in
// the poller, as os.Pipe would put it (and os/exec take it out again to
// start the command): it is only handed to the command and closed.
func outputPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}
