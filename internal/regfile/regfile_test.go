package regfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(small, 10); err != nil || string(b) != "0123456789" {
		t.Fatalf("a file at the bound: %q, %v", b, err)
	}
	for _, tc := range []struct {
		name  string
		limit int64
		want  string
	}{
		{small, 9, small + " is 10 bytes, more than the 9 bytes Pacer reads of such a file"},
		{dir, 1 << 20, dir + " is a directory, not a regular file: Pacer reads only regular files (of up to 1 MiB)"},
		{"/dev/null", 16 << 20, "/dev/null is a device, not a regular file: Pacer reads only regular files (of up to 16 MiB)"},
	} {
		_, err := Read(tc.name, tc.limit)
		if err == nil || err.Error() != tc.want || !errors.Is(err, ErrRefused) {
			t.Errorf("Read(%s, %d):\n got %v\nwant %s (ErrRefused)", tc.name, tc.limit, err, tc.want)
		}
	}
	_, err := Read(filepath.Join(dir, "missing"), 10)
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrRefused) {
		t.Errorf("a missing file: %v, want fs.ErrNotExist and not ErrRefused", err)
	}
	if _, err := KeyPair(small, "/dev/zero"); err == nil || !strings.Contains(err.Error(), "/dev/zero is a device") {
		t.Errorf("KeyPair with a device for the key: %v", err)
	}
}

func TestSizeText(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{100: "100 bytes", 1 << 10: "1 KiB", 1536: "1.5 KiB", 16 << 20: "16 MiB", 3 << 19: "1.5 MiB"} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
}
