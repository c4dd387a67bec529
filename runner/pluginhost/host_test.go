package pluginhost_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/sdktest"
)

var pluginDir string

// noRunStreamDir holds testdata/norunstream, apart from the other plugins.
var noRunStreamDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pacer-pluginhost-")
	if err != nil {
		panic(err)
	}
	pluginDir = dir
	for _, pkg := range []string{"github.com/pacerun/pacer/internal/testplugins/testplugin", "github.com/pacerun/pacer/plugins/shell"} {
		if _, err := sdktest.BuildBinary(dir, pkg); err != nil {
			panic(err)
		}
	}
	noRunStreamDir = filepath.Join(dir, "norunstream.d")
	if _, err := sdktest.BuildBinary(noRunStreamDir, "./testdata/norunstream"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

type bundle struct {
	host *pluginhost.Host
	rec  *tracetest.SpanRecorder
}

func setup(t *testing.T, opts pluginhost.Options) *bundle {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	if opts.Dir == "" {
		opts.Dir = pluginDir
	}
	opts.TracerProvider = tp
	h := pluginhost.New(opts)
	t.Cleanup(func() {
		h.Close()
		_ = tp.Shutdown(context.Background())
	})
	return &bundle{host: h, rec: rec}
}

// transport is a way the host calls a plugin: over the process's RunStream
// (the Go SDK's plugins offer it), or with one Run call per run.
type transport struct {
	name   string
	perRun bool
}

var transports = []transport{{"run_stream", false}, {"per_run", true}}

// opts returns o for the transport.
func (tr transport) opts(o pluginhost.Options) pluginhost.Options {
	o.DisableRunStream = tr.perRun
	return o
}

// eachTransport runs test once per transport, in parallel subtests.
func eachTransport(t *testing.T, test func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			test(t, tr)
		})
	}
}

func call(task string, params map[string]any) pluginhost.Call {
	return pluginhost.Call{
		Plugin: "testplugin", Task: task, Params: params,
		Info: pluginhost.RunInfo{JobID: "job-1", RunID: "run-1", CorrelationID: "corr-1", Attempt: 1, FencingToken: 42, Node: "n1", Shard: 5,
			ScheduledTime: time.Date(2026, 11, 28, 12, 0, 5, 0, time.UTC)},
	}
}

func TestRunEchoStreamsLogsAndProgress(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		var mu sync.Mutex
		var logs, progress []string
		c := call("echo", map[string]any{"message": "hi there"})
		c.OnLog = func(l pluginhost.LogRecord) {
			mu.Lock()
			defer mu.Unlock()
			logs = append(logs, fmt.Sprint(l.Level, " ", l.Message, " ", l.Attrs))
		}
		c.OnProgress = func(p pluginhost.Progress) { progress = append(progress, fmt.Sprint(p.Percent, " ", p.Message)) }
		res, err := b.host.Run(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if res.Output != "hi there" || res.TaskError != "" {
			t.Fatalf("result = %+v", res)
		}
		if len(logs) != 1 || logs[0] != "INFO echo [message=hi there]" {
			t.Fatalf("logs = %q", logs)
		}
		if len(progress) != 1 || progress[0] != "100 echoed" {
			t.Fatalf("progress = %q", progress)
		}
	})
}

func TestRunContextAndTraceCrossIntoPlugin(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		tracer := sdktrace.NewTracerProvider().Tracer("test")
		ctx, span := tracer.Start(context.Background(), "parent")
		defer span.End()
		res, err := b.host.Run(ctx, call("env", nil))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"job_id": "job-1", "run_id": "run-1", "correlation_id": "corr-1",
			"attempt": float64(1), "fencing_token": float64(42), "node": "n1", "shard": float64(5), "scheduled_time": "2026-11-28T12:00:05Z"}
		for k, v := range want {
			if res.Data[k] != v {
				t.Errorf("%s = %v, want %v", k, res.Data[k], v)
			}
		}
		if got := res.Data["trace_id"]; got != span.SpanContext().TraceID().String() {
			t.Errorf("plugin saw trace %v, want %s", got, span.SpanContext().TraceID())
		}
		// The RPC is a client span in the caller's trace.
		var rpc bool
		for _, s := range b.rec.Ended() {
			if strings.Contains(s.Name(), "TaskPlugin/Run") && s.Parent().TraceID() == span.SpanContext().TraceID() {
				rpc = true
			}
		}
		if !rpc {
			t.Errorf("no client span for the Run RPC under the caller's trace")
		}
	})
}

func TestBadCallsFailCleanlyAndPluginStaysUp(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		tests := []struct {
			name    string
			call    pluginhost.Call
			wantErr error
			wantMsg string
		}{
			{"unknown task", call("nope", nil), pluginhost.ErrTaskNotFound, `no task "nope"`},
			{"invalid params", call("echo", map[string]any{"mesage": "typo"}), pluginhost.ErrInvalidParams, `unknown field "mesage"`},
			{"task error", call("fail", map[string]any{"message": "disk full"}), nil, "disk full"},
			{"panic", call("panic", map[string]any{"message": "boom"}), nil, "panicked: boom"},
			{"stdout noise", call("stdout", map[string]any{"message": "noise"}), nil, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res, err := b.host.Run(context.Background(), tc.call)
				switch {
				case tc.wantErr != nil:
					if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
						t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
					}
				case tc.wantMsg == "":
					if err != nil || res.TaskError != "" {
						t.Fatalf("err = %v, res = %+v", err, res)
					}
				default:
					msg := ""
					if err != nil {
						msg = err.Error()
					} else {
						msg = res.TaskError
					}
					if !strings.Contains(msg, tc.wantMsg) {
						t.Fatalf("error %q does not contain %q", msg, tc.wantMsg)
					}
				}
				// The plugin still answers.
				if res, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "ok"})); err != nil || res.Output != "ok" {
					t.Fatalf("plugin not usable after %s: %v", tc.name, err)
				}
			})
		}
	})
}

func TestCrashIsReportedAndPluginRestarts(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		before, err := b.host.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.host.Run(context.Background(), call("crash", nil))
		if !errors.Is(err, pluginhost.ErrPluginCrashed) {
			t.Fatalf("err = %v, want ErrPluginCrashed", err)
		}
		after, err := b.host.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatalf("no restart after crash: %v", err)
		}
		if before.Data["pid"] == after.Data["pid"] {
			t.Fatalf("same pid %v after a crash", after.Data["pid"])
		}
	})
}

func TestTimeoutCancelsTheTask(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		// Start the plugin first: this test is about a task reaching its deadline.
		if _, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "warm"})); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		res, err := b.host.Run(ctx, call("sleep", map[string]any{"duration": "1h"}))
		// The task saw its deadline and answered in time: its own answer comes back.
		if err != nil || !strings.Contains(res.TaskError, "interrupted") {
			t.Fatalf("err = %v, res = %+v; want the task's own interrupted error", err, res)
		}
		// The plugin enforces the deadline itself, so its answer may arrive a
		// moment before this context's own timer fires: compare with the
		// deadline, not ctx.Err().
		if dl, _ := ctx.Deadline(); time.Now().Before(dl) {
			t.Fatal("returned before the deadline")
		}
	})
}

func TestTaskIgnoringCancellationIsKilledAndReplaced(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		m, err := observability.NewMetrics("test")
		if err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		var logMu sync.Mutex
		logger := slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logged}, nil))
		b := setup(t, tr.opts(pluginhost.Options{CancelGrace: 300 * time.Millisecond, RestartBackoff: time.Millisecond, Metrics: m, Logger: logger}))
		before, err := b.host.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		ctx, span := sdktrace.NewTracerProvider().Tracer("t").Start(ctx, "pacer.run")
		defer span.End()
		_, err = b.host.Run(ctx, call("hang", nil))
		if !errors.Is(err, pluginhost.ErrPluginKilled) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want ErrPluginKilled and DeadlineExceeded", err)
		}
		waitGone(t, int(before.Data["pid"].(float64)))
		after, err := b.host.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatal(err)
		}
		if after.Data["pid"] == before.Data["pid"] {
			t.Fatal("same process after a kill")
		}
		if got := testutil.ToFloat64(m.PluginRestarts.WithLabelValues("testplugin", pluginhost.ReasonHung)); got != 1 {
			t.Fatalf("restarts{reason=hung} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(m.PluginUp.WithLabelValues("testplugin")); got != 1 {
			t.Fatalf("plugin_up = %v after restart, want 1", got)
		}
		// The kill's log line names the run as every line of a run does.
		logMu.Lock()
		defer logMu.Unlock()
		var line map[string]any
		for l := range strings.SplitSeq(logged.String(), "\n") {
			if strings.Contains(l, "task ignored cancellation") {
				_ = json.Unmarshal([]byte(l), &line)
			}
		}
		for _, k := range []string{"correlation_id", "job", "run_id", "trace_id"} {
			if v, _ := line[k].(string); v == "" {
				t.Errorf("the kill's log line %v has no %s", line, k)
			}
		}
		if line["trace_id"] != span.SpanContext().TraceID().String() {
			t.Errorf("the kill's log line has trace_id %v, want the run's %s", line["trace_id"], span.SpanContext().TraceID())
		}
	})
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestCrashLoopIsQuarantined(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{RestartBackoff: time.Millisecond, MaxRestartBackoff: time.Millisecond,
		QuarantineCrashes: 3, QuarantineWindow: time.Minute, QuarantineFor: time.Hour})
	for i := range 3 {
		if _, err := b.host.Run(context.Background(), call("crash", nil)); !errors.Is(err, pluginhost.ErrPluginCrashed) {
			t.Fatalf("crash %d: err = %v", i, err)
		}
	}
	_, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "x"}))
	if !errors.Is(err, pluginhost.ErrPluginQuarantined) || !strings.Contains(err.Error(), "failed 3 times within 1m0s, the last time because it crashed") ||
		!strings.Contains(err.Error(), "pacer plugins restart testplugin") {
		t.Fatalf("err = %v, want ErrPluginQuarantined saying why and how to end it", err)
	}
	st := b.host.Status()
	for _, s := range st {
		if s.Name == "testplugin" && (s.State != "quarantined" || s.Cause != pluginhost.CauseCrashed || !strings.Contains(s.LastError, "exited on its own")) {
			t.Fatalf("status = %+v, want quarantined, cause crashed", s)
		}
	}
}

// pacer_plugin_up is 0 for a plugin that crashed and is idle (as on a
// standby, whose plugins start only when a run needs them): that alone is no
// outage. pacer_plugin_unavailable says a call needed the plugin and got no
// process; pacer_plugin_quarantined covers the quarantine and clears when it
// ends, without waiting for a call.
func TestPluginUnavailableOnlyWhenNeeded(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pluginhost.Options{RestartBackoff: time.Millisecond, MaxRestartBackoff: time.Millisecond,
		QuarantineCrashes: 2, QuarantineWindow: time.Minute, QuarantineFor: 500 * time.Millisecond, Metrics: m})
	gauge := func(g interface {
		WithLabelValues(...string) prometheus.Gauge
	}, plugin string) float64 {
		return testutil.ToFloat64(g.WithLabelValues(plugin))
	}

	// Crashed once, then idle: down, but neither unavailable nor quarantined.
	if _, err := b.host.Run(context.Background(), call("crash", nil)); !errors.Is(err, pluginhost.ErrPluginCrashed) {
		t.Fatalf("crash: err = %v", err)
	}
	if up, un, q := gauge(m.PluginUp, "testplugin"), gauge(m.PluginUnavailable, "testplugin"), gauge(m.PluginQuarantined, "testplugin"); up != 0 || un != 0 || q != 0 {
		t.Fatalf("idle after a crash: up=%v unavailable=%v quarantined=%v, want 0 0 0", up, un, q)
	}

	// A second crash quarantines it; a call during the quarantine finds it
	// unavailable.
	if _, err := b.host.Run(context.Background(), call("crash", nil)); !errors.Is(err, pluginhost.ErrPluginCrashed) {
		t.Fatalf("crash 2: err = %v", err)
	}
	if q := gauge(m.PluginQuarantined, "testplugin"); q != 1 {
		t.Fatalf("quarantined = %v after 2 crashes, want 1", q)
	}
	if _, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "x"})); !errors.Is(err, pluginhost.ErrPluginQuarantined) {
		t.Fatalf("during quarantine: err = %v, want ErrPluginQuarantined", err)
	}
	if un := gauge(m.PluginUnavailable, "testplugin"); un != 1 {
		t.Fatalf("unavailable = %v after a call was refused, want 1", un)
	}

	// The quarantine ends by itself; the next call starts a process.
	deadline := time.Now().Add(10 * time.Second)
	for gauge(m.PluginQuarantined, "testplugin") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("pacer_plugin_quarantined still 1 long after the quarantine ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "x"})); err != nil {
		t.Fatalf("after the quarantine: %v", err)
	}
	if up, un := gauge(m.PluginUp, "testplugin"), gauge(m.PluginUnavailable, "testplugin"); up != 1 || un != 0 {
		t.Fatalf("after a successful start: up=%v unavailable=%v, want 1 0", up, un)
	}

	// A plugin whose binary cannot start is unavailable as soon as a call
	// needs it.
	c := call("echo", nil)
	c.Plugin = "missing"
	if _, err := b.host.Run(context.Background(), c); !errors.Is(err, pluginhost.ErrPluginNotFound) {
		t.Fatalf("missing plugin: err = %v", err)
	}
	if un := gauge(m.PluginUnavailable, "missing"); un != 1 {
		t.Fatalf("unavailable{missing} = %v, want 1", un)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{MaxConcurrency: 1})
	started := make(chan struct{})
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		c := call("sleep", map[string]any{"duration": "1h"})
		c.OnProgress = nil
		close(started)
		_, err := b.host.Run(ctx, c)
		done <- err
	}()
	<-started
	// Wait until the first call holds the only slot.
	deadline := time.Now().Add(10 * time.Second)
	for {
		short, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := b.host.Run(short, call("echo", map[string]any{"message": "x"}))
		scancel()
		if err != nil && strings.Contains(err.Error(), "waiting for a free slot") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second call never waited for a slot: %v", err)
		}
	}
	cancel()
	<-done
}

func TestLogFloodIsBounded(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		m, err := observability.NewMetrics("test")
		if err != nil {
			t.Fatal(err)
		}
		b := setup(t, tr.opts(pluginhost.Options{LogLinesPerSecond: 10, LogBurst: 50, Metrics: m}))
		var got []pluginhost.LogRecord
		c := call("flood", map[string]any{"count": 20000})
		c.OnLog = func(l pluginhost.LogRecord) { got = append(got, l) }
		start := time.Now()
		res, err := b.host.Run(context.Background(), c)
		elapsed := time.Since(start)
		if err != nil || res.Output != "logged 20000 lines" {
			t.Fatalf("err = %v res = %+v", err, res)
		}
		// At most the burst plus the rate over the run, plus the final report.
		limit := 50 + int(10*elapsed.Seconds()) + 2
		last := got[len(got)-1]
		if len(got) > limit || !strings.Contains(last.Message, "plugin log lines dropped") {
			t.Fatalf("%d lines passed in %s (limit %d); last %q", len(got), elapsed, limit, last.Message)
		}
		if dropped := testutil.ToFloat64(m.PluginLogsDropped.WithLabelValues("testplugin")); dropped < 19000 {
			t.Fatalf("dropped = %v", dropped)
		}
		if n := last.Attrs[0].Value.Float64(); last.Level != slog.LevelWarn || last.Attrs[0].Key != "dropped_lines" ||
			int(n) != 20000-(len(got)-1) {
			t.Fatalf("the report of dropped lines: %v %q %v, want WARN and dropped_lines %d", last.Level, last.Message, last.Attrs, 20000-(len(got)-1))
		}
	})
}

func TestOversizedResultFailsCleanly(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		res, err := b.host.Run(context.Background(), call("big", map[string]any{"count": 8 << 20}))
		if err != nil || !strings.Contains(res.TaskError, "over the") {
			t.Fatalf("err = %v, res.TaskError = %.200q", err, res.TaskError)
		}
		if res, err := b.host.Run(context.Background(), call("big", map[string]any{"count": 1 << 20})); err != nil || len(res.Output) != 1<<20 {
			t.Fatalf("1 MiB result: err = %v", err)
		}
	})
}

func TestPluginSpansAreImportedUnderTheRun(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		var mu sync.Mutex
		var imported []sdktrace.ReadOnlySpan
		b := setup(t, tr.opts(pluginhost.Options{
			ImportSpan: func(s sdktrace.ReadOnlySpan) { mu.Lock(); imported = append(imported, s); mu.Unlock() },
			Sanitize:   func(s string) string { return strings.ReplaceAll(s, "alice@example.com", "[email]") },
		}))
		tp := sdktrace.NewTracerProvider()
		ctx, root := tp.Tracer("t").Start(context.Background(), "pacer.run")
		res, err := b.host.Run(ctx, call("span", map[string]any{"message": "mail alice@example.com"}))
		root.End()
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(imported) != 1 {
			t.Fatalf("%d spans imported, want 1", len(imported))
		}
		s := imported[0]
		if s.Name() != "testplugin.work" || s.SpanContext().SpanID().String() != res.Data["span_id"] ||
			s.SpanContext().TraceID() != root.SpanContext().TraceID() || !s.Parent().IsValid() {
			t.Fatalf("span %q trace %s parent %v; want testplugin.work in trace %s", s.Name(), s.SpanContext().TraceID(), s.Parent(), root.SpanContext().TraceID())
		}
		// Its parent is the RPC's client span, recorded by the host.
		var rpcSpan string
		for _, e := range b.rec.Ended() {
			if strings.HasSuffix(e.Name(), "TaskPlugin/Run") {
				rpcSpan = e.SpanContext().SpanID().String()
			}
		}
		if s.Parent().SpanID().String() != rpcSpan {
			t.Fatalf("plugin span's parent %s is not the RPC span %s", s.Parent().SpanID(), rpcSpan)
		}
		for _, kv := range s.Attributes() {
			if kv.Key == "note" && kv.Value.AsString() != "mail [email]" {
				t.Fatalf("attribute not sanitized: %q", kv.Value.AsString())
			}
		}
		if len(s.Events()) != 1 || s.Events()[0].Name != "halfway" {
			t.Fatalf("events = %v", s.Events())
		}
	})
}

func TestStatusListsPluginsAndTasks(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	if _, err := b.host.Run(context.Background(), call("echo", map[string]any{"message": "x"})); err != nil {
		t.Fatal(err)
	}
	byName := map[string]pluginhost.Status{}
	for _, s := range b.host.Status() {
		byName[s.Name] = s
	}
	tp, sh := byName["testplugin"], byName["shell"]
	if tp.State != "up" || tp.PID == 0 || tp.Version != "test" || len(tp.Tasks) < 5 {
		t.Fatalf("testplugin status = %+v", tp)
	}
	if sh.State != "not_started" || sh.Path == "" {
		t.Fatalf("shell status = %+v", sh)
	}
}

func TestStartFailures(t *testing.T) {
	t.Parallel()
	notExec := filepath.Join(t.TempDir(), "notexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noHandshake := filepath.Join(t.TempDir(), "nohandshake")
	if err := os.WriteFile(noHandshake, []byte("#!/bin/sh\necho not a plugin\nsleep 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A plugin that dies before its handshake: the error says how it ended,
	// and that it said nothing when it did not.
	exit7 := filepath.Join(t.TempDir(), "exit7")
	if err := os.WriteFile(exit7, []byte("#!/bin/sh\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	crash := filepath.Join(t.TempDir(), "crash")
	if err := os.WriteFile(crash, []byte("#!/bin/sh\necho 'ModuleNotFoundError: grpcx' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    pluginhost.Options
		plugin  string
		wantErr error
		wantMsg string
	}{
		{"exits at start, silent", pluginhost.Options{Paths: map[string]string{"p": exit7}}, "p", nil,
			"did not start as a Pacer plugin: a plugin prints its handshake line on stdout first (docs/plugin-protocol.md); it ended with exit status 7 and wrote nothing to stderr"},
		{"exits at start, with stderr", pluginhost.Options{Paths: map[string]string{"p": crash}}, "p", nil,
			`; it ended with exit status 3, its stderr with: "ModuleNotFoundError: grpcx"`},
		{"missing binary", pluginhost.Options{}, "absent", pluginhost.ErrPluginNotFound, "has no binary"},
		{"path traversal", pluginhost.Options{}, "../x", pluginhost.ErrPluginNotFound, "invalid plugin name"},
		{"not executable", pluginhost.Options{Paths: map[string]string{"p": notExec}}, "p", pluginhost.ErrPluginNotFound, "not an executable"},
		{"checksum mismatch", pluginhost.Options{Checksums: map[string]string{"testplugin": "sha256:" + strings.Repeat("ab", 32)}}, "testplugin", nil,
			"has checksum sha256:" + sha256File(t, filepath.Join(pluginDir, "testplugin")) + ", but plugins.checksums.testplugin is sha256:" + strings.Repeat("ab", 32)},
		{"bad checksum syntax", pluginhost.Options{Checksums: map[string]string{"testplugin": "md5:1"}}, "testplugin", nil, "must be sha256"},
		{"no handshake", pluginhost.Options{Paths: map[string]string{"p": noHandshake}, StartTimeout: 2 * time.Second}, "p", nil, "start plugin"},
		{"stdout noise before handshake", pluginhost.Options{Paths: map[string]string{"p": wrapper(t, "echo 'hello from init'")}}, "p", nil, "start plugin"},
		{"wrong cookie", pluginhost.Options{Paths: map[string]string{"p": wrapper(t, "export PACER_PLUGIN_COOKIE=wrong")}}, "p", nil, "This binary is a plugin"},
		{"protocol version mismatch", pluginhost.Options{Paths: map[string]string{"p": handshakeScript(t, "1|9|tcp|127.0.0.1:1|grpc|")}}, "p", nil, "incompatible API version"},
		{"not grpc", pluginhost.Options{Paths: map[string]string{"p": handshakeScript(t, "1|1|tcp|127.0.0.1:1|netrpc|")}}, "p", nil, "start plugin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.opts)
			c := call("echo", nil)
			c.Plugin = tc.plugin
			_, err := b.host.Run(context.Background(), c)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

func TestShellExportsRunContextAndKillsProcessGroup(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		c := call("exec", map[string]any{"command": "echo $PACER_JOB_ID $PACER_RUN_ID $PACER_CORRELATION_ID $PACER_ATTEMPT $PACER_FENCING_TOKEN $PACER_NODE $PACER_SCHEDULED_TIME $PACER_SHARD", "shell": true})
		c.Plugin = "shell"
		res, err := b.host.Run(context.Background(), c)
		if err != nil || res.TaskError != "" {
			t.Fatalf("err = %v, res = %+v", err, res)
		}
		if got, want := strings.TrimSpace(res.Output), "job-1 run-1 corr-1 1 42 n1 2026-11-28T12:00:05Z 5"; got != want {
			t.Fatalf("output %q, want %q", got, want)
		}

		c = call("exec", map[string]any{"command": []any{"sh", "-c", "exit 7"}})
		c.Plugin = "shell"
		res, err = b.host.Run(context.Background(), c)
		if err != nil || !strings.Contains(res.TaskError, "status 7") || res.Data["exit_code"] != float64(7) {
			t.Fatalf("exit 7: err = %v, res = %+v", err, res)
		}

		// A grandchild in the background must die with the command on timeout.
		pidFile := filepath.Join(t.TempDir(), "pid")
		c = call("exec", map[string]any{"command": "sleep 300 & echo $! > " + pidFile + "; wait", "shell": true})
		c.Plugin = "shell"
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			res, err := b.host.Run(ctx, c)
			if err == nil && !strings.Contains(res.TaskError, "stopped") {
				err = errors.New("task error does not say it stopped: " + res.TaskError)
			}
			done <- err
		}()
		pid := waitPIDFile(t, pidFile)
		cancel()
		// The task answers after cancellation, in time: its own answer comes back.
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
	})
}

func TestCloseStopsPluginProcesses(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	res, err := b.host.Run(context.Background(), call("env", nil))
	if err != nil {
		t.Fatal(err)
	}
	b.host.Close()
	waitGone(t, int(res.Data["pid"].(float64)))
	if _, err := b.host.Run(context.Background(), call("env", nil)); err == nil {
		t.Fatal("Run after Close succeeded")
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// wrapper returns a script that runs prelude, then execs the test plugin.
func wrapper(t *testing.T, prelude string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wrapped")
	script := "#!/bin/sh\n" + prelude + "\nexec " + filepath.Join(pluginDir, "testplugin") + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// handshakeScript returns a fake plugin that prints line as its handshake.
func handshakeScript(t *testing.T, line string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho '"+line+"'\nexec sleep 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitPIDFile(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			var pid int
			if _, err := fmtSscan(strings.TrimSpace(string(b)), &pid); err == nil {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

// waitGone waits until pid no longer exists (or is a zombie awaiting reaping
// by someone else).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still alive", pid)
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// Field 3 is the state; Z is a zombie.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
