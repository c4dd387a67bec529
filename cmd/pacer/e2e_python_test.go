package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exportedSpan is a span as the stdout trace exporter writes it.
type exportedSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s exportedSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

// exportedSpans parses what the stdout exporter wrote.
func exportedSpans(t *testing.T, out string) []exportedSpan {
	t.Helper()
	var spans []exportedSpan
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var s exportedSpan
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("the runner's stdout is not a stream of spans: %v\n%s", err, out)
		}
		spans = append(spans, s)
	}
	return spans
}

// The Python example plugin through a real runner: its log lines carry each
// run's correlation ID, run ID and trace ID; its span, exported by the runner
// (stdout exporter), hangs under the RPC span under pacer.run in the run's
// trace; a run past its timeout is cancelled inside the plugin, which stops in
// time and is not killed; the plugin process exits with the runner.
func TestE2EPythonPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process and the Python plugin (skipped with -short)")
	}
	t.Parallel()
	needPython(t)
	example, err := filepath.Abs(filepath.Join("..", "..", "examples", "python-plugin", "hello_python.py"))
	must(err)
	httpAddr := freeAddr(t)
	p := startPacer(t, "py-1", httpAddr, runnerConfig{node: "py-1", cluster: "e2e",
		plugins: "paths: {hello-python: " + example + "}, cancel_grace: 5s"}.head(t, httpAddr)+`observability:
  tracing: {exporter: stdout}
jobs:
  - id: greet-py
    plugin: hello-python
    task: greet
    schedule: "@every 1s"
    timeout: 10s
    params: {name: "Ada alice@example.com", greeting: hi}
  - id: wait-py
    plugin: hello-python
    task: greet
    schedule: "@every 1s"
    timeout: 1s
    params: {name: Bo, wait: 1h}
`)

	finished := func(job, outcome string) func(logLine) bool {
		return func(l logLine) bool {
			return l.str("msg") == "run finished" && l.str("job") == job && l.str("outcome") == outcome
		}
	}
	lines := p.waitLogs("two successful greet-py runs and two timed-out wait-py runs", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, finished("greet-py", "success"))) >= 2 && len(match(ls, finished("wait-py", "timeout"))) >= 2
	})

	// Logs keyed by correlation ID: the plugin's own line of each run
	// carries the run's fields, and its attributes, sanitized.
	for _, fin := range match(lines, finished("greet-py", "success")) {
		corr := fin.str("correlation_id")
		var greeting logLine
		for _, l := range match(lines, func(l logLine) bool { return l.str("correlation_id") == corr }) {
			if l.str("run_id") != fin.str("run_id") || l.str("trace_id") != fin.str("trace_id") || l.str("job") != "greet-py" {
				t.Fatalf("line of run %s with other fields: %v", corr, l)
			}
			if l.str("source") == "plugin" && l.str("msg") == "greeting" {
				greeting = l
			}
		}
		if greeting == nil {
			t.Fatalf("run %s: no plugin line with its correlation ID", corr)
		}
		if greeting.str("plugin") != "hello-python" || greeting.str("name") != "Ada [email]" || greeting["attempt"] != float64(1) {
			t.Fatalf("the plugin's line: %v", greeting)
		}
	}
	// print() in the task reached the runner's log, not the protocol.
	if len(match(lines, func(l logLine) bool {
		return l.str("source") == "plugin-stdout" && strings.HasPrefix(l.str("msg"), "hello-python greeted Ada")
	})) == 0 {
		t.Error("the task's print() did not reach the runner's log")
	}

	// Cancellation on timeout: the task saw it within the run and returned;
	// the runner did not have to kill the process.
	for _, fin := range match(lines, finished("wait-py", "timeout"))[:2] {
		corr := fin.str("correlation_id")
		saw := match(lines, func(l logLine) bool {
			return l.str("correlation_id") == corr && l.str("source") == "plugin" && l.str("msg") == "cancelled while waiting"
		})
		if len(saw) != 1 || !strings.Contains(saw[0].str("reason"), "timed out after") {
			t.Fatalf("run %s: the plugin's cancellation lines %v", corr, saw)
		}
		if !strings.Contains(fin.str("error"), "cancelled: timed out after") {
			t.Errorf("run %s ended with %q, want the plugin's answer", corr, fin.str("error"))
		}
		if d, err := time.ParseDuration(fin.str("duration")); err == nil && d > 3*time.Second {
			t.Errorf("run %s took %s past a 1s timeout", corr, d)
		}
	}
	if got := match(p.logs(), msgIs("task ignored cancellation; killing the plugin process")); len(got) > 0 {
		t.Fatalf("the runner killed the plugin: %v", got)
	}
	pids := pluginPIDs(p.logs())
	if len(pids) != 1 {
		t.Fatalf("plugin started %d times (%v), want once", len(pids), pids)
	}
	if v := p.metric("pacer_plugin_restarts_total", `plugin="hello-python"`); v > 0 {
		t.Fatalf("pacer_plugin_restarts_total = %v", v)
	}

	// Its span, under the run's trace: flushed at shutdown.
	corr := match(lines, finished("greet-py", "success"))[0].str("correlation_id")
	traceID := match(lines, finished("greet-py", "success"))[0].str("trace_id")
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	waitGone(t, pids[0], 10*time.Second)

	spans := exportedSpans(t, p.stdout.String())
	byID := map[string]exportedSpan{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID] = s
	}
	var ours []exportedSpan
	for _, s := range spans {
		if s.SpanContext.TraceID == traceID && s.Name == "compose greeting" {
			ours = append(ours, s)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("%d 'compose greeting' spans in trace %s (run %s), want 1; %d spans exported", len(ours), traceID, corr, len(spans))
	}
	py := ours[0]
	rpc := byID[py.Parent.SpanID]
	if rpc.Name != "pacer.plugin.v1.TaskPlugin/Run" || rpc.SpanContext.TraceID != traceID {
		t.Fatalf("the Python span's parent is %q in trace %s, want the RPC span in %s", rpc.Name, rpc.SpanContext.TraceID, traceID)
	}
	if run := byID[rpc.Parent.SpanID]; run.Name != "pacer.run" || run.attr("pacer.correlation_id") != corr {
		t.Fatalf("the RPC span's parent is %q (correlation ID %q), want pacer.run of run %s", run.Name, run.attr("pacer.correlation_id"), corr)
	}
	if py.attr("pacer.plugin") != "hello-python" || py.attr("name") != "Ada [email]" {
		t.Fatalf("the Python span's attributes: pacer.plugin %q, name %q (want hello-python and the sanitized name)", py.attr("pacer.plugin"), py.attr("name"))
	}
}

// A Python plugin whose task is inside one long C call that keeps the GIL
// when its runner is killed (attack 18, R5): its SIGTERM handler and parent
// poll cannot run, so the SDK's watchdog process kills it, before the call
// returns and the task's code after it (a side effect with no runner) runs.
func TestE2EPythonPluginHoldingTheGILDiesWithItsRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process and a Python plugin (skipped with -short)")
	}
	t.Parallel()
	needPython(t)
	plugin, err := filepath.Abs(filepath.Join("..", "..", "sdk", "python", "tests", "plugins", "testplugin.py"))
	must(err)
	dir := t.TempDir()
	started, effect := filepath.Join(dir, "started"), filepath.Join(dir, "effect")
	httpAddr := freeAddr(t)
	p := startPacer(t, "py-gil", httpAddr, runnerConfig{node: "py-gil", cluster: "e2e",
		plugins: "paths: {testplugin: " + plugin + "}"}.head(t, httpAddr)+fmt.Sprintf(`jobs:
  - id: hold
    plugin: testplugin
    task: gil
    schedule: "@every 1s"
    timeout: 5m
    params: {seconds: 120, started: %q, file: %q}
`, started, effect))
	lines := p.waitLogs("the run to start", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("run started"))) > 0 && len(pluginPIDs(ls)) > 0
	})
	pid := pluginPIDs(lines)[0]
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the task did not start its call within 30 s")
		}
	}
	p.signal(syscall.SIGKILL)
	p.wait(30 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the plugin (pid %d), its task in a 120 s call holding the GIL, still runs 30 s after its runner's kill -9", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(effect); err == nil {
		t.Fatal("the task ran on after its runner died")
	}
}
