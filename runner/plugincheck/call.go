package plugincheck

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// newID returns n random bytes in hex.
func newID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// call is one Run in flight, with everything it sent back.
type call struct {
	runID, traceID, spanID string
	started                time.Time
	cancel                 context.CancelFunc
	done                   chan struct{}

	mu        sync.Mutex
	events    int
	firstSeen chan struct{} // closed at the first event or the end
	logs      []*pluginv1.LogRecord
	spans     []*pluginv1.SpanData
	result    *pluginv1.RunResult
	code      codes.Code
	msg       string
	endedAt   time.Time
	late      bool // events after the result
}

// call starts a Run of task with params, a timeout (0: none) and a sampled
// trace context of its own.
func (c *checker) call(task string, params map[string]any, timeout time.Duration) *call {
	r := &call{runID: newID(8), traceID: newID(16), spanID: newID(8), done: make(chan struct{}), firstSeen: make(chan struct{})}
	ctx, cancel := context.WithCancel(c.ctx)
	r.cancel = cancel
	c.calls = append(c.calls, r)
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-01", r.traceID, r.spanID))
	st, err := structpb.NewStruct(params)
	req := &pluginv1.RunRequest{Task: task, Params: st, Context: &pluginv1.RunContext{
		JobId: "pacer-check", RunId: r.runID, CorrelationId: "check-" + r.runID, Attempt: 1,
		ScheduledTime: timestamppb.New(time.Now().Truncate(time.Second)), FencingToken: 1, Node: "pacer-check",
	}}
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
	}
	r.started = time.Now()
	if err != nil {
		r.finish(codes.InvalidArgument, "params are not JSON-compatible: "+err.Error(), nil)
		return r
	}
	stream, err := c.s.rpc.Run(ctx, req)
	if err != nil {
		st := status.Convert(err)
		r.finish(st.Code(), st.Message(), nil)
		return r
	}
	go r.read(stream)
	return r
}

func (r *call) read(stream grpc.ServerStreamingClient[pluginv1.RunEvent]) {
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			r.mu.Lock()
			hasResult := r.result != nil
			r.mu.Unlock()
			if hasResult {
				r.finish(codes.OK, "", nil)
			} else {
				r.finish(codes.Internal, "the stream ended without a result", nil)
			}
			return
		}
		if err != nil {
			st := status.Convert(err)
			r.finish(st.Code(), st.Message(), nil)
			return
		}
		r.mu.Lock()
		r.events++
		if r.events == 1 {
			close(r.firstSeen)
		}
		if r.result != nil {
			r.late = true
		}
		switch e := ev.GetEvent().(type) {
		case *pluginv1.RunEvent_Log:
			r.logs = append(r.logs, e.Log)
		case *pluginv1.RunEvent_Span:
			r.spans = append(r.spans, e.Span)
		case *pluginv1.RunEvent_Result:
			r.result = e.Result
			r.endedAt = time.Now()
		}
		r.mu.Unlock()
	}
}

func (r *call) finish(code codes.Code, msg string, res *pluginv1.RunResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.done:
		return
	default:
	}
	r.code, r.msg = code, msg
	if res != nil {
		r.result = res
	}
	if r.endedAt.IsZero() {
		r.endedAt = time.Now()
	}
	if r.events == 0 {
		close(r.firstSeen)
	}
	close(r.done)
}

// wait waits up to d for the run to end.
func (r *call) wait(d time.Duration) {
	select {
	case <-r.done:
	case <-time.After(d):
	}
}

func (r *call) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// endTime is when the run's result or status arrived.
func (r *call) endTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.endedAt
}

// hangUp ends the RPC from this side, as a runner that gives up does.
func (r *call) hangUp() { r.cancel() }

func (r *call) describe() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.code != codes.OK:
		return fmt.Sprintf("status %s: %s", r.code, r.msg)
	case r.result == nil:
		return "no result"
	case r.result.GetError() != "":
		return fmt.Sprintf("a result with error %q", truncate(r.result.GetError(), 160))
	}
	return fmt.Sprintf("a successful result (output %q)", truncate(r.result.GetOutput(), 80))
}
