package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A Python plugin through a real runner: a task that ignores its
// cancellation and returns normally after its timeout is recorded
// timeout, as a Go task is (it was recorded success); text that is not
// UTF-8 (lone surrogates, as surrogateescape makes them) arrives with
// U+FFFD and the run succeeds.
func TestE2EPythonOutcomes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process and a Python plugin (skipped with -short)")
	}
	t.Parallel()
	needPython(t)
	sdk, err := filepath.Abs(filepath.Join("..", "..", "sdk", "python"))
	must(err)
	dir := t.TempDir()
	plugin := filepath.Join(dir, "outcomes.py")
	must(os.WriteFile(plugin, []byte(`#!/usr/bin/python3
import sys, time
sys.path.insert(0, `+fmt.Sprintf("%q", sdk)+`)
import pacer_sdk

plugin = pacer_sdk.Plugin("outcomes", version="1")

@plugin.task()
def deaf(ctx):
    time.sleep(1.5)  # ignores the cancellation its 1 s timeout sends
    return "slept, deaf to cancellation"

@plugin.task()
def latin1(ctx):
    text = b"caf\xe9".decode("utf-8", "surrogateescape")
    ctx.log.info(text)
    return text

if __name__ == "__main__":
    pacer_sdk.serve(plugin)
`), 0o755))
	httpAddr := freeAddr(t)
	p := startPacer(t, "py-out", httpAddr, runnerConfig{node: "py-out", cluster: "pyout", dataDir: filepath.Join(dir, "data"),
		plugins: "paths: {outcomes: " + plugin + "}, cancel_grace: 5s"}.head(t, httpAddr)+`jobs:
  - {id: deaf, plugin: outcomes, task: deaf, schedule: "0 0 0 1 1 *", timeout: 1s}
  - {id: latin1, plugin: outcomes, task: latin1, schedule: "0 0 0 1 1 *"}
`)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	done := func(rs []runRow) bool { return len(rs) > 0 && rs[0].State != "running" && rs[0].State != "pending" }

	trigger(t, p, "deaf")
	if r := waitRuns(t, p, "deaf", "the run's record", 60*time.Second, done)[0]; r.State != "timeout" || !strings.Contains(r.Output, "deaf to cancellation") {
		t.Errorf("deaf: %+v, want timeout with the task's output", r)
	}
	trigger(t, p, "latin1")
	if r := waitRuns(t, p, "latin1", "the run's record", 60*time.Second, done)[0]; r.State != "success" || r.Output != "caf\uFFFD" {
		t.Errorf("latin1: %+v, want success, output %q", r, "caf\uFFFD")
	}
}
