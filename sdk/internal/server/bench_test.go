package server

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// noopDispatcher runs one task, "noop", that reads its params as the SDK's
// dispatcher does and returns nothing.
type noopDispatcher struct{}

func (noopDispatcher) Describe() *pluginv1.DescribeResponse { return &pluginv1.DescribeResponse{} }

func (noopDispatcher) Run(_ context.Context, req *pluginv1.RunRequest) (*pluginv1.RunResult, error) {
	if req.GetTask() != "noop" {
		return nil, status.Error(codes.NotFound, "no such task")
	}
	_ = req.GetParams().AsMap()
	return &pluginv1.RunResult{}, nil
}

// BenchmarkServeOnStream is the plugin's side of one run on a RunStream,
// without the transport: the request as it arrives (decoded), the run's
// context and bookkeeping, the task, and the result event encoded as it
// leaves.
func BenchmarkServeOnStream(b *testing.B) {
	s := New(noopDispatcher{})
	params, _ := structpb.NewStruct(map[string]any{"path": "/tmp/stamps.jsonl"})
	wire, err := proto.Marshal(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{{
		Id: 1,
		Request: &pluginv1.RunRequest{Task: "noop", Params: params, Timeout: durationpb.New(10 * time.Second),
			Context: &pluginv1.RunContext{JobId: "bench-0001", RunId: "01a24a63-3f84-7db1-95e3-0196f9db02d3",
				CorrelationId: "6f1c2b9e-2c1d-4c51-9a53-0d6f3c1b2a44", Attempt: 1,
				ScheduledTime: timestamppb.Now(), FencingToken: 42, Node: "bench"}},
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
	}}})
	if err != nil {
		b.Fatal(err)
	}
	out := &muxOut{send: func(m *pluginv1.RunStreamResponse) error {
		_, err := proto.Marshal(m)
		return err
	}}
	out.drained = newCond(out)
	base := context.Background()
	b.ReportAllocs()
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	for b.Loop() {
		var req pluginv1.RunStreamRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			b.Fatal(err)
		}
		r := req.GetRuns()[0]
		ctx, cancel := context.WithCancelCause(extractTraceFields(base, r))
		s.serveOnStream(ctx, r.GetId(), r.GetRequest(), out)
		cancel(nil)
	}
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	used := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	b.ReportMetric(float64(used)/float64(b.N), "cpu-ns/op")
}
