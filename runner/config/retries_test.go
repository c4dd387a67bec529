package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A retry storm (issue: a billion retries 1 ns apart made about 460
// attempts a second) is refused at load time, with the key's line.
func TestRetriesAreBounded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pacer.yaml")
	src := y(
		"jobs:",
		"  - id: storm",
		"    plugin: shell",
		"    task: exec",
		"    schedule: '@every 1s'",
		"    retries: {max: 1000000000, initial_backoff: 1ns, max_backoff: 1ns}",
		"  - id: ok",
		"    plugin: shell",
		"    task: exec",
		"    schedule: '@every 1s'",
		"    retries: {max: 100, initial_backoff: 100ms, max_backoff: 100ms}",
	)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Load: %v, want a config error", err)
	}
	got := err.Error()
	for _, want := range []string{
		"pacer.yaml:6: jobs[0].retries.max: 1000000000 retries is more than the limit of 100",
		"pacer.yaml:6: jobs[0].retries.initial_backoff: 1ns is below the minimum of 100ms",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "jobs[1]") {
		t.Errorf("the bounds themselves are refused: %q", got)
	}
}
