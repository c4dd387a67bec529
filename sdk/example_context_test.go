package sdk_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// report uses everything a task gets from its context: the run's identity,
// a logger, progress reports and spans.
func report(ctx context.Context, _ *sdk.Request, resp *sdk.Response) error {
	info := sdk.Info(ctx)
	log := sdk.Logger(ctx)
	log.Info("starting", "job", info.JobID, "attempt", info.Attempt)

	ctx, span := otel.Tracer("report").Start(ctx, "render")
	sdk.ReportProgress(ctx, 50, "rendered")
	span.End()

	if info.FencingToken < 7 {
		log.Warn("stale leader: not writing", "token", info.FencingToken)
		return fmt.Errorf("fencing token %d is older than the last write's", info.FencingToken)
	}
	resp.Output = "written for slot " + info.ScheduledTime.Format(time.DateTime)
	return nil
}

// A task's context carries the run: its identity (sdk.Info), a logger whose
// lines reach the runner's log (sdk.Logger), progress (sdk.ReportProgress)
// and the trace its spans join. sdktest shows what the task reported.
func Example_taskContext() {
	h := sdktest.Serve(&testing.T{}, sdk.Plugin{Name: "reports", Tasks: map[string]sdk.Task{
		"report": sdk.Describe("Writes a report.", report),
	}})
	defer h.Close()

	slot := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	res := h.Run(context.Background(), sdktest.Call{Task: "report", Info: sdk.RunInfo{
		JobID: "nightly", Attempt: 2, ScheduledTime: slot, FencingToken: 9,
	}})
	fmt.Println(res.Output, res.Err)
	for _, l := range res.Logs {
		fmt.Println(l.Level, l.Message, l.Attrs)
	}
	fmt.Println(res.Progress, res.Spans[0].Name)

	res = h.Run(context.Background(), sdktest.Call{Task: "report", Info: sdk.RunInfo{FencingToken: 3}})
	fmt.Println(res.Err)
	// Output:
	// written for slot 2026-03-01 02:00:00 <nil>
	// INFO starting map[attempt:2 job:nightly]
	// [{50 rendered}] render
	// fencing token 3 is older than the last write's
}
