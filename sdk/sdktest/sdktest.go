// Package sdktest tests a Pacer plugin the way the runner calls it and shows
// what the plugin did: its result, log lines, progress reports and spans.
//
// Serve runs the plugin inside the test process and calls it over real gRPC:
// fast, and enough for most tests. Start runs the built binary (see Build)
// through go-plugin as the runner does, with the runner's minimal
// environment, which also exercises the plugin's main and its process
// guards. Both return a Harness: Run calls a
// task, CheckParams says what the runner would say about a job's params.
//
// Neither prints anything of its own, so "go test -v" shows only the
// test's output. The examples pass a bare &testing.T{} where a test passes
// its t, and so call Harness.Close themselves.
package sdktest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/internal/pluginenv"
	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/internal/server"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Harness is a running plugin and a client connected to it.
type Harness struct {
	rpc   pluginv1.TaskPluginClient
	desc  *pluginv1.DescribeResponse
	close func()
	once  sync.Once
}

// Close stops the plugin: Serve's server and its tasks, or Start's process.
// The test's cleanup calls it; call it yourself to stop earlier, or where
// no cleanup runs (an Example given a bare &testing.T{}). It is safe to call
// more than once.
func (h *Harness) Close() { h.once.Do(h.close) }

// inProcess serialises in-process harnesses: tasks trace through otel's
// global tracer provider, of which a process has one.
var inProcess sync.Mutex

// runGrace is how long Close waits for in-process tasks to return once
// their contexts are cancelled.
const runGrace = 5 * time.Second

// Serve runs p inside the test process and calls it over real gRPC on a
// loopback socket, with the service registration (pluginv1.GRPCPlugin) and
// message limits of a plugin binary; Start runs the binary itself. The plugin
// stops when the test ends, or at Close. In-process harnesses run one at a
// time, because tasks trace through otel's global tracer provider; use
// Start for parallel tests.
func Serve(tb testing.TB, p sdk.Plugin) *Harness {
	tb.Helper()
	srv, err := server.FromPlugin(p)
	if err != nil {
		tb.Fatalf("sdktest: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sdktest: %v", err)
	}
	inProcess.Lock()
	tp := server.NewTracerProvider(srv)
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	gs := server.NewGRPCServer(nil)
	_ = (&pluginv1.GRPCPlugin{Impl: srv}).GRPCServer(nil, gs) // cannot fail with an Impl
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(pluginv1.MaxMessageBytes), grpc.MaxCallSendMsgSize(pluginv1.MaxMessageBytes)))
	h := &Harness{close: func() {
		if cc != nil {
			_ = cc.Close()
		}
		gs.Stop() // cancels the tasks still running
		<-served
		srv.WaitRuns(runGrace)
		_ = tp.Shutdown(context.Background())
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		inProcess.Unlock()
	}}
	tb.Cleanup(h.Close)
	if err != nil {
		h.Close()
		tb.Fatalf("sdktest: %v", err)
	}
	raw, _ := (&pluginv1.GRPCPlugin{}).GRPCClient(context.Background(), nil, cc)
	h.rpc = raw.(pluginv1.TaskPluginClient)
	if h.desc, err = h.rpc.Describe(context.Background(), &pluginv1.DescribeRequest{}); err != nil {
		h.Close()
		tb.Fatalf("sdktest: describe: %v", err)
	}
	return h
}

// Start runs the plugin binary at path (see Build), as the runner would:
// go-plugin's handshake, AutoMTLS, the negotiated protocol, and the
// runner's minimal environment (see StartOptions). The process is stopped
// when the test ends, or at Close.
func Start(tb testing.TB, path string) *Harness {
	tb.Helper()
	return StartWith(tb, path, StartOptions{})
}

// StartOptions tune StartWith.
//
// The plugin process gets what the runner gives one: of the test's
// environment only PATH, HOME, LANG, LC_*, TZ, TMPDIR and USER, then what
// InheritEnv names (as the runner's plugins.inherit_env does), then Env, and
// go-plugin's handshake variables. A variable a task needs from a job
// reaches it through sdk.Info(ctx).Env (Call.Info.Env here), not the
// process's environment.
type StartOptions struct {
	// InheritEnv names variables of the test's environment (NAME, or
	// PREFIX_* for all starting with PREFIX_) the process gets, as the
	// operator's plugins.inherit_env names the runner's.
	InheritEnv []string
	// Env is added to the process's environment, as KEY=VALUE entries.
	Env []string
}

// StartWith is Start with options.
func StartWith(tb testing.TB, path string, opts StartOptions) *Harness {
	tb.Helper()
	cmd := exec.Command(path)
	cmd.Env = append(pluginenv.Process(os.Environ(), opts.InheritEnv, nil), opts.Env...)
	client := plugin.NewClient(&plugin.ClientConfig{
		Cmd:              cmd,
		SkipHostEnv:      true, // cmd.Env is the whole of it, with the handshake
		StartTimeout:     time.Minute,
		AutoMTLS:         true,
		HandshakeConfig:  pluginv1.Handshake,
		VersionedPlugins: pluginv1.VersionedPlugins(nil),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// go-plugin's own chatter (and the plugin's stderr) stays out of
		// the test's output.
		Logger: hclog.NewNullLogger(),
	})
	h := &Harness{close: client.Kill}
	tb.Cleanup(h.Close)
	proto, err := client.Client()
	if err != nil {
		h.Close()
		tb.Fatalf("sdktest: start plugin: %v", err)
	}
	raw, err := proto.Dispense(pluginv1.PluginName)
	if err != nil {
		h.Close()
		tb.Fatalf("sdktest: %v", err)
	}
	h.rpc = raw.(pluginv1.TaskPluginClient)
	if h.desc, err = h.rpc.Describe(context.Background(), &pluginv1.DescribeRequest{}); err != nil {
		h.Close()
		tb.Fatalf("sdktest: describe: %v", err)
	}
	return h
}

// Name and Version are what the plugin reports about itself.
func (h *Harness) Name() string    { return h.desc.GetName() }
func (h *Harness) Version() string { return h.desc.GetVersion() }

// Tasks lists the plugin's tasks as the runner sees them.
func (h *Harness) Tasks() []TaskInfo {
	var out []TaskInfo
	for _, t := range h.desc.GetTasks() {
		out = append(out, TaskInfo{Name: t.GetName(), Description: t.GetDescription(), ParamsSchema: t.GetParamsSchemaJson()})
	}
	return out
}

// TaskInfo describes a task.
type TaskInfo struct {
	Name, Description string
	// ParamsSchema is the JSON Schema the runner checks jobs' params against.
	ParamsSchema string
}

// CheckParams checks params against task's schema exactly as the runner does
// when it loads a config, and returns every problem.
func (h *Harness) CheckParams(task string, params map[string]any) []error {
	for _, t := range h.desc.GetTasks() {
		if t.GetName() == task {
			s, err := paramschema.Parse(t.GetParamsSchemaJson())
			if err != nil {
				return []error{err}
			}
			return s.Validate(params)
		}
	}
	return []error{fmt.Errorf("plugin %q has no task %q", h.Name(), task)}
}

// Call is one task invocation.
type Call struct {
	Task   string
	Params map[string]any
	// Info is the run identity the task sees through sdk.Info; zero fields
	// get test values (job "test-job", attempt 1, ...).
	Info sdk.RunInfo
	// Timeout, if set, is the attempt's timeout, as a job's timeout would be.
	Timeout time.Duration
}

// Result is everything a call produced.
type Result struct {
	Output string
	Data   map[string]any
	// Err is the task's error (a *TaskError), or the call's: params the
	// task refused (matching sdk.ErrInvalidParams), an unknown task
	// (ErrTaskNotFound), a panic or a crash.
	Err      error
	Logs     []Log
	Progress []Progress
	// Spans are the spans the task finished, in the order they ended.
	Spans []Span
	// TraceID is the trace the call ran in.
	TraceID string
}

// Log is one line the task logged through sdk.Logger.
type Log struct {
	Level   slog.Level
	Message string
	Attrs   map[string]any
}

// Progress is one sdk.ReportProgress call.
type Progress struct {
	Percent float64
	Message string
}

// Span is a span the task finished.
type Span struct {
	Name         string
	SpanID       string
	ParentSpanID string
	Attributes   map[string]any
	Events       []string
}

// Run calls a task and waits for its result. Cancelling ctx cancels the task.
func (h *Harness) Run(ctx context.Context, c Call) *Result {
	info := c.Info
	if info.JobID == "" {
		info.JobID = "test-job"
	}
	if info.RunID == "" {
		info.RunID = rand.Text()
	}
	if info.CorrelationID == "" {
		info.CorrelationID = "test-" + rand.Text()
	}
	if info.Attempt == 0 {
		info.Attempt = 1
	}
	if info.ScheduledTime.IsZero() {
		info.ScheduledTime = time.Now().Truncate(time.Second)
	}
	if info.Node == "" {
		info.Node = "sdktest"
	}
	params, err := structpb.NewStruct(c.Params)
	if err != nil {
		return &Result{Err: fmt.Errorf("params are not JSON-compatible: %w", err)}
	}
	req := &pluginv1.RunRequest{Task: c.Task, Params: params, Context: &pluginv1.RunContext{
		JobId: info.JobID, RunId: info.RunID, CorrelationId: info.CorrelationID, Attempt: uint32(info.Attempt),
		ScheduledTime: timestamppb.New(info.ScheduledTime), FencingToken: info.FencingToken, Node: info.Node,
		Shard: uint32(max(info.Shard, 0)), Env: info.Env,
	}}
	if c.Timeout > 0 {
		req.Timeout = durationpb.New(c.Timeout)
	}
	// A sampled trace of our own, so the task's spans are shipped back.
	ctx, sc := withTrace(ctx)
	res := &Result{TraceID: sc.TraceID().String()}
	stream, err := h.rpc.Run(ctx, req)
	if err != nil {
		res.Err = callErr(err)
		return res
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			res.Err = callErr(err)
			return res
		}
		switch e := ev.GetEvent().(type) {
		case *pluginv1.RunEvent_Log:
			l := Log{Level: slog.Level(e.Log.GetLevel()), Message: e.Log.GetMessage(), Attrs: map[string]any{}}
			for _, a := range e.Log.GetAttrs() {
				l.Attrs[a.GetKey()] = a.GetValue().AsInterface()
			}
			res.Logs = append(res.Logs, l)
		case *pluginv1.RunEvent_Progress:
			res.Progress = append(res.Progress, Progress{Percent: e.Progress.GetPercent(), Message: e.Progress.GetMessage()})
		case *pluginv1.RunEvent_Span:
			res.Spans = append(res.Spans, span(e.Span))
		case *pluginv1.RunEvent_Result:
			res.Output, res.Data = e.Result.GetOutput(), e.Result.GetData().AsMap()
			if msg := e.Result.GetError(); msg != "" {
				res.Err = &TaskError{Message: msg}
			}
			return res
		}
	}
}

// TaskError is a failure the task itself reported.
type TaskError struct{ Message string }

func (e *TaskError) Error() string { return e.Message }

// ErrTaskNotFound is the error of a call to a task the plugin does not have.
var ErrTaskNotFound = errors.New("unknown task")

// callErr turns a failed call into the error a test checks for: params the
// task refused match sdk.ErrInvalidParams, as they do inside the plugin.
func callErr(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", sdk.ErrInvalidParams, strings.TrimPrefix(st.Message(), sdk.ErrInvalidParams.Error()+": "))
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrTaskNotFound, st.Message())
	}
	return fmt.Errorf("%s: %s", st.Code(), st.Message())
}

func withTrace(ctx context.Context) (context.Context, trace.SpanContext) {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx = trace.ContextWithSpanContext(ctx, sc)
	md := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, md)
	return metadataContext(ctx, md), sc
}

func span(sd *pluginv1.SpanData) Span {
	s := Span{Name: sd.GetName(), SpanID: fmt.Sprintf("%x", sd.GetSpanId()), ParentSpanID: fmt.Sprintf("%x", sd.GetParentSpanId()), Attributes: map[string]any{}}
	for _, a := range sd.GetAttributes() {
		s.Attributes[a.GetKey()] = a.GetValue().AsInterface()
	}
	for _, e := range sd.GetEvents() {
		s.Events = append(s.Events, e.GetName())
	}
	return s
}
