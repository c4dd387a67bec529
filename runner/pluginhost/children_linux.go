package pluginhost

import (
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// childPIDs lists the IDs of the host process's children from its
// threads' lists (/proc/self/task/TID/children): every thread's, or with
// adopted only its main thread's, which is where orphans go. The kernel
// re-parents an orphan to the first live thread of its subreaper, the
// thread-group leader (kernel/exit.c: find_new_reaper, find_alive_thread;
// Linux 3.19 and later); a child the process started itself is listed under
// the thread that started it. The reads use plain system calls (no os.File,
// no poller, no allocation per thread): they run after runs (afterRun).
func childPIDs(adopted bool) ([]int, error) {
	if adopted {
		return mainThreadChildren()
	}
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	var pids []int
	var buf [4096]byte
	path := make([]byte, 0, 64)
	for _, tid := range tids {
		path = append(append(append(path[:0], "/proc/self/task/"...), tid...), "/children"...)
		fd, err := unix.Open(string(path), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // the thread ended
		}
		pids = appendPIDs(pids, readChildren(fd, buf[:0]))
		unix.Close(fd)
	}
	return pids, nil
}

// The main thread's list is read after every run: its file is opened once
// and read from its start each time (a /proc seq_file lists the children
// anew at offset 0), which spares a path lookup in /proc per look. An open
// that fails (out of file descriptors) is tried again at the next look.
//
// The read goes into buf, kept here, not into an array on the caller's
// stack: the look runs on the goroutine of a run that just ended, a new
// one per run, and a 4 KiB array in this frame made that goroutine's stack
// grow, copying all of it, at every look (issue 16, ninth pass: about 6 %
// of the runner's CPU at 1,000 runs due together).
var mainChildren struct {
	mu  sync.Mutex
	fd  int    // -1 until opened
	buf []byte // the last read's bytes
}

func init() { mainChildren.fd = -1 }

// mainThreadChildren lists the children of the host's main thread.
func mainThreadChildren() ([]int, error) {
	m := &mainChildren
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fd < 0 {
		fd, err := unix.Open("/proc/self/task/"+strconv.Itoa(os.Getpid())+"/children", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		m.fd = fd
	}
	if m.buf == nil {
		m.buf = make([]byte, 0, 4096)
	}
	m.buf = readChildren(m.fd, m.buf[:0])
	return appendPIDs(nil, m.buf), nil
}

// readChildren reads a children file from its start into data (growing it
// past its capacity for a long list).
func readChildren(fd int, data []byte) []byte {
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)] // a long list: grow
		}
		n, err := unix.Pread(fd, data[len(data):cap(data)], int64(len(data)))
		if n <= 0 || err != nil {
			return data
		}
		data = data[:len(data)+n]
	}
}

// appendPIDs appends the space-separated numbers of b to pids.
func appendPIDs(pids []int, b []byte) []int {
	start := -1
	for i := 0; i <= len(b); i++ {
		if i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			if pid, err := strconv.Atoi(string(b[start:i])); err == nil {
				pids = append(pids, pid)
			}
			start = -1
		}
	}
	return pids
}
