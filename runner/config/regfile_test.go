package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within runs read and returns its error, failing the test if it has not
// returned by a deadline: a read that blocks (a FIFO) or never ends (a
// device) is the bug these tests look for. release, if set, is called on
// the deadline to unblock the read before the test fails.
func within(t *testing.T, read func() error, release func()) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- read() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		if release != nil {
			release()
		}
		t.Fatal("the read did not return within 5s: it blocks or reads without end")
		return nil
	}
}

// mkfifo makes a FIFO at path and returns a function that opens and closes
// its writing end, which ends a read blocked on it.
func mkfifo(t *testing.T, path string) func() {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	return func() {
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}
}

// A config path that is a FIFO, a device or a file over MaxConfigBytes is
// refused with an error naming the file, what it is and the bound, without
// blocking and without reading it (attack 14, K8: /dev/zero was read until
// the runner fenced itself at 2.85 GB, a FIFO blocked every later reload).
func TestLoadRefusesWhatIsNotARegularFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	release := mkfifo(t, fifo)
	zero := filepath.Join(dir, "zero.yaml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(16<<20 + 1); err != nil { // sparse: nothing written
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		path, want string
		release    func()
	}{
		{fifo, fifo + " is a FIFO (named pipe), not a regular file: Pacer reads only regular files (of up to 16 MiB)", release},
		{zero, zero + " is a device, not a regular file: Pacer reads only regular files (of up to 16 MiB)", nil},
		{big, big + " is 16777217 bytes, more than the 16 MiB Pacer reads of such a file", nil},
	} {
		err := within(t, func() error { _, err := Load(tc.path); return err }, tc.release)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Load(%s):\n got %v\nwant %s", filepath.Base(tc.path), err, tc.want)
		}
	}
}

// A certificate file that is a FIFO or a device is a problem at its key's
// line, found without blocking (attack 14, K8: pacer validate hung on
// cert_file: /dev/zero).
func TestCheckFilesRefusesWhatIsNotARegularFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, key := writePair(t, dir, "api")
	fifo := filepath.Join(dir, "fifo.pem")
	release := mkfifo(t, fifo)
	for _, tc := range []struct {
		cert, want string
		release    func()
	}{
		{fifo, "pacer.yaml:3: http.tls.cert_file: " + fifo + " is a FIFO (named pipe), not a regular file: Pacer reads only regular files (of up to 1 MiB)", release},
		{"/dev/zero", "pacer.yaml:3: http.tls.cert_file: /dev/zero is a device, not a regular file: Pacer reads only regular files (of up to 1 MiB)", nil},
	} {
		cfg, err := Parse("pacer.yaml", y("http:", "  tls:", "    cert_file: "+tc.cert, "    key_file: "+key))
		if err != nil {
			t.Fatal(err)
		}
		err = within(t, cfg.CheckFiles, tc.release)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cert_file %s:\n got %v\nwant %s", tc.cert, err, tc.want)
		}
	}
}
