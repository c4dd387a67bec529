// Package regfile reads the files a config names (the config itself,
// certificates, keys, a password) the one way Pacer reads them: only a
// regular file, opened without blocking and read up to a size bound.
//
// A path that turns into something else must not take the runner down: a
// FIFO would block the open or the read forever (and with it every later
// reload, or every TLS handshake), a device such as /dev/zero would be read
// without end. Read opens with O_NONBLOCK (an open of a FIFO with no writer
// returns at once), looks at what it opened with fstat, and refuses
// anything but a regular file, naming the file and what it is ("a FIFO",
// "a device"). A regular file over the bound is refused too, before it is
// read; one that grows past it while read is cut at the bound and refused.
package regfile

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Size bounds for the files Pacer reads.
const (
	// MaxConfigBytes bounds the config file (pacer run, pacer validate and
	// every reload). A config is kilobytes to a few megabytes; 20,000 jobs
	// take about 2 MiB.
	MaxConfigBytes = 16 << 20
	// MaxPEMBytes bounds a PEM file (http.tls.*, cluster.etcd.tls.*, the
	// CLI's --ca-file, --cert-file and --key-file) and
	// cluster.etcd.password_file. A certificate chain or a key is a few
	// kilobytes; a bundle of every public CA about 250 KiB.
	MaxPEMBytes = 1 << 20
)

// ErrRefused is what the errors of Read that refuse a file (not a regular
// file, too large) match with errors.Is: a file that is there but will not
// be read as it is, unlike one that cannot be opened.
var ErrRefused = errors.New("file refused")

// refusal is an error of Read that refuses a file.
type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrRefused }

func refuse(format string, args ...any) error { return refusal(fmt.Sprintf(format, args...)) }

// Read returns the content of the regular file name, of at most limit
// bytes. It refuses, with an error naming the file, a file that is not a
// regular file (a FIFO, a device, a socket, a directory) and one larger
// than limit; those errors match ErrRefused. Errors opening the file are
// *fs.PathError as from os.Open.
func Read(name string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, refuse("%s is %s, not a regular file: Pacer reads only regular files (of up to %s)", name, kind(fi.Mode()), size(limit))
	}
	if fi.Size() > limit {
		return nil, refuse("%s is %d bytes, more than the %s Pacer reads of such a file", name, fi.Size(), size(limit))
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, refuse("%s grew past %s while it was read, the most Pacer reads of such a file", name, size(limit))
	}
	return b, nil
}

// kind names what a file that is not a regular file is.
func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeDevice != 0 || m&fs.ModeCharDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	default:
		return "an irregular file"
	}
}

// size writes n bytes as "16 MiB", "1.5 KiB" or "300 bytes".
func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// KeyPair is tls.LoadX509KeyPair reading both PEM files with Read, each
// bounded by MaxPEMBytes.
func KeyPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := Read(certFile, MaxPEMBytes)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := Read(keyFile, MaxPEMBytes)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(cert, key)
}
