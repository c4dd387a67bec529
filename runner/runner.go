package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Coordinator is what the Runner needs from cluster coordination.
type Coordinator interface {
	// Term returns the current leadership term, or nil when not leading.
	Term() *coord.Term
	Claim(ctx context.Context, t *coord.Term, job string, slot time.Time, claim []byte) error
	Complete(ctx context.Context, t *coord.Term, job string, slot time.Time, record []byte) error
}

// TaskRunner runs one task attempt in a plugin.
type TaskRunner interface {
	Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error)
}

var (
	_ Coordinator = (*coord.Coordinator)(nil)
	_ TaskRunner  = (*pluginhost.Host)(nil)
)

// Options configure a Runner.
type Options struct {
	Node    string
	Coord   Coordinator
	Tasks   TaskRunner
	Logger  *slog.Logger
	Metrics *observability.Metrics
	Tracer  trace.Tracer
	// Sanitize cleans text that leaves the runner (records, span attributes).
	Sanitize func(string) string
	// MaxOutputBytes bounds the output kept in a run record. Default 64 KiB.
	MaxOutputBytes int
}

// Runner fires slots: claim, run, record.
type Runner struct {
	o     Options
	log   *slog.Logger
	sched *Scheduler

	stopCtx  context.Context // cancelled to abort every run
	stopRuns context.CancelFunc

	mu      sync.Mutex
	stopped bool
	running map[string]map[string]context.CancelFunc // job ID -> run ID -> cancel
	wg      sync.WaitGroup
}

// New returns a Runner. Call Start to begin scheduling.
func New(o Options) *Runner {
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = 64 << 10
	}
	if o.Sanitize == nil {
		o.Sanitize = func(s string) string { return s }
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{o: o, log: o.Logger, stopCtx: ctx, stopRuns: cancel, running: map[string]map[string]context.CancelFunc{}}
	r.sched = NewScheduler(r.Fire, r.missed)
	return r
}

// SetJobs replaces the scheduled jobs.
func (r *Runner) SetJobs(jobs []*Job) { r.sched.Set(jobs) }

// Start runs the scheduler until ctx is done.
func (r *Runner) Start(ctx context.Context) { r.sched.Run(ctx) }

// Stop stops firing new slots and waits for running attempts to finish. When
// ctx ends first, the remaining attempts are cancelled and Stop waits for
// them to return.
func (r *Runner) Stop(ctx context.Context) {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("drain timeout: cancelling running runs")
		r.stopRuns()
		<-done
	}
}

func (r *Runner) missed(j *Job, n int) {
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, "misfire").Add(float64(n))
	r.log.Warn("slots missed while the scheduler could not run", "job", j.ID, "missed", n)
}

// Fire starts a slot if this replica leads. It never blocks.
func (r *Runner) Fire(s Slot) {
	t := r.o.Coord.Term()
	if t == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if n := len(r.running[s.Job.ID]); n > 0 {
		switch s.Job.Overlap {
		case OverlapAllow:
		case OverlapReplace:
			for _, cancel := range r.running[s.Job.ID] {
				cancel()
			}
		default:
			r.o.Metrics.JobSkipped.WithLabelValues(s.Job.ID, "overlap").Inc()
			r.log.Warn("slot skipped: previous run still running", "job", s.Job.ID,
				"scheduled_time", s.Time, "reason", "overlap")
			return
		}
	}
	a := &attempt{
		slot:          s,
		term:          t,
		runID:         observability.NewRunID(),
		correlationID: observability.NewCorrelationID(),
		number:        1,
	}
	ctx, cancel := context.WithCancel(r.stopCtx)
	stop := context.AfterFunc(t.Context(), cancel) // leadership lost => stop
	if r.running[s.Job.ID] == nil {
		r.running[s.Job.ID] = map[string]context.CancelFunc{}
	}
	r.running[s.Job.ID][a.runID] = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer stop()
		defer cancel()
		r.execute(ctx, a)
		r.mu.Lock()
		delete(r.running[s.Job.ID], a.runID)
		if len(r.running[s.Job.ID]) == 0 {
			delete(r.running, s.Job.ID)
		}
		r.mu.Unlock()
	}()
}

// attempt is one try at running a slot.
type attempt struct {
	slot          Slot
	term          *coord.Term
	runID         string
	correlationID string
	number        int
}

// Record is what is stored in etcd for a slot: first the claim, then the
// result of its run.
type Record struct {
	Job           string    `json:"job"`
	ScheduledTime time.Time `json:"scheduled_time"`
	RunID         string    `json:"run_id"`
	CorrelationID string    `json:"correlation_id"`
	TraceID       string    `json:"trace_id,omitempty"`
	Node          string    `json:"node"`
	FencingToken  int64     `json:"fencing_token"`
	Attempt       int       `json:"attempt"`
	State         string    `json:"state"` // running, then the outcome
	Start         time.Time `json:"start"`
	End           time.Time `json:"end,omitzero"`
	Error         string    `json:"error,omitempty"`
	Output        string    `json:"output,omitempty"`
}

func (r *Runner) execute(ctx context.Context, a *attempt) {
	job := a.slot.Job
	start := time.Now()
	ctx, span := r.o.Tracer.Start(ctx, "pacer.run", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(
			attribute.String("pacer.job.id", job.ID),
			attribute.String("pacer.run.id", a.runID),
			attribute.String("pacer.correlation_id", r.o.Sanitize(a.correlationID)),
			attribute.Int("pacer.attempt", a.number),
			attribute.String("pacer.scheduled_time", a.slot.Time.UTC().Format(time.RFC3339Nano)),
			attribute.Int64("pacer.fencing_token", a.term.Token),
			attribute.String("pacer.plugin", job.Plugin),
			attribute.String("pacer.task", job.Task),
		))
	defer span.End()
	traceID := span.SpanContext().TraceID().String()
	log := r.log.With(
		"correlation_id", a.correlationID, "job", job.ID, "run_id", a.runID,
		"trace_id", traceID, "span_id", span.SpanContext().SpanID().String(),
	)
	rec := Record{
		Job: job.ID, ScheduledTime: a.slot.Time.UTC(), RunID: a.runID, CorrelationID: a.correlationID,
		TraceID: traceID, Node: r.o.Node, FencingToken: a.term.Token, Attempt: a.number,
		State: "running", Start: start.UTC(),
	}

	if err := r.claim(ctx, a, rec); err != nil {
		reason := "lock_lost"
		if errors.Is(err, coord.ErrSlotTaken) {
			reason = "claimed_elsewhere"
		}
		span.SetStatus(codes.Error, "claim failed")
		span.SetAttributes(attribute.String("pacer.skip_reason", reason))
		r.o.Metrics.JobSkipped.WithLabelValues(job.ID, reason).Inc()
		log.Warn("slot not run: claim failed", "reason", reason, "error", err)
		return
	}
	lag := start.Sub(a.slot.Time).Seconds()
	observability.ObserveWithTrace(r.o.Metrics.ScheduleLag.WithLabelValues(job.ID), lag, traceID)
	running := r.o.Metrics.JobRunning.WithLabelValues(job.ID)
	running.Inc()
	defer running.Dec()
	log.Info("run started", "plugin", job.Plugin, "task", job.Task, "scheduled_time", a.slot.Time.UTC(),
		"fencing_token", a.term.Token, "lag_ms", time.Since(a.slot.Time).Milliseconds())

	rctx, cancel := context.WithTimeout(ctx, job.Timeout)
	defer cancel()
	res, err := r.o.Tasks.Run(rctx, pluginhost.Call{
		Plugin: job.Plugin,
		Task:   job.Task,
		Params: job.Params,
		Context: &pluginv1.RunContext{
			JobId: job.ID, RunId: a.runID, CorrelationId: a.correlationID, Attempt: uint32(a.number),
			ScheduledTime: timestamppb.New(a.slot.Time), FencingToken: a.term.Token, Node: r.o.Node,
		},
		OnLog: func(l *pluginv1.LogRecord) { pluginLog(log, job.Plugin, l) },
		OnProgress: func(p *pluginv1.Progress) {
			log.Info("run progress", "percent", p.GetPercent(), "progress", p.GetMessage())
		},
	})
	outcome, errText := classify(rctx, res, err)
	elapsed := time.Since(start)

	rec.State, rec.End, rec.Error = outcome, time.Now().UTC(), r.o.Sanitize(errText)
	if res != nil {
		rec.Output = r.o.Sanitize(truncate(res.Output, r.o.MaxOutputBytes))
	}
	r.o.Metrics.JobRuns.WithLabelValues(job.ID, job.Plugin, outcome).Inc()
	observability.ObserveWithTrace(r.o.Metrics.JobRunDuration.WithLabelValues(job.ID, job.Plugin), elapsed.Seconds(), traceID)
	span.SetAttributes(attribute.String("pacer.outcome", outcome))
	if outcome == observability.OutcomeSuccess {
		r.o.Metrics.LastSuccess.WithLabelValues(job.ID).SetToCurrentTime()
		span.SetStatus(codes.Ok, "")
		log.Info("run finished", "outcome", outcome, "duration_ms", elapsed.Milliseconds())
	} else {
		span.SetStatus(codes.Error, r.o.Sanitize(errText))
		log.Warn("run finished", "outcome", outcome, "duration_ms", elapsed.Milliseconds(), "error", errText)
	}
	r.record(a, rec, log)
}

func (r *Runner) claim(ctx context.Context, a *attempt, rec Record) error {
	ctx, span := r.o.Tracer.Start(ctx, "pacer.claim")
	defer span.End()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.o.Coord.Claim(ctx, a.term, a.slot.Job.ID, a.slot.Time, b); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	return nil
}

// record stores the result. It uses a fresh context: the run's own may be
// cancelled, but the fencing guard still decides whether the write lands.
func (r *Runner) record(a *attempt, rec Record, log *slog.Logger) {
	b, err := json.Marshal(rec)
	if err == nil {
		err = r.o.Coord.Complete(context.Background(), a.term, a.slot.Job.ID, a.slot.Time, b)
	}
	if err != nil {
		log.Warn("run result not recorded", "error", err)
	}
}

// classify maps an attempt's result to an outcome and an error text.
func classify(ctx context.Context, res *pluginhost.Result, err error) (string, string) {
	switch {
	case err == nil && res.TaskError == "":
		return observability.OutcomeSuccess, ""
	case err == nil:
		// The task answered, but after its context ended: the context's
		// end is what happened to it.
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return observability.OutcomeTimeout, res.TaskError
		case ctx.Err() != nil:
			return observability.OutcomeCanceled, res.TaskError + " (" + context.Cause(ctx).Error() + ")"
		}
		return observability.OutcomeFailure, res.TaskError
	case errors.Is(err, context.DeadlineExceeded):
		return observability.OutcomeTimeout, "timed out: " + err.Error()
	case errors.Is(err, context.Canceled):
		return observability.OutcomeCanceled, "canceled: " + context.Cause(ctx).Error()
	case errors.Is(err, pluginhost.ErrPluginCrashed):
		return observability.OutcomeCrashed, err.Error()
	default:
		return observability.OutcomeFailure, err.Error()
	}
}

// pluginLog forwards a plugin's log record through the run's logger.
func pluginLog(log *slog.Logger, plugin string, l *pluginv1.LogRecord) {
	attrs := make([]slog.Attr, 0, len(l.GetAttrs())+2)
	attrs = append(attrs, slog.String("source", "plugin"), slog.String("plugin", plugin))
	for _, a := range l.GetAttrs() {
		attrs = append(attrs, slog.Any(a.GetKey(), a.GetValue().AsInterface()))
	}
	log.LogAttrs(context.Background(), slog.Level(l.GetLevel()), l.GetMessage(), attrs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("\n[truncated %d bytes]", len(s)-n)
}
