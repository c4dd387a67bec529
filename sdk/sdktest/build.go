package sdktest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Build compiles the Go package pkg (an import path or a directory such as
// "./cmd/myplugin") into dir and returns the binary's path. The binary is
// named after the last element of pkg, which is the plugin name Pacer uses.
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
	out := filepath.Join(dir, filepath.Base(strings.TrimSuffix(pkg, "/")))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}
