package pluginhost_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/pluginv1"
	"github.com/pacerun/pacer/sdk/sdktest"
)

var pluginDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pacer-pluginhost-")
	if err != nil {
		panic(err)
	}
	pluginDir = dir
	tb := &mainTB{}
	sdktest.Build(tb, dir, "github.com/pacerun/pacer/plugins/testplugin")
	sdktest.Build(tb, dir, "github.com/pacerun/pacer/plugins/shell")
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

// mainTB lets TestMain use helpers that take a testing.TB.
type mainTB struct{ testing.TB }

func (mainTB) Helper()                   {}
func (mainTB) Fatalf(f string, a ...any) { panic(f) }

type bundle struct {
	host *pluginhost.Host
	rec  *tracetest.SpanRecorder
}

func setup(t *testing.T, opts pluginhost.Options) *bundle {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
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

func call(task string, params map[string]any) pluginhost.Call {
	return pluginhost.Call{
		Plugin: "testplugin", Task: task, Params: params,
		Context: &pluginv1.RunContext{JobId: "job-1", RunId: "run-1", CorrelationId: "corr-1", Attempt: 1, FencingToken: 42, Node: "n1",
			ScheduledTime: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 5, 0, time.UTC))},
	}
}

func TestRunEchoStreamsLogsAndProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	var mu sync.Mutex
	var logs []string
	var progress []float64
	c := call("echo", map[string]any{"message": "hi there"})
	c.OnLog = func(l *pluginv1.LogRecord) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, l.GetMessage()+" "+l.GetAttrs()[0].GetValue().GetStringValue())
	}
	c.OnProgress = func(p *pluginv1.Progress) { progress = append(progress, p.GetPercent()) }
	res, err := b.host.Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Output != "hi there" || res.TaskError != "" {
		t.Fatalf("result = %+v", res)
	}
	if len(logs) != 1 || logs[0] != "echo hi there" {
		t.Fatalf("logs = %q", logs)
	}
	if len(progress) != 1 || progress[0] != 100 {
		t.Fatalf("progress = %v", progress)
	}
}

func TestRunContextAndTraceCrossIntoPlugin(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	tracer := trace.NewTracerProvider().Tracer("test")
	ctx, span := tracer.Start(context.Background(), "parent")
	defer span.End()
	res, err := b.host.Run(ctx, call("env", nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"job_id": "job-1", "run_id": "run-1", "correlation_id": "corr-1",
		"attempt": float64(1), "fencing_token": float64(42), "node": "n1", "scheduled_time": "2026-11-28T12:00:05Z"}
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
}

func TestBadCallsFailCleanlyAndPluginStaysUp(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
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
}

func TestCrashIsReportedAndPluginRestarts(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
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
}

func TestTimeoutCancelsTheTask(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := b.host.Run(ctx, call("sleep", map[string]any{"duration": "1h"}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
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
	tests := []struct {
		name    string
		opts    pluginhost.Options
		plugin  string
		wantErr error
		wantMsg string
	}{
		{"missing binary", pluginhost.Options{}, "absent", pluginhost.ErrPluginNotFound, "has no binary"},
		{"path traversal", pluginhost.Options{}, "../x", pluginhost.ErrPluginNotFound, "invalid plugin name"},
		{"not executable", pluginhost.Options{Paths: map[string]string{"p": notExec}}, "p", pluginhost.ErrPluginNotFound, "not an executable"},
		{"checksum mismatch", pluginhost.Options{Checksums: map[string]string{"testplugin": "sha256:" + strings.Repeat("ab", 32)}}, "testplugin", nil, "checksums did not match"},
		{"bad checksum syntax", pluginhost.Options{Checksums: map[string]string{"testplugin": "md5:1"}}, "testplugin", nil, "must be sha256"},
		{"no handshake", pluginhost.Options{Paths: map[string]string{"p": noHandshake}, StartTimeout: 2 * time.Second}, "p", nil, "start plugin"},
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
	b := setup(t, pluginhost.Options{})
	c := call("exec", map[string]any{"command": "echo $PACER_JOB_ID $PACER_RUN_ID $PACER_CORRELATION_ID $PACER_ATTEMPT $PACER_FENCING_TOKEN $PACER_NODE $PACER_SCHEDULED_TIME", "shell": true})
	c.Plugin = "shell"
	res, err := b.host.Run(context.Background(), c)
	if err != nil || res.TaskError != "" {
		t.Fatalf("err = %v, res = %+v", err, res)
	}
	if got, want := strings.TrimSpace(res.Output), "job-1 run-1 corr-1 1 42 n1 2026-11-28T12:00:05Z"; got != want {
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
		_, err := b.host.Run(ctx, c)
		done <- err
	}()
	pid := waitPIDFile(t, pidFile)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	waitGone(t, pid)
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
