package pluginhost

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// childPIDs lists the IDs of the host process's children from each of its
// threads' lists (/proc/self/task/TID/children). It runs after every run
// (afterRun), so it reads them with plain system calls: no os.File, no
// poller, no allocation per thread.
func childPIDs() ([]int, error) {
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
