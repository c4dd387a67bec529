package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// shutdown.drain_timeout decides whether a run in progress at SIGTERM may
// finish: a 12s run outlives a drain of 30s (it was cancelled at the former
// fixed 10s), and is cancelled by a drain of 1s, which the runner logs.
func TestE2EDrainTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	for _, tc := range []struct {
		name    string
		drain   string
		outcome string
	}{
		{"longer than the run", "30s", "success"},
		{"shorter than the run", "1s", "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			httpAddr := freeAddr(t)
			cfg := runnerConfig{node: "drain", cluster: "drain"}.head(t, httpAddr) + fmt.Sprintf(`shutdown: {drain_timeout: %s}
jobs:
  - id: long
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 1m
    overlap: forbid
    params: {command: [sleep, "12"]}
`, tc.drain)
			p := startPacer(t, "drain", httpAddr, cfg)
			p.waitLogs("the run to start", 30*time.Second, func(ls []logLine) bool {
				return len(match(ls, msgIs("run started"))) > 0
			})
			p.signal(syscall.SIGTERM)
			if code := p.wait(60 * time.Second); code != 0 {
				t.Fatalf("exit code %d after SIGTERM, want 0", code)
			}
			finished := match(p.logs(), msgIs("run finished"))
			if len(finished) != 1 || finished[0].str("outcome") != tc.outcome {
				t.Fatalf("drain_timeout %s: finished runs %v, want one with outcome %s", tc.drain, finished, tc.outcome)
			}
			cancelled := len(match(p.logs(), msgIs("drain timeout: cancelling running runs"))) == 1
			if cancelled != (tc.outcome == "canceled") {
				t.Fatalf("drain_timeout %s: drain-timeout line logged: %v", tc.drain, cancelled)
			}
		})
	}
}
