// Package server adapts the plugin wire protocol (package pluginv1) to the
// SDK's Go types. It owns everything between go-plugin and task code: the gRPC
// service, the run's context, the event stream back to the runner, panic
// recovery and the process-level guards (stdout, parent death).
package server

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/internal/wireutf8"
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

	mu         sync.Mutex
	active     map[string]*activeRun // by run ID
	tombstones map[string]tombstone  // early Cancels, by run ID
	seq        int
}

// FromPlugin returns the Server of an sdk.Plugin, as sdk.Serve would serve
// it. Package sdk sets it (it owns the dispatcher); the in-process harness
// of package sdktest calls it.
var FromPlugin func(p any) (*Server, error)

// New returns a Server dispatching to d.
func New(d Dispatcher) *Server {
	return &Server{d: d, base: context.Background(), active: map[string]*activeRun{}, tombstones: map[string]tombstone{}}
}

// Limits on what a plugin sends, below the transport's message limit so the
// runner gets a clear error instead of a broken stream.
const (
	maxResultBytes = pluginv1.MaxMessageBytes - 64<<10
	maxLogBytes    = 64 << 10
)

// WaitRuns waits up to grace for in-flight runs to return.
func (s *Server) WaitRuns(grace time.Duration) {
	done := make(chan struct{})
	go func() { s.runs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
}

// Describe implements pluginv1.TaskPluginServer. Besides the dispatcher's
// description it declares the optional parts of the protocol the server
// implements.
func (s *Server) Describe(context.Context, *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	d := s.d.Describe()
	if !validUTF8(d) {
		d = proto.CloneOf(d)
		wireutf8.Fix(d)
	}
	d.Capabilities = &pluginv1.Capabilities{RunStream: true}
	return d, nil
}

// validUTF8 reports whether m can be marshaled as it is.
func validUTF8(m proto.Message) bool {
	_, err := proto.Marshal(m)
	return err == nil
}

// Shown is a run's timeout as its cancellation reason names it. The runner
// sends what is left of the job's timeout when the run starts (1.99996s of
// 2s): rounded to a tenth of a second from one second up, to the
// millisecond below, so the reason reads like the job's config.
func Shown(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d
}

// Run implements pluginv1.TaskPluginServer: one run on its own stream.
func (s *Server) Run(req *pluginv1.RunRequest, stream grpc.ServerStreamingServer[pluginv1.RunEvent]) error {
	sk := &sink{stream: stream}
	ctx, cancel := s.withBase(extractTrace(stream.Context()))
	defer cancel()
	ev, err := s.serve(ctx, req, sk)
	if err != nil {
		return validStatus(err)
	}
	return sk.send(ev)
}

// errStopping is the cause of every run's cancellation when the plugin
// stops because its runner went away.
var errStopping = errors.New("plugin stopping: the runner went away")

// withBase returns ctx, also cancelled (errStopping) when the plugin stops.
func (s *Server) withBase(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.base, func() { cancel(errStopping) })
	return ctx, func() { stop(); cancel(nil) }
}

// timeoutError is a run's timeout as the cause of its context's end,
// named as Shown names it. A value, not a formatted error: most runs never
// time out, and their causes are never read.
type timeoutError time.Duration

func (e timeoutError) Error() string { return "timed out after " + Shown(time.Duration(e)).String() }

// serve runs one task until it returns and gives its result event, or the
// gRPC status error a Run call ends with instead. ctx carries the run's
// trace context and is cancelled when the call ends or the plugin stops;
// cancelling it (with a cause) cancels the task.
func (s *Server) serve(ctx context.Context, req *pluginv1.RunRequest, sk *sink) (*pluginv1.RunEvent, error) {
	s.runs.Add(1)
	defer s.runs.Done()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if d := req.GetTimeout().AsDuration(); d > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, d, timeoutError(d))
		defer stop()
	}
	sk.run = Run{Context: req.GetContext(), Sink: sk}
	ctx = WithRun(ctx, &sk.run)
	key := s.track(req.GetContext().GetRunId(), trace.SpanContextFromContext(ctx).TraceID(), cancel, sk)
	defer s.untrack(key)

	res, err := s.safeRun(ctx, req, sk)
	if err != nil {
		return nil, err
	}
	ev := &pluginv1.RunEvent{Event: &pluginv1.RunEvent_Result{Result: res}}
	if n := proto.Size(ev); n > maxResultBytes {
		ev.Event = &pluginv1.RunEvent_Result{Result: &pluginv1.RunResult{
			Error: fmt.Sprintf("task %q returned a result of %d bytes, over the %d-byte limit: return less, or store large output elsewhere and return a reference", req.GetTask(), n, maxResultBytes),
		}}
	}
	return ev, nil
}

// Cancel implements pluginv1.TaskPluginServer.
func (s *Server) Cancel(_ context.Context, req *pluginv1.CancelRequest) (*pluginv1.CancelResponse, error) {
	reason := req.GetReason()
	if reason == "" {
		reason = "cancelled by the runner"
	}
	s.mu.Lock()
	r, ok := s.active[req.GetRunId()]
	if !ok && req.GetRunId() != "" {
		// Cancel can overtake its Run on the wire: remember it, so that
		// the Run starts cancelled.
		s.pruneTombstones()
		s.tombstones[req.GetRunId()] = tombstone{reason: reason, at: time.Now()}
	}
	s.mu.Unlock()
	if ok {
		r.cancel(errors.New(reason))
	}
	return &pluginv1.CancelResponse{Found: ok}, nil
}

// tombstone is a Cancel that arrived before its Run.
type tombstone struct {
	reason string
	at     time.Time
}

// tombstoneTTL is how long an early Cancel waits for its Run.
const tombstoneTTL = time.Minute

func (s *Server) pruneTombstones() {
	for id, t := range s.tombstones {
		if time.Since(t.at) > tombstoneTTL {
			delete(s.tombstones, id)
		}
	}
}

// activeRun is a run in progress, for Cancel and for routing its spans.
type activeRun struct {
	traceID trace.TraceID
	cancel  context.CancelCauseFunc
	sink    *sink
}

func (s *Server) track(runID string, traceID trace.TraceID, cancel context.CancelCauseFunc, sink *sink) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tombstones[runID]; ok {
		delete(s.tombstones, runID)
		cancel(errors.New(t.reason))
	}
	s.seq++
	key := runID
	if key == "" || s.active[key] != nil {
		key = fmt.Sprintf("%s#%d", runID, s.seq)
	}
	s.active[key] = &activeRun{traceID: traceID, cancel: cancel, sink: sink}
	return key
}

func (s *Server) untrack(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, key)
}

// sinkForTrace returns the sink of the run a span belongs to, or nil.
func (s *Server) sinkForTrace(id trace.TraceID) *sink {
	if !id.IsValid() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.active {
		if r.traceID == id {
			return r.sink
		}
	}
	return nil
}

func (s *Server) safeRun(ctx context.Context, req *pluginv1.RunRequest, sink *sink) (res *pluginv1.RunResult, err error) {
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

// validStatus returns err with invalid UTF-8 in its message replaced, so
// that the runner reads the text the task meant.
func validStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || utf8.ValidString(st.Message()) {
		return err
	}
	return status.Error(st.Code(), wireutf8.String(st.Message()))
}

// sink is where one run's events go: its own Run stream, or its share of a
// RunStream. It serialises sends, because task code may log from several
// goroutines, and once a send failed (the runner hung up) it sends nothing
// more. It also holds the run's Run, which task contexts carry.
type sink struct {
	stream grpc.ServerStreamingServer[pluginv1.RunEvent] // a Run call's; or
	mux    *muxOut                                       // the RunStream's,
	id     uint64                                        // and the run's ID on it
	run    Run

	mu     sync.Mutex
	failed bool
}

func (s *sink) send(ev *pluginv1.RunEvent) error {
	// Everything a task reports is text from the outside world (a
	// command's output in Latin-1, a binary file): invalid UTF-8 would
	// fail the whole stream (on a RunStream, every run on it), so it
	// becomes U+FFFD here, the one place every event of both transports
	// passes.
	wireutf8.FixEvent(ev)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return status.Error(codes.Canceled, "run stream closed")
	}
	var err error
	if s.mux != nil {
		err = s.mux.add(&pluginv1.StreamEvent{Id: s.id, Event: ev})
	} else {
		err = s.stream.Send(ev)
	}
	// An event too big for the stream is dropped alone: the run's later
	// events, its result above all, still go (a huge span must not leave
	// the runner waiting for a result that never comes).
	if err != nil && !errors.Is(err, errEventTooBig) {
		s.failed = true
	}
	return err
}

// Log implements Sink. A record that cannot be sent (the runner hung up) is
// dropped: logging must never fail a task. An oversized record is cut down.
func (s *sink) Log(rec *pluginv1.LogRecord) {
	if proto.Size(rec) > maxLogBytes {
		if len(rec.Message) > maxLogBytes/2 {
			// Between words, so that no secret is left half shown: the
			// runner's sanitizer would not recognise its first half. A
			// JWT or a URL's authority cut inside is marked, so that it
			// does (linesplit.Head).
			rec.Message = strings.TrimRight(linesplit.Head(rec.Message, linesplit.Cut(rec.Message, maxLogBytes/2)), " \t")
		}
		rec.Message += " [log record truncated]"
		rec.Attrs = nil
	}
	_ = s.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Log{Log: rec}})
}

// Span sends a finished span to the runner.
func (s *sink) Span(sd *pluginv1.SpanData) {
	_ = s.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Span{Span: sd}})
}

// Progress implements Sink.
func (s *sink) Progress(percent float64, message string) {
	_ = s.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Progress{Progress: &pluginv1.Progress{Percent: percent, Message: message}}})
}

// extractTrace makes the runner's span the parent of anything the task
// starts, and lets the SDK logger report the run's trace ID.
func extractTrace(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	return propagatorForPlugins.Extract(ctx, metadataCarrier(md))
}

// propagatorForPlugins carries W3C trace context and baggage.
var propagatorForPlugins = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

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
