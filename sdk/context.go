package sdk

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pacerun/pacer/sdk/internal/server"
)

// RunInfo identifies the attempt a task is running. The runner fills it in.
type RunInfo struct {
	JobID string
	RunID string
	// CorrelationID ties together every log line, span and record of the run,
	// in the runner and in the plugin. Pass it on to systems you call.
	CorrelationID string
	// Attempt counts from 1; retries of a slot have higher numbers.
	Attempt int
	// ScheduledTime is the slot's fire time: identical on every replica, so
	// it is a good deduplication key.
	ScheduledTime time.Time
	// FencingToken increases every time leadership of the job's shard
	// changes hands. A system that stores the highest token it has seen
	// (per shard: tokens of different shards are unrelated) can reject
	// writes from a stale leader.
	FencingToken int64
	// Shard is the job's shard: jobs are partitioned into cluster.shards
	// shards, each led by one replica. 0 from a runner without shards.
	Shard int
	// Node is the name of the runner replica that started the attempt.
	Node string
	// TraceID is the run's OpenTelemetry trace ID (hex), or "" if the runner
	// does not trace.
	TraceID string
	// Env holds the variables of the runner's environment that the job
	// passes to the task: those named by an inherit_env list in its params
	// (NAME, or PREFIX_* for all starting with PREFIX_), resolved by the
	// runner. The plugin process's own environment is minimal (PATH, HOME,
	// LANG, LC_*, TZ, TMPDIR, USER and what the runner's
	// plugins.inherit_env adds), so a task that needs more reads it here.
	// Never holds the API token's or the etcd password's variable.
	Env map[string]string
}

// Info returns the attempt's RunInfo; the zero value outside a run.
func Info(ctx context.Context) RunInfo {
	rc := server.RunFromContext(ctx)
	if rc == nil {
		return RunInfo{}
	}
	c := rc.Context
	var scheduled time.Time
	if ts := c.GetScheduledTime(); ts != nil {
		scheduled = ts.AsTime()
	}
	return RunInfo{
		JobID:         c.GetJobId(),
		RunID:         c.GetRunId(),
		CorrelationID: c.GetCorrelationId(),
		Attempt:       int(c.GetAttempt()),
		ScheduledTime: scheduled,
		FencingToken:  c.GetFencingToken(),
		Shard:         int(c.GetShard()),
		Node:          c.GetNode(),
		TraceID:       traceID(ctx),
		Env:           c.GetEnv(),
	}
}

func traceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// CorrelationID returns the run's correlation ID, or "" outside a run.
func CorrelationID(ctx context.Context) string {
	if rc := server.RunFromContext(ctx); rc != nil {
		return rc.Context.GetCorrelationId()
	}
	return ""
}

// Logger returns a logger whose records reach the runner's log, tagged there
// with the run's correlation ID, job, run ID and trace ID and passed through
// the runner's sanitizer. Outside a run it discards everything.
func Logger(ctx context.Context) *slog.Logger {
	if rc := server.RunFromContext(ctx); rc != nil {
		return slog.New(server.NewLogHandler(rc.Sink))
	}
	return slog.New(slog.DiscardHandler)
}

// ReportProgress tells the runner how far the task has got: percent in
// [0, 100] and a short message. It never blocks the task for long and is
// a no-op outside a run.
func ReportProgress(ctx context.Context, percent float64, message string) {
	if rc := server.RunFromContext(ctx); rc != nil {
		rc.Sink.Progress(percent, message)
	}
}
