package plugincheck_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner/plugincheck"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// bin holds the Go plugins under test, built once.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "plugincheck-")
	if err != nil {
		panic(err)
	}
	bin = dir
	for _, pkg := range []string{
		"github.com/pacerun/pacer/plugins/shell",
		"github.com/pacerun/pacer/plugins/http",
		"github.com/pacerun/pacer/internal/testplugins/testplugin",
		"github.com/pacerun/pacer/examples/hello-plugin",
	} {
		if _, err := sdktest.BuildBinary(dir, pkg); err != nil {
			panic(err)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	pythonExample = filepath.Join("..", "..", "examples", "python-plugin", "hello_python.py")
	badPlugin     = filepath.Join("testdata", "badplugin.py")
)

// needPython fails the test, saying what to install, when Debian's python3
// lacks the Python SDK's dependencies.
func needPython(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc, google.protobuf, cryptography").CombinedOutput(); err != nil {
		t.Fatalf("the Python plugins need /usr/bin/python3 with python3-grpcio, python3-protobuf and python3-cryptography (make deps): %v\n%s", err, out)
	}
}

func check(t *testing.T, path string, opts plugincheck.Options) *plugincheck.Report {
	t.Helper()
	rep := plugincheck.Run(context.Background(), path, opts)
	for _, r := range rep.Results {
		t.Logf("%-4s %-14s %-8s %s", r.Status, r.Check, r.Task, r.Reason)
	}
	return rep
}

// passes asserts that every check passed, and that the named ones did not
// get away with a skip.
func passes(t *testing.T, rep *plugincheck.Report, mustRun ...string) {
	t.Helper()
	if !rep.OK() {
		t.Fatalf("%s: %d checks failed", rep.Path, rep.Failed)
	}
	for _, name := range mustRun {
		r := rep.Result(name, "")
		if r == nil || r.Status != plugincheck.Pass {
			t.Errorf("check %s: %+v, want pass", name, r)
		}
	}
}

// Every check that needs no task-specific behaviour.
var protocolChecks = []string{plugincheck.CheckCookie, plugincheck.CheckHandshake, plugincheck.CheckAutoMTLS, plugincheck.CheckDescribe,
	plugincheck.CheckHealth, plugincheck.CheckUnknownTask, plugincheck.CheckStdout, plugincheck.CheckShutdown,
	plugincheck.CheckSIGTERM, plugincheck.CheckParentDeath}

// The first-party plugins and the Go example pass, with params that keep a
// task busy long enough to be cancelled mid-run.
func TestFirstPartyPluginsPass(t *testing.T) {
	t.Parallel()
	block := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer block.Close()
	for _, tc := range []struct {
		name   string
		params map[string]map[string]any
		task   string
	}{
		{"shell", map[string]map[string]any{"exec": {"command": []any{"sleep", "60"}}}, "exec"},
		{"http", map[string]map[string]any{"request": {"url": block.URL}}, "request"},
		{"hello-plugin", nil, "greet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := check(t, filepath.Join(bin, tc.name), plugincheck.Options{Params: tc.params})
			passes(t, rep, append(protocolChecks, plugincheck.CheckRunStream)...) // the Go SDK serves RunStream
			for _, name := range []string{plugincheck.CheckInvalidParams, plugincheck.CheckCancel, plugincheck.CheckDeadline} {
				if r := rep.Result(name, tc.task); r == nil || r.Status != plugincheck.Pass {
					t.Errorf("check %s of task %s: %+v, want pass", name, tc.task, r)
				}
			}
			if tc.params != nil && !strings.Contains(rep.Result(plugincheck.CheckCancel, tc.task).Reason, "after Cancel") {
				t.Errorf("the %s task was not cancelled mid-run: %s", tc.task, rep.Result(plugincheck.CheckCancel, tc.task).Reason)
			}
		})
	}
}

// The Python example passes too: with params that make it wait (cancelled
// mid-run), and with the smallest ones (it finishes, with a span and logs).
func TestPythonExamplePasses(t *testing.T) {
	t.Parallel()
	needPython(t)
	rep := check(t, pythonExample, plugincheck.Options{Params: map[string]map[string]any{"greet": {"name": "check", "wait": "1h"}}})
	passes(t, rep, append(protocolChecks, plugincheck.CheckRunStream)...) // the Python SDK serves RunStream too
	if r := rep.Result(plugincheck.CheckRunStream, ""); !strings.Contains(r.Reason, `after its cancel`) {
		t.Errorf("run-stream: the greet task was not cancelled mid-run on the stream: %s", r.Reason)
	}
	if r := rep.Result(plugincheck.CheckCancel, "greet"); !strings.Contains(r.Reason, `after Cancel (found=true): a result with error "cancelled: pacer-check: cancelled"`) {
		t.Errorf("cancel: %s", r.Reason)
	}
	if r := rep.Result(plugincheck.CheckDeadline, "greet"); !strings.Contains(r.Reason, `"cancelled: timed out after 1s"`) {
		t.Errorf("deadline: %s", r.Reason)
	}
	rep = check(t, pythonExample, plugincheck.Options{Only: []string{plugincheck.CheckIdentity}})
	if r := rep.Result(plugincheck.CheckIdentity, "greet"); r == nil || r.Status != plugincheck.Pass || !strings.Contains(r.Reason, "2 span(s)") {
		t.Errorf("identity: %+v", r)
	}
}

// Each way of breaking the protocol fails its check, saying why.
func TestBrokenPluginsFail(t *testing.T) {
	t.Parallel()
	needPython(t)
	for _, tc := range []struct {
		mode, check string
		only        []string
		want        string
	}{
		{"no-cookie-check", plugincheck.CheckCookie, nil, "want no handshake without PACER_PLUGIN_COOKIE"},
		{"noise-before-handshake", plugincheck.CheckHandshake, nil, `got "starting up" (print nothing before the handshake)`},
		{"no-tls", plugincheck.CheckAutoMTLS, nil, "want the plugin's certificate in field 6"},
		{"unguarded-stdout", plugincheck.CheckStdout, []string{plugincheck.CheckCancel, plugincheck.CheckStdout}, `starting "unguarded noise\n`},
		{"orphan", plugincheck.CheckSIGTERM, nil, "want an exit within 1s of SIGTERM"},
		{"orphan", plugincheck.CheckParentDeath, nil, "want an exit within 1s of its parent's death"},
		{"bad-schema", plugincheck.CheckDescribe, nil, `uses "patternProperties" at #, "minLength" at #/properties/name, which the runner ignores`},
		{"accepts-anything", plugincheck.CheckInvalidParams, nil, `to end the Run with status InvalidArgument; got a successful result (output "anything goes")`},
		{"foreign-span", plugincheck.CheckIdentity, nil, `span "stray" of run 1 has trace ID`},
		{"hang", plugincheck.CheckCancel, nil, "want the run to end within 1s of Cancel"},
		{"hang", plugincheck.CheckDeadline, nil, "want a run with a 1s timeout to end within 1s of it"},
		{"slow-shutdown", plugincheck.CheckShutdown, nil, "it was still running and was killed"},
		{"false-run-stream", plugincheck.CheckRunStream, nil, "declares capabilities.run_stream: want RunStream to open with an empty message"},
		// Attack 14, K10: before, the broken run passed as "ended before it
		// could be cancelled", and the checks after it ran against the
		// dead plugin.
		{"exit", plugincheck.CheckCancel, []string{plugincheck.CheckCancel, plugincheck.CheckShutdown}, "during this check"},
		{"exit-leaving-a-child", plugincheck.CheckCancel, []string{plugincheck.CheckCancel, plugincheck.CheckShutdown}, "during this check"},
	} {
		t.Run(tc.mode+"/"+tc.check, func(t *testing.T) {
			t.Parallel()
			only := tc.only
			if only == nil {
				only = []string{tc.check}
			}
			rep := check(t, badPlugin, plugincheck.Options{Env: []string{"BADPLUGIN=" + tc.mode}, Grace: time.Second, Only: only})
			r := rep.Result(tc.check, "")
			if r == nil || r.Status != plugincheck.Fail || !strings.Contains(r.Reason, tc.want) {
				t.Fatalf("check %s: %+v, want a failure saying %q", tc.check, r, tc.want)
			}
			if rep.OK() {
				t.Fatal("the report says OK")
			}
			if strings.HasPrefix(tc.mode, "exit") { // the check after it has a new process
				if r := rep.Result(plugincheck.CheckShutdown, ""); r == nil || r.Status != plugincheck.Pass {
					t.Fatalf("shutdown after the task ended the process: %+v, want a pass on a new process", r)
				}
			}
		})
	}
}

// The checker starts the plugin with the runner's minimal environment, not
// its own: a plugin that needs a variable of the caller's environment fails
// to start, as it would under the runner, unless InheritEnv names it (as
// plugins.inherit_env would) or Env sets it. Every process the checker
// starts is started so: go-plugin's and the parent-death check's.
func TestPluginGetsTheRunnersEnvironment(t *testing.T) {
	needPython(t)
	// Not parallel: it sets this process's environment.
	t.Setenv("PLUGINCHECK_DB_URL", "postgres://db.internal/app")
	only := []string{plugincheck.CheckHandshake, plugincheck.CheckParentDeath}
	for _, tc := range []struct {
		name   string
		opts   plugincheck.Options
		starts bool
	}{
		{"not passed", plugincheck.Options{}, false},
		{"inherited", plugincheck.Options{InheritEnv: []string{"PLUGINCHECK_DB_*"}}, true},
		{"set", plugincheck.Options{Env: []string{"PLUGINCHECK_DB_URL=x"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Env = append(tc.opts.Env, "BADPLUGIN=needs-env")
			tc.opts.Grace, tc.opts.Only = time.Second, only
			rep := check(t, badPlugin, tc.opts)
			for _, ch := range only {
				// Without the variable the parent-death check skips: the
				// plugin never handshakes under its stand-in runner.
				if r := rep.Result(ch, ""); r == nil || (r.Status == plugincheck.Pass) != tc.starts {
					t.Errorf("check %s: %+v, want a pass: %v", ch, r, tc.starts)
				}
			}
		})
	}
}

// A task that ignores cancellation, or ends the process, fails in a Go
// plugin too; the checker restarts the process and goes on.
func TestGoTestPluginFailures(t *testing.T) {
	t.Parallel()
	rep := check(t, filepath.Join(bin, "testplugin"), plugincheck.Options{
		Grace:  time.Second,
		Params: map[string]map[string]any{"hang": {"duration": "1h"}, "sleep": {"duration": "1h"}},
		Only: []string{plugincheck.CheckCancel, plugincheck.CheckDeadline,
			plugincheck.CheckIdentity, plugincheck.CheckShutdown},
	})
	// Only the task that ends the process is blamed for it: each check of
	// crash (it is restarted for each), none of the tasks after it.
	for _, r := range rep.Results {
		if strings.Contains(r.Reason, "exited (exit status 3)") && r.Task != "crash" {
			t.Errorf("%s of %s blamed for crash's exit: %s", r.Check, r.Task, r.Reason)
		}
	}
	for task, want := range map[string]string{
		"hang":  "want the run to end within 1s of Cancel",
		"crash": "it exited (exit status 3) during this check",
	} {
		if r := rep.Result(plugincheck.CheckCancel, task); r == nil || r.Status != plugincheck.Fail || !strings.Contains(r.Reason, want) {
			t.Errorf("cancel of %s: %+v, want a failure saying %q", task, r, want)
		}
	}
	// Tasks after the crash still ran, in a new process.
	if r := rep.Result(plugincheck.CheckCancel, "sleep"); r == nil || r.Status != plugincheck.Pass || !strings.Contains(r.Reason, "after Cancel (found=true)") {
		t.Errorf("cancel of sleep (after the crash): %+v", r)
	}
}

func TestNotAPlugin(t *testing.T) {
	t.Parallel()
	rep := check(t, filepath.Join("testdata", "no-such-file"), plugincheck.Options{})
	if r := rep.Result(plugincheck.CheckHandshake, ""); r == nil || r.Status != plugincheck.Fail || !strings.Contains(r.Reason, "no such file") {
		t.Fatalf("handshake: %+v", r)
	}
	if rep.Skipped != len(plugincheck.All)-1 {
		t.Fatalf("%d skipped, want every other check", rep.Skipped)
	}
}

// A plugin that crashes at start, with the cookie or without (a Python
// plugin whose import fails): the cookie check cannot tell its exit from a
// refusal to run by hand, so it does not pass, and the handshake failure
// quotes the end of its stderr, where the error is.
func TestCrashAtStartIsNoCookiePass(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "crash")
	traceback := `Traceback (most recent call last):
  File "/srv/plugins/crash", line 12, in <module>
    from pacer_sdk import Plugin, task, Result
  File "/usr/lib/python3/dist-packages/pacer_sdk/__init__.py", line 40, in <module>
    from .params import schema_of
  File "/usr/lib/python3/dist-packages/pacer_sdk/params.py", line 300, in schema_of
    raise TypeError(f"{cls.__name__}.{f.name}: default {default!r} does not fit the field: {err}")
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
TypeError: P.n: default 10 does not fit the field: default: must be <= 5, got 10`
	script := "#!/bin/sh\ncat >&2 <<'EOF'\n" + traceback + "\nEOF\nexit 1\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	const lastLine = "TypeError: P.n: default 10 does not fit the field: default: must be <= 5, got 10"
	for _, only := range [][]string{
		{plugincheck.CheckCookie, plugincheck.CheckHandshake},
		{plugincheck.CheckCookie}, // no session: the cookie check starts it with the cookie itself
	} {
		rep := check(t, path, plugincheck.Options{Only: only})
		r := rep.Result(plugincheck.CheckCookie, "")
		if r == nil || r.Status != plugincheck.Skip || !strings.Contains(r.Reason, "with PACER_PLUGIN_COOKIE set too") ||
			!strings.Contains(r.Reason, lastLine) {
			t.Errorf("only %v: cookie: %+v, want a skip quoting the last line of stderr", only, r)
		}
		if len(only) == 1 {
			continue
		}
		if r := rep.Result(plugincheck.CheckHandshake, ""); r == nil || r.Status != plugincheck.Fail || !strings.Contains(r.Reason, lastLine) {
			t.Errorf("handshake: %+v, want a failure quoting the last line of stderr", r)
		}
	}
}
