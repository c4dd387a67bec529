package pluginhost

import (
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// A run as the runner sees it: a Call in, a Result, LogRecords and
// Progress out. These are the host's own types; it converts them to and
// from sdk/pluginv1's messages at its edge (this file), on both transports,
// so that its callers never build or read a wire message.

// Call is one task invocation.
type Call struct {
	Plugin string
	Task   string
	Params map[string]any
	// Info is what the task is told of its run.
	Info RunInfo
	// InheritEnv names the runner's variables (NAME or PREFIX_*) the task
	// gets, beside Info; DenyEnv never.
	InheritEnv []string
	// OnLog and OnProgress receive the plugin's events as they arrive, one
	// at a time and never after Run returned; on a RunStream on the
	// goroutine that reads the stream, so they must not block for long.
	// Either may be nil.
	OnLog      func(LogRecord)
	OnProgress func(Progress)
}

// RunInfo is what a task is told of its run: a Go plugin reads it with
// sdk.Info, a shell task as PACER_* variables.
type RunInfo struct {
	JobID         string
	RunID         string
	CorrelationID string
	Attempt       int // 1 for the first attempt of a slot
	// ScheduledTime is the slot's fire time; the zero time sends none.
	ScheduledTime time.Time
	// FencingToken is the token of the term of the job's shard that
	// started the attempt.
	FencingToken int64
	Shard        int // the job's shard (cluster.shards)
	Node         string
}

// LogRecord is a log record a plugin sent during a run.
type LogRecord struct {
	Level   slog.Level
	Message string
	// Attrs hold the record's attributes, their values as JSON decodes
	// them (float64, string, bool, nil, []any, map[string]any), ready to
	// be logged beside the run's fields: sanitized, and a key the
	// runner's lines use renamed (observability.Sanitizer.PluginAttr:
	// the plugin's correlation_id is plugin.correlation_id).
	Attrs []slog.Attr
}

// Progress is how far a task says it got.
type Progress struct {
	Percent float64
	Message string
}

// Result is a task's answer. TaskError is non-empty when the task itself
// reported failure; ProcessesLeft when the plugin could not confirm that
// every process the attempt started is dead (then no retry may start).
// Data is nil when the task returned none.
type Result struct {
	Output        string
	Data          map[string]any
	TaskError     string
	ProcessesLeft string
}

// runContext is info as the plugin receives it, with env: the variables the
// task inherits.
func runContext(info RunInfo, env map[string]string) *pluginv1.RunContext {
	rc := &pluginv1.RunContext{
		JobId: info.JobID, RunId: info.RunID, CorrelationId: info.CorrelationID, Attempt: uint32(info.Attempt),
		FencingToken: info.FencingToken, Shard: uint32(info.Shard), Node: info.Node, Env: env,
	}
	if !info.ScheduledTime.IsZero() {
		rc.ScheduledTime = timestamppb.New(info.ScheduledTime)
	}
	return rc
}

// logRecordOf converts a plugin's log record, its attributes as s.PluginAttr
// makes them.
func logRecordOf(r *pluginv1.LogRecord, s *observability.Sanitizer) LogRecord {
	attrs := make([]slog.Attr, 0, len(r.GetAttrs()))
	for _, a := range r.GetAttrs() {
		attrs = append(attrs, s.PluginAttr(slog.Any(a.GetKey(), a.GetValue().AsInterface())))
	}
	return LogRecord{Level: slog.Level(r.GetLevel()), Message: r.GetMessage(), Attrs: attrs}
}

// progressOf converts a plugin's progress report.
func progressOf(p *pluginv1.Progress) Progress {
	return Progress{Percent: p.GetPercent(), Message: p.GetMessage()}
}

// resultOf converts a plugin's result; Data is nil when it sent none.
func resultOf(r *pluginv1.RunResult) *Result {
	res := &Result{Output: r.GetOutput(), TaskError: r.GetError(), ProcessesLeft: r.GetProcessesLeft()}
	if d := r.GetData(); d != nil {
		res.Data = d.AsMap()
	}
	return res
}
