package pluginhost

import (
	"os"
	"strconv"

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
	tids := []string{strconv.Itoa(os.Getpid())}
	if !adopted {
		d, err := os.Open("/proc/self/task")
		if err != nil {
			return nil, err
		}
		tids, err = d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return nil, err
		}
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
		data := buf[:0]
		for {
			if len(data) == cap(data) {
				data = append(data, 0)[:len(data)] // a long list: grow
			}
			n, err := unix.Read(fd, data[len(data):cap(data)])
			if n <= 0 || err != nil {
				break
			}
			data = data[:len(data)+n]
		}
		unix.Close(fd)
		pids = appendPIDs(pids, data)
	}
	return pids, nil
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
