package sdktest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Build compiles the Go package pkg (an import path, or a directory such as
// "." or "./cmd/myplugin") into dir and returns the binary's path. The binary
// is named after the last element of pkg (for a directory, of its absolute
// path: "." in a test of the plugin's main package is the plugin's own
// directory), which is the plugin name Pacer uses.
func Build(tb testing.TB, dir, pkg string) string {
	tb.Helper()
	out, err := BuildBinary(dir, pkg)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// BuildBinary is Build for places without a testing.TB, such as TestMain.
func BuildBinary(dir, pkg string) (string, error) {
	name := filepath.Base(strings.TrimSuffix(pkg, "/"))
	if pkg == "." || pkg == ".." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") || filepath.IsAbs(pkg) {
		abs, err := filepath.Abs(pkg)
		if err != nil {
			return "", err
		}
		name = filepath.Base(abs)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}
