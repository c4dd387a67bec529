package pluginhost

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// A plugin that declares the run_stream capability in Describe gets its
// runs over one long-lived RunStream per process instead of one Run call
// each: a run costs a few bytes in messages the stream already carries
// instead of an HTTP/2 stream of its own (headers, trailers, a server
// goroutine, a client span from the gRPC instrumentation), and runs that
// start or end together share messages. Each run keeps its meaning: the
// same request, events and errors, a Cancel as a message on the stream, the
// same client span (started here, its context in the message), the same
// handling of a plugin that crashes or ignores cancellation.
//
// The stream is opened at the process's first run and kept while it works;
// the plugin's first message on it, empty, says it serves it. When it
// breaks, the runs on it fail as their Run calls would (crashed, if the
// process exited) and the next run opens a new one. A plugin that declares
// the capability and then does not open its side (Unimplemented, or
// nothing within StartTimeout) is called per run from then on.

// runStreamRPC is the name of the client span of a run, as the gRPC
// instrumentation names the Run call's.
const runStreamRPC = "pacer.plugin.v1.TaskPlugin/Run"

// runSpanOptions start a run's client span.
var runSpanOptions = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient),
	trace.WithAttributes(attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", "pacer.plugin.v1.TaskPlugin"),
		attribute.String("rpc.method", "Run"), attribute.Bool("pacer.plugin.run_stream", true))}

// runStream is one open RunStream of a plugin process.
type runStream struct {
	h      *Host
	inst   *instance
	plugin string
	stream grpc.BidiStreamingClient[pluginv1.RunStreamRequest, pluginv1.RunStreamResponse]
	cancel context.CancelFunc

	mu      sync.Mutex
	calls   map[uint64]*streamCall
	nextID  uint64
	err     error                     // set once the stream broke: no call starts on it
	queue   pluginv1.RunStreamRequest // what waits to be sent
	sending bool
	renew   bool         // a message that renews the lease is due
	lease   *leaseSource // nil: no lease is sent (Host.SetLease)
}

// streamCall is one run on a runStream.
type streamCall struct {
	rs   *runStream
	id   uint64
	c    *Call
	span trace.Span

	mu   sync.Mutex // held while delivering events: none after ended
	ends bool
	logs logLimiter
	done chan streamOutcome // buffered: exactly one outcome
}

type streamOutcome struct {
	res *Result
	err error
}

// runStream returns inst's open RunStream, opening one, or nil when the
// plugin is called per run.
func (inst *instance) runStream(h *Host, plugin string) *runStream {
	if h.opts.DisableRunStream || !inst.desc.GetCapabilities().GetRunStream() {
		return nil
	}
	inst.smu.Lock()
	defer inst.smu.Unlock()
	if inst.perRun {
		return nil
	}
	if inst.rs != nil {
		return inst.rs
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := inst.rpc.RunStream(ctx)
	if err == nil {
		// The plugin opens its side with an empty message: until then
		// no run is sent, so a plugin that cannot serve the stream fails
		// no run.
		t := time.AfterFunc(h.opts.StartTimeout, cancel)
		_, err = stream.Recv()
		t.Stop()
	}
	if err != nil {
		cancel()
		if status.Code(err) == codes.Unimplemented || ctx.Err() != nil {
			inst.perRun = true
			h.log.Warn("plugin declares run_stream but does not serve RunStream; calling it once per run",
				"plugin", plugin, "pid", inst.pid, "error", err)
		}
		// Else the connection is gone: the run fails on its own Run call,
		// as it would have.
		return nil
	}
	rs := &runStream{h: h, inst: inst, plugin: plugin, stream: stream, cancel: cancel, calls: map[uint64]*streamCall{},
		lease: h.lease.Load()}
	inst.rs = rs
	go rs.read()
	if rs.lease != nil {
		go rs.renewLease(ctx)
	}
	return rs
}

// renewLease sends the lease every period while the stream has runs, until
// the stream ends: the plugin cancels them if it hears none in time.
func (rs *runStream) renewLease(ctx context.Context) {
	tick := time.NewTicker(max(rs.lease.every, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rs.mu.Lock()
		if rs.err != nil || len(rs.calls) == 0 {
			rs.mu.Unlock()
			continue
		}
		rs.renew = true
		rs.flushLocked(true)
	}
}

// leaseOf is the lease a message sent now carries, if any.
func (rs *runStream) leaseOf() *pluginv1.Lease {
	if rs.lease == nil {
		return nil
	}
	deadline, ok := rs.lease.deadline()
	if !ok {
		return nil
	}
	return &pluginv1.Lease{RemainingMs: time.Until(deadline).Milliseconds()}
}

// transport names how the host calls inst's tasks (Status.Transport).
func (inst *instance) transport(h *Host) string {
	inst.smu.Lock()
	defer inst.smu.Unlock()
	if h.opts.DisableRunStream || !inst.desc.GetCapabilities().GetRunStream() || inst.perRun {
		return "per_run"
	}
	return "run_stream"
}

// start starts c's run on the stream under a client span, child of ctx's.
func (rs *runStream) start(ctx context.Context, c *Call, req *pluginv1.RunRequest) (*streamCall, error) {
	_, span := rs.h.tracer.Start(ctx, runStreamRPC, runSpanOptions...)
	run := &pluginv1.StreamRun{Request: req}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(ctx, span), traceFields{run})
	sc := &streamCall{rs: rs, c: c, span: span, logs: newLogLimiter(&rs.h.opts, c.OnLog), done: make(chan streamOutcome, 1)}

	rs.mu.Lock()
	if rs.err != nil {
		err := rs.err
		rs.mu.Unlock()
		span.End()
		return nil, err
	}
	rs.nextID++
	sc.id, run.Id = rs.nextID, rs.nextID
	n := proto.Size(run) + 8
	if n > maxStreamBatch {
		rs.mu.Unlock()
		err := fmt.Errorf("%w: plugin %q task %q: message over the %d-byte limit: a request of %d bytes",
			ErrProtocol, c.Plugin, c.Task, pluginv1.MaxMessageBytes, n)
		span.SetStatus(otelcodes.Error, err.Error())
		span.End()
		return nil, err
	}
	rs.calls[sc.id] = sc
	rs.queue.Runs = append(rs.queue.Runs, run)
	rs.flushLocked(true)
	return sc, nil
}

// traceFields writes a run's trace context into its StreamRun.
type traceFields struct{ r *pluginv1.StreamRun }

func (f traceFields) Get(string) string { return "" }
func (f traceFields) Set(key, value string) {
	switch key {
	case "traceparent":
		f.r.Traceparent = value
	case "tracestate":
		f.r.Tracestate = value
	}
}
func (traceFields) Keys() []string { return nil }

// cancel asks the plugin to cancel sc's run. It never waits for the stream.
func (sc *streamCall) cancel(reason string) {
	rs := sc.rs
	rs.mu.Lock()
	if rs.err == nil {
		rs.queue.Cancels = append(rs.queue.Cancels, &pluginv1.StreamCancel{Id: sc.id, Reason: reason})
		rs.flushLocked(false)
		return
	}
	rs.mu.Unlock()
}

// maxStreamBatch bounds one message on the stream below the transport's
// limit.
const maxStreamBatch = pluginv1.MaxMessageBytes - 16<<10

// flushLocked sends what is queued, with rs.mu held, and unlocks it.
// Whoever queues while nobody sends sends (wait: on this goroutine, else on
// a new one), and with it whatever is queued meanwhile, in as few messages
// as fit.
func (rs *runStream) flushLocked(wait bool) {
	if rs.sending {
		rs.mu.Unlock()
		return
	}
	rs.sending = true
	if !wait {
		rs.mu.Unlock()
		go func() {
			rs.mu.Lock()
			rs.sendLocked()
		}()
		return
	}
	rs.sendLocked()
}

func (rs *runStream) sendLocked() {
	for rs.err == nil && (len(rs.queue.Runs) > 0 || len(rs.queue.Cancels) > 0 || rs.renew) {
		// Every message carries the lease: a run starts with its bound.
		rs.renew = false
		msg := &pluginv1.RunStreamRequest{Cancels: rs.queue.Cancels, Lease: rs.leaseOf()}
		size := 0
		for _, c := range rs.queue.Cancels {
			size += len(c.GetReason()) + 16
		}
		k := 0
		for k < len(rs.queue.Runs) {
			n := proto.Size(rs.queue.Runs[k]) + 8
			if k > 0 && size+n > maxStreamBatch {
				break
			}
			size += n
			k++
		}
		msg.Runs = rs.queue.Runs[:k:k]
		rs.queue.Runs, rs.queue.Cancels = rs.queue.Runs[k:], nil
		if len(rs.queue.Runs) == 0 {
			rs.queue.Runs = nil
		}
		rs.mu.Unlock()
		err := rs.stream.Send(msg)
		rs.mu.Lock()
		if err != nil {
			rs.mu.Unlock()
			rs.fail(err) // the reader gets the cause too; whoever is first decides
			rs.mu.Lock()
		}
	}
	rs.sending = false
	rs.mu.Unlock()
}

// read delivers the plugin's events until the stream breaks.
func (rs *runStream) read() {
	for {
		msg, err := rs.stream.Recv()
		if err != nil {
			rs.fail(err)
			return
		}
		for _, ev := range msg.GetEvents() {
			rs.mu.Lock()
			sc := rs.calls[ev.GetId()]
			rs.mu.Unlock()
			if sc != nil { // else the call ended: it gave up on the run
				sc.deliver(ev)
			}
		}
	}
}

// deliver hands one event to its run: logs and progress through the call's
// callbacks, spans to the exporter; a result or a status ends the run.
func (sc *streamCall) deliver(ev *pluginv1.StreamEvent) {
	rs := sc.rs
	if st := ev.GetStatus(); st != nil {
		// The plugin answered: it did not crash, whatever the code.
		sc.end(nil, statusError(*sc.c, status.New(codes.Code(st.GetCode()), st.GetMessage())))
		return
	}
	switch e := ev.GetEvent().GetEvent().(type) {
	case *pluginv1.RunEvent_Log:
		sc.mu.Lock()
		if !sc.ends {
			sc.logs.log(e.Log)
		}
		sc.mu.Unlock()
	case *pluginv1.RunEvent_Progress:
		sc.mu.Lock()
		if !sc.ends && sc.c.OnProgress != nil {
			sc.c.OnProgress(progressOf(e.Progress))
		}
		sc.mu.Unlock()
	case *pluginv1.RunEvent_Span:
		rs.h.importSpan(rs.plugin, e.Span)
	case *pluginv1.RunEvent_Result:
		sc.end(resultOf(e.Result), nil)
	default:
		sc.end(nil, fmt.Errorf("%w: plugin %q sent an unknown event", ErrProtocol, rs.plugin))
	}
}

// end ends the run with its outcome, once: no event is delivered after it.
func (sc *streamCall) end(res *Result, err error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.ends {
		return
	}
	sc.ends = true
	rs := sc.rs
	rs.mu.Lock()
	delete(rs.calls, sc.id)
	rs.mu.Unlock()
	sc.done <- streamOutcome{res, err}
}

// wait waits for the run's outcome, or for ctx to end (the process was
// killed: the caller knows why).
func (sc *streamCall) wait(ctx context.Context) (*Result, error) {
	var out streamOutcome
	select {
	case out = <-sc.done:
	case <-ctx.Done():
		sc.end(nil, context.Cause(ctx))
		out = <-sc.done
	}
	sc.logs.finish(sc.rs.plugin, sc.rs.h.metrics)
	if out.err != nil {
		code := codes.Unknown
		if st, ok := status.FromError(out.err); ok {
			code = st.Code()
		}
		sc.span.SetAttributes(attribute.String("rpc.grpc.status_code", code.String()))
		sc.span.SetStatus(otelcodes.Error, out.err.Error())
	} else {
		sc.span.SetAttributes(attribute.String("rpc.grpc.status_code", codes.OK.String()))
	}
	sc.span.End()
	return out.res, out.err
}

// fail ends every run on a stream that broke, as their Run calls would end,
// and retires the stream: the next run opens another.
func (rs *runStream) fail(cause error) {
	rs.mu.Lock()
	if rs.err != nil {
		rs.mu.Unlock()
		return
	}
	rs.err = fmt.Errorf("run stream of plugin %q broke: %w", rs.plugin, cause)
	calls := rs.calls
	rs.calls = map[uint64]*streamCall{}
	rs.mu.Unlock()
	rs.cancel()

	inst := rs.inst
	inst.smu.Lock()
	if inst.rs == rs {
		inst.rs = nil
	}
	inst.smu.Unlock()
	if len(calls) == 0 {
		return
	}
	// Whether the process is gone (its runs crashed) is asked once: that
	// may wait a moment for it to be reaped.
	asked, gone := false, false
	for _, sc := range calls {
		err := statusError(*sc.c, status.Convert(rs.err))
		if !asked || gone {
			if crash := inst.crashed(*sc.c); crash != nil {
				err, gone = crash, true
			}
			asked = true
		}
		sc.end(nil, err)
	}
}
