package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pacerun/pacer/internal/stack"
	"github.com/pacerun/pacer/internal/wireutf8"
	"github.com/pacerun/pacer/sdk/pluginv1"
	"github.com/pacerun/pacer/sdk/proctree"
)

// RunStream implements pluginv1.TaskPluginServer: many runs over one stream,
// each exactly as if it had its own Run call (see serve). A run's events go
// out tagged with its stream ID, several runs' in one message when they are
// ready together. When the stream ends (the runner closes it, or the
// connection breaks), every run on it is cancelled, and RunStream returns
// once they all have.
func (s *Server) RunStream(stream grpc.BidiStreamingServer[pluginv1.RunStreamRequest, pluginv1.RunStreamResponse]) error {
	out := &muxOut{send: stream.Send}
	out.drained = newCond(out)
	// Every run's context is a child of the stream's: it ends with the
	// stream, or when the plugin stops.
	base, stop := s.withBase(stream.Context())
	defer stop()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		runs = map[uint64]context.CancelCauseFunc{}
	)
	lease := newLeaseBound(func(cause error) {
		mu.Lock()
		defer mu.Unlock()
		for _, cancel := range runs {
			cancel(cause)
		}
	})
	defer func() {
		lease.stop()
		mu.Lock()
		for _, cancel := range runs {
			cancel(errRunStreamClosed)
		}
		mu.Unlock()
		wg.Wait()
		out.close() // nothing is sent after RunStream returns
	}()
	// An empty message opens the plugin's side: the runner sends runs
	// once it has it.
	if err := out.add(nil); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if l := req.GetLease(); l != nil {
			lease.renew(time.Duration(l.GetRemainingMs()) * time.Millisecond)
		}
		for _, r := range req.GetRuns() {
			id := r.GetId()
			ctx, cancel := context.WithCancelCause(extractTraceFields(base, r))
			mu.Lock()
			_, dup := runs[id]
			if !dup {
				runs[id] = cancel
			}
			mu.Unlock()
			if cause := lease.expired(); cause != nil && !dup {
				cancel(cause) // it starts cancelled, and ends as one cancelled
			}
			if dup {
				cancel(nil)
				_ = out.add(&pluginv1.StreamEvent{Id: id, Status: &pluginv1.StreamStatus{
					Code: int32(codes.InvalidArgument), Message: "run stream: a run with this ID is running already"}})
				continue
			}
			wg.Go(func() {
				// Its stack at once (package stack): the task, the
				// SDK's dispatch and the result's send go deep.
				stack.Grow()
				defer func() {
					mu.Lock()
					delete(runs, id)
					mu.Unlock()
					cancel(nil)
				}()
				s.serveOnStream(ctx, id, r.GetRequest(), out)
			})
		}
		for _, c := range req.GetCancels() {
			mu.Lock()
			cancel := runs[c.GetId()]
			mu.Unlock()
			if cancel != nil {
				reason := c.GetReason()
				if reason == "" {
					reason = "cancelled by the runner"
				}
				cancel(errors.New(reason))
			}
		}
	}
}

var errRunStreamClosed = errors.New("the runner closed the run stream")

// leaseBound bounds a RunStream's runs by the runner's lease (see
// pluginv1.Lease): each Lease the runner sends moves the bound to its
// arrival + remaining, on the monotonic clock; when the bound passes with
// no newer one, every run on the stream is cancelled. A runner frozen
// (SIGSTOP, a debugger) cannot fence itself when its lease runs out; this
// is how its runs still end before a new leader's runs of the same jobs
// start. Until the first Lease there is no bound.
type leaseBound struct {
	cancelAll func(error)

	mu       sync.Mutex
	set      bool
	received time.Time // when the last Lease arrived
	deadline time.Time
	timer    *time.Timer
	stopped  bool
}

func newLeaseBound(cancelAll func(error)) *leaseBound {
	return &leaseBound{cancelAll: cancelAll}
}

// renew sets the bound to now + d.
func (l *leaseBound) renew(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	now := time.Now()
	l.set, l.received, l.deadline = true, now, now.Add(d)
	if l.timer == nil {
		l.timer = time.AfterFunc(max(d, 0), l.fire)
		return
	}
	l.timer.Reset(max(d, 0))
}

// fire cancels every run if the bound has passed (a renewal may have come
// between the timer firing and this).
func (l *leaseBound) fire() {
	if cause := l.expired(); cause != nil {
		l.cancelAll(cause)
	}
}

// expired returns why the stream's runs may not go on, or nil while they
// may. The runs' commands (sdk/proctree) get no grace from it: a successor
// may start their slots once the lease has expired, and a process that
// ignored SIGTERM for its grace would overlap that run (attack 25, W5).
func (l *leaseBound) expired() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.set || l.stopped || time.Now().Before(l.deadline) {
		return nil
	}
	return proctree.WithoutGrace(fmt.Errorf("the runner has not renewed its lease for %s (it may be frozen, and another replica may lead): "+
		"the runs are cancelled so that a new leader's runs do not overlap them",
		time.Since(l.received).Round(time.Millisecond)))
}

func (l *leaseBound) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
	}
}

// serveOnStream runs one task of a RunStream and sends its result, or its
// status, as the run's last event.
func (s *Server) serveOnStream(ctx context.Context, id uint64, req *pluginv1.RunRequest, out *muxOut) {
	sk := &sink{mux: out, id: id}
	ev, err := s.serve(ctx, req, sk)
	if err == nil {
		_ = sk.send(ev)
		return
	}
	st := status.Convert(err)
	sk.mu.Lock()
	defer sk.mu.Unlock()
	if !sk.failed {
		// Valid UTF-8, or the message would break the stream of every run.
		_ = out.add(&pluginv1.StreamEvent{Id: id, Status: &pluginv1.StreamStatus{Code: int32(st.Code()), Message: wireutf8.String(st.Message())}})
	}
}

// extractTraceFields is extractTrace for the trace context a RunStream run
// carries in its message instead of in gRPC metadata.
func extractTraceFields(ctx context.Context, r *pluginv1.StreamRun) context.Context {
	if r.GetTraceparent() == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, traceFields{r})
}

// traceFields reads a StreamRun's trace context as a propagation carrier.
type traceFields struct{ r *pluginv1.StreamRun }

func (f traceFields) Get(key string) string {
	switch key {
	case "traceparent":
		return f.r.GetTraceparent()
	case "tracestate":
		return f.r.GetTracestate()
	}
	return ""
}
func (traceFields) Set(string, string) {}
func (traceFields) Keys() []string     { return []string{"traceparent", "tracestate"} }

// Bounds of what a RunStream holds back and sends at once. A message stays
// below the transport's limit; an event that alone would not (a span with
// huge attributes: results and log records are cut down before) is
// dropped. Senders wait while maxQueued bytes are waiting to go out, as a
// Run call's sender waits on a blocked stream.
const (
	maxBatchBytes  = pluginv1.MaxMessageBytes - 16<<10
	maxQueuedBytes = 2 * pluginv1.MaxMessageBytes
)

// errEventTooBig: an event alone would not fit in a message. It is dropped;
// the run and the stream go on.
var errEventTooBig = status.Error(codes.ResourceExhausted, "run stream: event dropped")

// muxOut sends a RunStream's events. Whoever adds an event while nobody
// is sending sends it, and with it everything added meanwhile, in order and
// in as few messages as fit: one run alone costs no extra hand-over, runs
// finishing together share messages.
type muxOut struct {
	send func(*pluginv1.RunStreamResponse) error

	mu      sync.Mutex
	drained *sync.Cond // signalled when queued bytes go out, or sending stops
	queue   []*pluginv1.StreamEvent
	sizes   []int
	queued  int // bytes in queue
	sending bool
	err     error // set once a send failed or the stream closed: nothing more goes out
}

// add sends ev, or with ev nil an empty message.
func (o *muxOut) add(ev *pluginv1.StreamEvent) error {
	if ev == nil {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.send(&pluginv1.RunStreamResponse{})
	}
	n := proto.Size(ev)
	if n > maxBatchBytes {
		return fmt.Errorf("%w: %d bytes, over the %d-byte limit", errEventTooBig, n, maxBatchBytes)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.err == nil && o.queued > 0 && o.queued+n > maxQueuedBytes {
		o.drained.Wait()
	}
	if o.err != nil {
		return o.err
	}
	o.queue, o.sizes, o.queued = append(o.queue, ev), append(o.sizes, n), o.queued+n
	if o.sending {
		return nil
	}
	o.sending = true
	for len(o.queue) > 0 && o.err == nil {
		size, k := 0, 0
		for k < len(o.queue) && (k == 0 || size+o.sizes[k]+8 <= maxBatchBytes) {
			size += o.sizes[k] + 8 // the event's tag and length
			k++
		}
		batch := &pluginv1.RunStreamResponse{Events: o.queue[:k:k]}
		o.queue, o.sizes = o.queue[k:], o.sizes[k:]
		o.mu.Unlock()
		err := o.send(batch)
		o.mu.Lock()
		o.queued -= size - 8*k
		if err != nil && o.err == nil {
			o.err = err
		}
		o.drained.Broadcast()
	}
	if len(o.queue) == 0 {
		o.queue, o.sizes = nil, nil // let the sent events go
	}
	o.sending = false
	o.drained.Broadcast()
	return nil
}

func newCond(o *muxOut) *sync.Cond { return sync.NewCond(&o.mu) }

// close stops sending, once a send in progress has returned.
func (o *muxOut) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = status.Error(codes.Canceled, "run stream closed")
	}
	o.drained.Broadcast()
	for o.sending {
		o.drained.Wait()
	}
}
