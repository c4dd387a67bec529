package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pacerun/pacer/internal/syncbuf"
)

// runPacer runs the built pacer binary and returns its stdout, stderr and
// exit code.
func runPacer(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pacer"), args...)
	var out, errOut syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitCode()
	}
	t.Fatalf("pacer %v: %v", args, err)
	return "", "", -1
}

// pacer plugins check: a table or JSON, exit status 1 when a check fails,
// 2 on a usage error; it needs no runner.
func TestE2EPluginsCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts plugin processes (skipped with -short)")
	}
	t.Parallel()
	python := filepath.Join("..", "..", "examples", "python-plugin", "hello_python.py")
	out, errOut, code := runPacer(t, "plugins", "check", python, "--params", `greet={"name":"check","wait":"1h"}`)
	if code != 0 {
		t.Fatalf("exit %d for the Python example\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"plugin hello-python 1.0.0 (sdk 0.1.0) at " + python,
		`PASS  cancel          greet  with the params given the run ended`,
		// The Python SDK serves RunStream: a run on the stream is cancelled mid-run.
		"PASS  run-stream      -      opened with an empty message; two runs of greet",
		"with the params given a run ended",
		"15 checks: 15 passed, 0 failed, 0 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^PASS  `).FindAllString(out, -1)); n != 15 {
		t.Errorf("%d PASS lines, want 15:\n%s", n, out)
	}

	// The test plugin's hang task ignores cancellation: exit status 1, the
	// failure in the JSON report.
	out, errOut, code = runPacer(t, "plugins", "check", filepath.Join(binDir, "plugins", "testplugin"), "-o", "json",
		"--grace", "1s", "--params", `hang={"duration":"1h"}`, "--only", "handshake,cancel")
	if code != 1 || !strings.Contains(errOut, "checks failed") {
		t.Fatalf("exit %d, stderr %q; want 1 and the count of failures", code, errOut)
	}
	var rep struct {
		Plugin  string
		Failed  int
		Results []struct{ Check, Task, Status, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	var hang string
	for _, r := range rep.Results {
		if r.Check == "cancel" && r.Task == "hang" {
			hang = r.Status + ": " + r.Reason
		}
	}
	if rep.Plugin != "testplugin" || rep.Failed == 0 || !strings.HasPrefix(hang, "fail: want the run to end within 1s of Cancel") {
		t.Fatalf("plugin %q, %d failed, hang's cancel %q", rep.Plugin, rep.Failed, hang)
	}

	if _, errOut, code := runPacer(t, "plugins", "check"); code != 2 || !strings.Contains(errOut, "usage: pacer plugins check PATH") {
		t.Fatalf("no path: exit %d, %q", code, errOut)
	}
	if _, errOut, code := runPacer(t, "plugins", "check", python, "--params", "greet"); code != 2 || !strings.Contains(errOut, "want TASK=JSON") {
		t.Fatalf("bad --params: exit %d, %q", code, errOut)
	}
	if _, errOut, code := runPacer(t, "plugins", "check", python, "--only", "cancle"); code != 2 || !strings.Contains(errOut, `unknown check "cancle"`) {
		t.Fatalf("bad --only: exit %d, %q", code, errOut)
	}
}

// Attack 14, K1: what a checked plugin leaves behind goes with the check,
// as with `pacer run`. The test plugin's daemon task leaves a setsid'd
// sleep to whoever adopts it (the plugin is no subreaper) and, with
// message "crash", the plugin then exits. Before the fix the check was no
// subreaper either: the sleep went to init and lived on after the check.
func TestE2EPluginsCheckKillsWhatADeadPluginLeft(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts plugin processes (skipped with -short)")
	}
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "daemon.pid")
	out, errOut, code := runPacer(t, "plugins", "check", filepath.Join(binDir, "plugins", "testplugin"), "--only", "cancel",
		"--grace", "1s", "--params", `daemon={"path":"`+pidFile+`","message":"crash"}`)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the daemon task did not run (exit %d): %v\n%s%s", code, err, out, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("daemon pid %q: %v", b, err)
	}
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the daemon the dead plugin left (pid %d) outlived the check: %s", pid, stat)
	}
}

// Attack 19, P6: the plugin gets the runner's minimal environment, not the
// caller's, and --inherit-env adds what it names, as plugins.inherit_env
// does. The Python test plugin's mode needs-env (chosen by BADPLUGIN) exits
// before its handshake when PLUGINCHECK_DB_URL is unset. Before the fix the
// plugin got the whole environment: mode and variable reached it unasked.
func TestE2EPluginsCheckInheritEnv(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts plugin processes (skipped with -short)")
	}
	t.Parallel()
	bad := filepath.Join("..", "..", "runner", "plugincheck", "testdata", "badplugin.py")
	check := func(args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(binDir, "pacer"), append([]string{"plugins", "check", bad, "--only", "handshake"}, args...)...)
		cmd.Env = append(os.Environ(), "BADPLUGIN=needs-env", "PLUGINCHECK_DB_URL=postgres://db.internal/app")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("pacer plugins check %v: %v", args, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := check("--inherit-env", "BADPLUGIN"); code != 1 || !strings.Contains(out, "PLUGINCHECK_DB_URL is not set") {
		t.Errorf("the variable not inherited: exit %d, want 1 and the plugin's complaint\n%s", code, out)
	}
	if out, code := check("--inherit-env", "BADPLUGIN", "--inherit-env", "PLUGINCHECK_DB_*"); code != 0 {
		t.Errorf("the variable inherited: exit %d, want 0\n%s", code, out)
	}
	if out, code := check("--inherit-env", "BADPLUGIN,PLUGINCHECK_DB_URL"); code != 0 {
		t.Errorf("a comma-separated list: exit %d, want 0\n%s", code, out)
	}
}
