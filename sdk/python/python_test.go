// Package python_test runs the Python SDK's tests and the Python example's
// tests from "go test ./...", so that "make test" and CI fail when they fail.
// They need Debian's python3 with python3-grpcio, python3-protobuf and
// python3-cryptography ("make deps" installs them); $PYTHON overrides the
// interpreter.
package python_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Python returns the interpreter the SDK is tested with, and fails the test
// with what to install when it lacks the SDK's dependencies.
func Python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	out, err := exec.Command(py, "-c", "import grpc, google.protobuf, cryptography").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import the Python SDK's dependencies (%v): run make deps, which installs "+
			"python3-grpcio, python3-protobuf and python3-cryptography\n%s", py, err, out)
	}
	return py
}

func unittest(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(Python(t), append([]string{"-m", "unittest"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python -m unittest %v in %s: %v\n%s", args, dir, err, out)
	}
	t.Logf("%s", out)
}

// The SDK's own tests: the params checker against the runner's cases,
// typed params, runs in process and plugin processes over the real protocol.
func TestPythonSDK(t *testing.T) {
	t.Parallel()
	unittest(t, ".", "discover", "-s", "tests", "-t", ".", "-v")
}

// The example's tests, as its author would run them.
func TestPythonExample(t *testing.T) {
	t.Parallel()
	unittest(t, filepath.Join("..", "..", "examples", "python-plugin"), "discover", "-p", "test_*.py", "-v")
}

// The keywords the Python SDK publishes in its schemas are exactly the ones
// the runner's checker knows (the JSON names of paramschema.Schema's fields):
// when the runner learns a keyword, the SDK must publish it too, and never
// one the runner would ignore.
func TestPythonPublishesTheRunnersKeywords(t *testing.T) {
	want := []string{"additionalProperties"}
	st := reflect.TypeFor[paramschema.Schema]()
	for i := range st.NumField() {
		if !st.Field(i).IsExported() {
			continue
		}
		if name, _, _ := strings.Cut(st.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	cmd := exec.Command(Python(t), "-c", "import json; from pacer_sdk import _schema; print(json.dumps(sorted(_schema.KEYWORDS)))")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pacer_sdk._schema.KEYWORDS = %v, the runner checks %v", got, want)
	}
}

// The harness starts a plugin with the runner's minimal environment: the
// Python SDK's list of the variables it keeps is the runner's.
func TestPythonHarnessKeepsTheRunnersBaseEnv(t *testing.T) {
	cmd := exec.Command(Python(t), "-c", "import json; from pacer_sdk import testing; print(json.dumps(list(testing.BASE_ENV)))")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := pluginhost.BaseEnv; !slices.Equal(got, want) {
		t.Fatalf("pacer_sdk.testing.BASE_ENV = %v, the runner keeps %v", got, want)
	}
}

// One call of the example's greet task, the Python example against the Go
// one, through go-plugin's client as the runner calls it (a span, a log line,
// progress and a result each):
//
//	go test -run '^$' -bench BenchmarkGreet -count 3 ./sdk/python/
func BenchmarkGreet(b *testing.B) {
	goBin, err := sdktest.BuildBinary(b.TempDir(), "github.com/pacerun/pacer/examples/hello-plugin")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, path string }{
		{"go", goBin},
		{"python", filepath.Join("..", "..", "examples", "python-plugin", "hello_python.py")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := sdktest.Start(b, bc.path)
			call := sdktest.Call{Task: "greet", Params: map[string]any{"name": "bench"}}
			b.ResetTimer()
			for b.Loop() {
				if res := h.Run(b.Context(), call); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

// One run of a Python task that does nothing, through the runner's plugin
// host, called per run (a Run call each, as before the SDK served
// RunStream) and over RunStream. Besides wall time it reports the CPU time
// each side spent per run (runner-cpu-us/op: this process, Linux;
// plugin-cpu-us/op: the plugin process's, from /proc), which a shared
// machine disturbs less:
//
//	go test -run '^$' -bench BenchmarkPythonNoop -count 3 ./sdk/python/
func BenchmarkPythonNoop(b *testing.B) {
	plugin, err := filepath.Abs(filepath.Join("tests", "plugins", "testplugin.py"))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		perRun bool
	}{{"per_run", true}, {"run_stream", false}} {
		b.Run(bc.name, func(b *testing.B) {
			h := pluginhost.New(pluginhost.Options{Paths: map[string]string{"testplugin": plugin}, DisableRunStream: bc.perRun})
			defer h.Close()
			c := pluginhost.Call{Plugin: "testplugin", Task: "noop",
				Info: pluginhost.RunInfo{JobID: "j", RunID: "r", CorrelationID: "c", Attempt: 1, Node: "n", ScheduledTime: time.Now()}}
			if _, err := h.Run(b.Context(), c); err != nil { // the process starts
				b.Fatal(err)
			}
			want := map[bool]string{true: "per_run", false: "run_stream"}[bc.perRun]
			for _, st := range h.Status() {
				if st.Transport != want {
					b.Fatalf("transport %q, want %q", st.Transport, want)
				}
			}
			var pid int
			for _, st := range h.Status() {
				pid = st.PID
			}
			runner0, plugin0 := selfCPU(), procCPU(pid)
			b.ResetTimer()
			for b.Loop() {
				if _, err := h.Run(b.Context(), c); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if runner0 >= 0 && plugin0 >= 0 {
				b.ReportMetric(float64(selfCPU()-runner0)/float64(b.N)/1e3, "runner-cpu-us/op")
				b.ReportMetric(float64(procCPU(pid)-plugin0)/float64(b.N)/1e3, "plugin-cpu-us/op")
			}
		})
	}
}

// selfCPU is the CPU time this process has spent (ns), or -1.
func selfCPU() time.Duration {
	return procCPU(os.Getpid())
}

// procCPU is the CPU time (user + system) process pid has spent, from
// /proc/PID/stat, or -1 where there is none.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ, 100 on Linux
}

// One command run by a Python task through Context.run (its keeper process,
// the subreaper, the scan of the tree after it) against subprocess.run;
// cpu-ms/op is what the plugin process and its children spent in the task:
//
//	go test -run '^$' -bench BenchmarkPythonCommand -count 3 ./sdk/python/
func BenchmarkPythonCommand(b *testing.B) {
	h := sdktest.Start(b, filepath.Join("tests", "plugins", "testplugin.py"))
	for _, bc := range []struct {
		name  string
		plain bool
	}{{"subprocess.run", true}, {"ctx.run", false}} {
		b.Run(bc.name, func(b *testing.B) {
			call := sdktest.Call{Task: "spawn", Params: map[string]any{"args": []any{"/bin/true"}, "plain": bc.plain}}
			cpu := 0.0
			for b.Loop() {
				res := h.Run(b.Context(), call)
				if res.Err != nil || res.Output != "0" {
					b.Fatalf("%+v", res)
				}
				cpu += res.Data["cpu"].(float64)
			}
			b.ReportMetric(cpu/float64(b.N)*1e3, "cpu-ms/op")
		})
	}
}
