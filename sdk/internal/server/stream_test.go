package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/internal/server"
	"github.com/pacerun/pacer/sdk/pluginv1"
	"github.com/pacerun/pacer/sdk/proctree"
)

// The process-wide reaper sdk/proctree starts with its first command lives
// as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/pacerun/pacer/sdk/proctree.(*reaperState).start.func1"))
}

// serve runs p's service on a loopback gRPC server and returns a client.
func serve(t testing.TB, p sdk.Plugin) pluginv1.TaskPluginClient {
	t.Helper()
	srv, err := server.FromPlugin(p)
	if err != nil {
		t.Fatal(err)
	}
	return serveServer(t, srv)
}

// serveServer is serve for a server made already.
func serveServer(t testing.TB, srv *server.Server) pluginv1.TaskPluginClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := server.NewGRPCServer(nil)
	pluginv1.RegisterTaskPluginServer(gs, srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		gs.Stop()
		<-served
		srv.WaitRuns(5 * time.Second)
	})
	return pluginv1.NewTaskPluginClient(cc)
}

// blocking is a plugin whose task "block" waits for its context to end,
// reports the cause on ended, and answers with it; "echo" answers its
// params' message; "panic" panics.
func blocking(ended chan<- string) sdk.Plugin {
	return sdk.Plugin{Name: "blocking", Tasks: map[string]sdk.Task{
		"block": sdk.TaskFunc(func(ctx context.Context, _ *sdk.Request, resp *sdk.Response) error {
			<-ctx.Done()
			cause := context.Cause(ctx).Error()
			ended <- cause
			return errors.New(cause)
		}),
		"echo": sdk.TaskFunc(func(ctx context.Context, req *sdk.Request, resp *sdk.Response) error {
			resp.Output = fmt.Sprint(req.Params["message"]) + " " + sdk.Info(ctx).TraceID
			return nil
		}),
		"panic": sdk.TaskFunc(func(context.Context, *sdk.Request, *sdk.Response) error { panic("boom") }),
		// A command that answers SIGTERM by saying so, with an hour's
		// grace: how it ended is the output.
		"term": sdk.TaskFunc(func(ctx context.Context, _ *sdk.Request, resp *sdk.Response) error {
			var out strings.Builder
			c := proctree.Command(ctx, "sh", "-c", `trap 'echo term; exit 0' TERM; while :; do sleep 0.05; done`)
			c.Stdout, c.Grace = &out, time.Hour
			res, err := c.Run()
			if err != nil {
				return err
			}
			resp.Output = res.State + " " + out.String()
			return nil
		}),
	}}
}

func streamRun(id uint64, task string, params map[string]any) *pluginv1.StreamRun {
	p, _ := structpb.NewStruct(params)
	return &pluginv1.StreamRun{Id: id, Request: &pluginv1.RunRequest{Task: task, Params: p,
		Context: &pluginv1.RunContext{RunId: fmt.Sprint("run-", id)}}}
}

// recvAll reads the stream's events until want runs have ended, and
// returns each run's last event.
func recvAll(t *testing.T, s grpc.BidiStreamingClient[pluginv1.RunStreamRequest, pluginv1.RunStreamResponse], want int) map[uint64]*pluginv1.StreamEvent {
	t.Helper()
	last := map[uint64]*pluginv1.StreamEvent{}
	for len(last) < want {
		msg, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		for _, ev := range msg.GetEvents() {
			if ev.GetStatus() != nil || ev.GetEvent().GetResult() != nil {
				if _, dup := last[ev.GetId()]; dup {
					t.Fatalf("run %d ended twice", ev.GetId())
				}
				last[ev.GetId()] = ev
			}
		}
	}
	return last
}

func TestDescribeDeclaresRunStream(t *testing.T) {
	c := serve(t, blocking(make(chan string, 1)))
	d, err := c.Describe(context.Background(), &pluginv1.DescribeRequest{})
	if err != nil || !d.GetCapabilities().GetRunStream() {
		t.Fatalf("describe = %v, %v; want capabilities.run_stream", d, err)
	}
}

// Each run on a stream ends exactly as its own Run call would: a result,
// or the status Run would end with; the trace context in the message is
// the run's; the first message opens the plugin's side, empty.
func TestRunStreamRunsEndAsRunCallsWould(t *testing.T) {
	c := serve(t, blocking(make(chan string, 1)))
	s, err := c.RunStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first, err := s.Recv(); err != nil || len(first.GetEvents()) != 0 {
		t.Fatalf("first message = %v, %v; want an empty one", first, err)
	}
	traced := streamRun(1, "echo", map[string]any{"message": "hi"})
	traced.Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{
		traced,
		streamRun(2, "nope", nil),
		streamRun(3, "panic", nil),
	}}); err != nil {
		t.Fatal(err)
	}
	got := recvAll(t, s, 3)
	if out := got[1].GetEvent().GetResult().GetOutput(); out != "hi 0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("run 1 output %q, want its message and the trace ID sent", out)
	}
	if st := got[2].GetStatus(); codes.Code(st.GetCode()) != codes.NotFound {
		t.Errorf("unknown task: %v, want NotFound", st)
	}
	if st := got[3].GetStatus(); codes.Code(st.GetCode()) != codes.Internal {
		t.Errorf("panic: %v, want Internal", st)
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err == nil {
		t.Fatal("stream still open after the runner closed its side")
	}
}

// A cancel on the stream cancels that run with its reason; a run ID used
// twice at once is refused; when the stream ends, every run on it is
// cancelled.
func TestRunStreamCancels(t *testing.T) {
	ended := make(chan string, 4)
	c := serve(t, blocking(ended))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.RunStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{
		streamRun(1, "block", nil), streamRun(2, "block", nil), streamRun(2, "block", nil),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pluginv1.RunStreamRequest{Cancels: []*pluginv1.StreamCancel{{Id: 1, Reason: "timed out after 1s"}}}); err != nil {
		t.Fatal(err)
	}
	got := recvAll(t, s, 2)
	if e := got[1].GetEvent().GetResult().GetError(); e != "timed out after 1s" {
		t.Errorf("cancelled run: error %q, want the reason sent", e)
	}
	if st := got[2].GetStatus(); codes.Code(st.GetCode()) != codes.InvalidArgument {
		t.Errorf("second run with ID 2: %v, want InvalidArgument", st)
	}
	if cause := <-ended; cause != "timed out after 1s" {
		t.Fatalf("task 1 ended with %q", cause)
	}
	cancel() // the runner's side ends: run 2 is cancelled
	select {
	case cause := <-ended:
		t.Logf("run 2 ended with %q", cause)
	case <-time.After(10 * time.Second):
		t.Fatal("a run still ran 10s after its stream ended")
	}
}

// A stream whose runner sent a lease and then nothing (a frozen runner)
// cancels its runs once the lease has run out, with a reason that says why;
// a renewal before that keeps them going, and a stream that never got a
// lease has no bound.
// When the lease runs out, the runs' commands get SIGKILL at once, not
// SIGTERM and their grace: a successor may start the same slots, and a
// process ignoring SIGTERM would overlap its run. Before, the command saw
// SIGTERM (attack 25, W5: a frozen runner's tree outlived its lease by up
// to 2 s, into the new leader's re-run).
func TestRunStreamLeaseExpiryKillsCommandsWithoutGrace(t *testing.T) {
	c := serve(t, blocking(make(chan string, 1)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.RunStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{streamRun(1, "term", nil)},
		Lease: &pluginv1.Lease{RemainingMs: 300}}); err != nil {
		t.Fatal(err)
	}
	got := recvAll(t, s, 1)[1].GetEvent().GetResult()
	if out := got.GetOutput(); !strings.HasPrefix(out, "signal: killed") || strings.Contains(out, "term") {
		t.Fatalf("the command ended %q (error %q), want killed without SIGTERM", out, got.GetError())
	}
}

func TestRunStreamCancelsRunsWhenTheLeaseIsNotRenewed(t *testing.T) {
	ended := make(chan string, 4)
	c := serve(t, blocking(ended))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.RunStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	// No lease yet: run 1 has no bound.
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{streamRun(1, "block", nil)}}); err != nil {
		t.Fatal(err)
	}
	// A lease of 300ms, renewed once with 300ms from then, then nothing.
	const lease = 300 * time.Millisecond
	start := time.Now()
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{streamRun(2, "block", nil)},
		Lease: &pluginv1.Lease{RemainingMs: lease.Milliseconds()}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pluginv1.RunStreamRequest{Lease: &pluginv1.Lease{RemainingMs: lease.Milliseconds()}}); err != nil {
		t.Fatal(err)
	}
	recvd := make(chan map[uint64]*pluginv1.StreamEvent, 1)
	go func() { recvd <- recvAll(t, s, 2) }()
	var got map[uint64]*pluginv1.StreamEvent
	select {
	case got = <-recvd:
	case <-time.After(10 * time.Second):
		t.Fatal("the runs still ran 10s after a lease of 300ms that was not renewed")
	}
	elapsed := time.Since(start)
	if elapsed < lease {
		t.Errorf("runs cancelled %s after a lease of %s", elapsed, lease)
	}
	t.Logf("runs cancelled %s after the lease was sent (lease %s)", elapsed.Round(time.Millisecond), lease)
	for id := uint64(1); id <= 2; id++ {
		if e := got[id].GetEvent().GetResult().GetError(); !strings.Contains(e, "has not renewed its lease") {
			t.Errorf("run %d: error %q, want the lease named", id, e)
		}
	}
	// A run that arrives once the lease passed, with no renewal, is
	// cancelled at once; one with a renewal runs.
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{streamRun(3, "block", nil)}}); err != nil {
		t.Fatal(err)
	}
	if got := recvAll(t, s, 1); !strings.Contains(got[3].GetEvent().GetResult().GetError(), "has not renewed its lease") {
		t.Errorf("run started after the lease passed: %v", got[3])
	}
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{streamRun(4, "echo", map[string]any{"message": "hi"})},
		Lease: &pluginv1.Lease{RemainingMs: time.Minute.Milliseconds()}}); err != nil {
		t.Fatal(err)
	}
	if got := recvAll(t, s, 1); !strings.HasPrefix(got[4].GetEvent().GetResult().GetOutput(), "hi") {
		t.Errorf("run under a renewed lease: %v", got[4])
	}
	for range 3 {
		<-ended
	}
}

// A span too big for a message is dropped alone: the run's result still
// comes, and the stream serves the next run. Before, the failed send of the
// span marked the run's events failed, its result was never sent, and the
// runner waited for it until the run timed out.
func TestRunStreamDropsAnOversizedSpanAndStillEndsTheRun(t *testing.T) {
	var tp *sdktrace.TracerProvider
	p := sdk.Plugin{Name: "spans", Tasks: map[string]sdk.Task{
		"big": sdk.TaskFunc(func(ctx context.Context, _ *sdk.Request, resp *sdk.Response) error {
			_, span := tp.Tracer("t").Start(ctx, "huge")
			span.SetAttributes(attribute.String("blob", strings.Repeat("x", pluginv1.MaxMessageBytes+1)))
			span.End()
			resp.Output = "done"
			return nil
		}),
	}}
	srv, err := server.FromPlugin(p)
	if err != nil {
		t.Fatal(err)
	}
	tp = server.NewTracerProvider(srv)
	defer func() { _ = tp.Shutdown(context.Background()) }()
	c := serveServer(t, srv)
	// Bounded: before the fix the result never came.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.RunStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 2; id++ {
		run := streamRun(id, "big", nil)
		run.Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" // sampled: the span is shipped
		if err := s.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{run}}); err != nil {
			t.Fatal(err)
		}
		got := recvAll(t, s, 1)
		if out := got[id].GetEvent().GetResult().GetOutput(); out != "done" {
			t.Fatalf("run %d ended with %v; want its result", id, got[id])
		}
	}
	_ = s.CloseSend()
}

// A run on a RunStream starts on a stack that holds a task some frames
// deep (decoding its params, say) without growing: the stack is not copied
// while the task runs (issue 16, ninth pass). A copy moves the task's
// locals, so an address taken as a number at the task's start no longer
// matches.
func TestRunStreamRunsStartWithRoomOnTheStack(t *testing.T) {
	deep := sdk.TaskFunc(func(_ context.Context, _ *sdk.Request, resp *sdk.Response) error {
		var here byte
		at := uintptr(unsafe.Pointer(&here))
		stackFrames(8, func() {}) // 8 KiB of frames below this one
		if now := uintptr(unsafe.Pointer(&here)); now != at {
			resp.Output = fmt.Sprintf("the stack moved: a local at %#x is now at %#x", at, now)
		}
		return nil
	})
	c := serve(t, sdk.Plugin{Name: "deep", Tasks: map[string]sdk.Task{"deep": deep}})
	s, err := c.RunStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	const runs = 20
	var batch []*pluginv1.StreamRun
	for id := range uint64(runs) {
		batch = append(batch, streamRun(id+1, "deep", nil))
	}
	if err := s.Send(&pluginv1.RunStreamRequest{Runs: batch}); err != nil {
		t.Fatal(err)
	}
	for id, ev := range recvAll(t, s, runs) {
		if out := ev.GetEvent().GetResult().GetOutput(); out != "" {
			t.Errorf("run %d: %s", id, out)
		}
	}
	_ = s.CloseSend()
	_, _ = s.Recv()
}

// stackFrames calls f n frames deep, each frame holding 1 KiB.
//
//go:noinline
func stackFrames(n int, f func()) {
	var pad [1 << 10]byte
	if n == 0 {
		f()
		return
	}
	stackFrames(n-1, f)
	keep(pad[:])
}

//go:noinline
func keep([]byte) {}

// BenchmarkRunStreamDecodeParams is runs on a RunStream of a task that
// decodes its params, as most do, 32 at a time, both ends in this process:
// its CPU per run (cpu-ns/op) includes the gRPC client's.
func BenchmarkRunStreamDecodeParams(b *testing.B) {
	decode := sdk.TaskFunc(func(_ context.Context, req *sdk.Request, _ *sdk.Response) error {
		var p struct {
			Path     string `json:"path"`
			Duration string `json:"duration"`
		}
		return req.DecodeParams(&p)
	})
	c := serve(b, sdk.Plugin{Name: "decode", Tasks: map[string]sdk.Task{"decode": decode}})
	s, err := c.RunStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		b.Fatal(err)
	}
	const batch = 32
	runs := make([]*pluginv1.StreamRun, batch)
	for i := range runs {
		runs[i] = streamRun(0, "decode", map[string]any{"path": "/tmp/stamps.jsonl"})
	}
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	id, n := uint64(0), 0
	for b.Loop() {
		for _, r := range runs {
			id++
			r.Id = id
		}
		if err := s.Send(&pluginv1.RunStreamRequest{Runs: runs}); err != nil {
			b.Fatal(err)
		}
		for ended := 0; ended < batch; {
			msg, err := s.Recv()
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range msg.GetEvents() {
				if ev.GetEvent().GetResult() == nil {
					b.Fatalf("run %d: %v", ev.GetId(), ev)
				}
				ended++
			}
		}
		n += batch
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	used := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	b.ReportMetric(float64(used)/float64(n), "cpu-ns/run")
	_ = s.CloseSend()
	_, _ = s.Recv()
}
