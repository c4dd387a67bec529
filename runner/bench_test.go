package runner

import (
	"context"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
)

// noopTasks answers every call at once, as a no-op task would.
type noopTasks struct{}

func (noopTasks) Run(context.Context, pluginhost.Call) (*pluginhost.Result, error) {
	return &pluginhost.Result{}, nil
}

// BenchmarkAttempt is the runner's own work for one attempt of a slot,
// without etcd and without a plugin: the attempt's span, the claim's and
// the final record's encoding, the two log lines (JSON through the
// sanitizer, as `pacer run` logs them), the metrics, the call. Its allocs/op
// are what each run adds to the runner's garbage collection.
func BenchmarkAttempt(b *testing.B) {
	s, err := observability.NewSanitizer(observability.SanitizerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	log, err := observability.NewLogger(io.Discard, slog.LevelInfo, "json", s)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := observability.NewTracing(context.Background(), observability.TracingOptions{Exporter: "none", SampleRatio: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	r := New(Options{Node: "bench", Tasks: noopTasks{}, Logger: log.With("node", "bench"),
		Tracer: tr.Provider.Tracer("github.com/pacerun/pacer/runner"), Sanitize: s.String})
	job := &Job{ID: "bench-0001", Plugin: "testplugin", Task: "stamp", Schedule: schedule.Every(time.Second),
		Timeout: 10 * time.Second, Params: map[string]any{"path": "/tmp/stamps.jsonl"}}
	r.initJobMetrics(job)
	term := &coord.Term{Token: 42}
	slot := Slot{Job: job, Time: time.Now().Truncate(time.Second)}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		correlationID := observability.NewCorrelationID()
		base := Record{Job: job.ID, ScheduledTime: slot.Time.UTC(), CorrelationID: correlationID, Node: r.o.Node, FencingToken: term.Token}
		claim := base
		claim.State, claim.Start, claim.RunID = "running", wallNow().UTC(), observability.NewRunID()
		a := &attemptRun{slot: slot, term: term, runID: claim.RunID, correlationID: correlationID, number: 1}
		spanCtx, span := r.startRunSpan(ctx, a)
		if _, err := encodeRecord(&claim); err != nil {
			b.Fatal(err)
		}
		final, _ := r.execute(spanCtx, span, a, base)
		if _, err := encodeRecord(&final); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far: steadier than
// wall time on a machine shared with other work.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
