package etcdembed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrDataDirInUse is returned by LockDataDir when another process holds
// the lock.
var ErrDataDirInUse = errors.New("data dir in use")

// LockDataDir takes an exclusive lock on dir (the file pacer.lock in it,
// holding this process's pid), so that a second runner on the same data
// directory fails at once, naming the first, instead of waiting for the
// embedded etcd's own database lock. The lock is released by unlock, and
// by the kernel when the process ends, however it ends.
func LockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster.data_dir: %w", err)
	}
	path := filepath.Join(dir, "pacer.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cluster.data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(holder))
			if _, perr := strconv.Atoi(pid); perr != nil {
				pid = "unknown"
			}
			return nil, fmt.Errorf("cluster.data_dir %s: %w by pid %s: another pacer runs on it; stop it, or give this one its own data_dir (and its own cluster.embedded addresses)",
				dir, ErrDataDirInUse, pid)
		}
		return nil, fmt.Errorf("cluster.data_dir %s: lock %s: %w", dir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
