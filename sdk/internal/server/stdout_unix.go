//go:build unix

package server

import (
	"os"

	"golang.org/x/sys/unix"
)

// guardStdout keeps the process's stdout for go-plugin's handshake line alone.
// File descriptor 1 is pointed at stderr, so anything else that writes to it
// (task code, a library, a child process inheriting it) lands in the runner's
// log instead of corrupting the handshake. After the handshake go-plugin also
// swaps os.Stdout for a pipe it forwards to the runner.
func guardStdout() {
	fd, err := unix.Dup(1)
	if err != nil {
		return
	}
	if err := unix.Dup2(2, 1); err != nil {
		_ = unix.Close(fd)
		return
	}
	unix.CloseOnExec(fd)
	os.Stdout = os.NewFile(uintptr(fd), "/dev/stdout")
}
