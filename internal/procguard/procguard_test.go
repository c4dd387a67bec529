//go:build linux

package procguard_test

import (
	"os"
	"testing"

	"github.com/pacerun/pacer/internal/procguard"
)

// After NonDumpable the flag is clear, and the process still reads its own
// /proc entries (the Prometheus process collector reads stat, fd and
// limits).
func TestNonDumpable(t *testing.T) {
	if err := procguard.NonDumpable(); err != nil {
		t.Fatal(err)
	}
	if d, err := procguard.Dumpable(); err != nil || d {
		t.Fatalf("Dumpable() = %v, %v after NonDumpable", d, err)
	}
	for _, f := range []string{"/proc/self/stat", "/proc/self/limits", "/proc/self/environ"} {
		if _, err := os.ReadFile(f); err != nil {
			t.Errorf("reading %s: %v", f, err)
		}
	}
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Errorf("listing /proc/self/fd: %v", err)
	}
}
