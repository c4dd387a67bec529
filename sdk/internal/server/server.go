// Package server adapts the plugin wire protocol (package pluginv1) to the
// SDK's Go types. It owns everything between go-plugin and task code: the gRPC
// service, the run's context, the event stream back to the runner, panic
// recovery and the process-level guards (stdout, parent death).
package server

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hashicorp/go-plugin"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Dispatcher runs tasks on the plugin side. The sdk package implements it.
type Dispatcher interface {
	Describe() *pluginv1.DescribeResponse
	// Run executes the task named by req. A returned error must be a gRPC
	// status error; a task's own failure belongs in RunResult.Error.
	Run(ctx context.Context, req *pluginv1.RunRequest) (*pluginv1.RunResult, error)
}

// Sink receives what a running task reports besides its result.
type Sink interface {
	Log(*pluginv1.LogRecord)
	Progress(percent float64, message string)
}

// Run is what the server puts in a task's context.
type Run struct {
	Context *pluginv1.RunContext
	Sink    Sink
}

type runKey struct{}

// RunFromContext returns the run ctx belongs to, or nil.
func RunFromContext(ctx context.Context) *Run {
	r, _ := ctx.Value(runKey{}).(*Run)
	return r
}

// WithRun returns ctx carrying r.
func WithRun(ctx context.Context, r *Run) context.Context {
	return context.WithValue(ctx, runKey{}, r)
}

// Server implements pluginv1.TaskPluginServer.
type Server struct {
	pluginv1.UnimplementedTaskPluginServer
	d Dispatcher

	// base is cancelled when the plugin process is shutting down; every
	// run's context is cancelled with it.
	base context.Context
	runs sync.WaitGroup
}

// New returns a Server dispatching to d.
func New(d Dispatcher) *Server { return &Server{d: d, base: context.Background()} }

// waitRuns waits up to grace for in-flight runs to return.
func (s *Server) waitRuns(grace time.Duration) {
	done := make(chan struct{})
	go func() { s.runs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
}

// Describe implements pluginv1.TaskPluginServer.
func (s *Server) Describe(context.Context, *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	return s.d.Describe(), nil
}

// Run implements pluginv1.TaskPluginServer.
func (s *Server) Run(req *pluginv1.RunRequest, stream grpc.ServerStreamingServer[pluginv1.RunEvent]) error {
	s.runs.Add(1)
	defer s.runs.Done()
	ctx, cancel := context.WithCancel(extractTrace(stream.Context()))
	defer cancel()
	defer context.AfterFunc(s.base, cancel)()
	sink := &streamSink{stream: stream}
	ctx = WithRun(ctx, &Run{Context: req.GetContext(), Sink: sink})

	res, err := s.safeRun(ctx, req, sink)
	if err != nil {
		return err
	}
	return sink.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Result{Result: res}})
}

func (s *Server) safeRun(ctx context.Context, req *pluginv1.RunRequest, sink *streamSink) (res *pluginv1.RunResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			sink.Log(&pluginv1.LogRecord{Level: 8, Message: "task panicked", Attrs: []*pluginv1.Attr{
				stringAttr("panic", fmt.Sprint(p)), stringAttr("stack", string(debug.Stack())),
			}})
			res, err = nil, status.Errorf(codes.Internal, "task %q panicked: %v", req.GetTask(), p)
		}
	}()
	return s.d.Run(ctx, req)
}

// streamSink serialises sends: task code may log from several goroutines.
type streamSink struct {
	mu     sync.Mutex
	stream grpc.ServerStreamingServer[pluginv1.RunEvent]
	failed bool
}

func (s *streamSink) send(ev *pluginv1.RunEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return status.Error(codes.Canceled, "run stream closed")
	}
	if err := s.stream.Send(ev); err != nil {
		s.failed = true
		return err
	}
	return nil
}

// Log implements Sink. A record that cannot be sent (the runner hung up) is
// dropped: logging must never fail a task.
func (s *streamSink) Log(rec *pluginv1.LogRecord) {
	_ = s.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Log{Log: rec}})
}

// Progress implements Sink.
func (s *streamSink) Progress(percent float64, message string) {
	_ = s.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Progress{Progress: &pluginv1.Progress{Percent: percent, Message: message}}})
}

// extractTrace makes the runner's span the parent of anything the task
// starts, and lets the SDK logger report the run's trace ID.
func extractTrace(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, metadataCarrier(md))
}

type metadataCarrier metadata.MD

func (m metadataCarrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (m metadataCarrier) Set(key, value string) { metadata.MD(m).Set(key, value) }
func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// GRPCPlugin is the plugin side of go-plugin's GRPCPlugin.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl *Server
}

// GRPCServer implements plugin.GRPCPlugin.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterTaskPluginServer(s, p.Impl)
	return nil
}

// GRPCClient implements plugin.GRPCPlugin; the plugin side never dials.
func (p *GRPCPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("the plugin side of %s has no client", pluginv1.PluginName)
}
