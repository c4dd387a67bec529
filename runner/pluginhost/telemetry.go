package pluginhost

import (
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// RestartReasons are every value of pacer_plugin_restarts_total's reason
// label.
var RestartReasons = []string{ReasonCrash, ReasonHung, ReasonUnhealthy, ReasonStart, ReasonRestart}

// hostMetrics records pacer_plugin_* metrics; it does nothing without them.
type hostMetrics struct{ m *observability.Metrics }

// configured creates a plugin's series at 0 for every known label value,
// so that its first restart or dropped log line shows in increase() and
// alerts (see runner/metrics.go). pacer_plugin_up is left alone: it is set
// when the process starts or stops.
func (hm hostMetrics) configured(plugin string) {
	if hm.m == nil {
		return
	}
	for _, reason := range RestartReasons {
		hm.m.PluginRestarts.WithLabelValues(plugin, reason)
	}
	hm.m.PluginLogsDropped.WithLabelValues(plugin)
}

func (hm hostMetrics) up(plugin string, up bool) {
	if hm.m == nil {
		return
	}
	hm.m.PluginUp.WithLabelValues(plugin).Set(b2f(up))
}

// unavailable records whether the last attempt to get a process for a call
// failed (start failure or quarantine): the plugin is needed and not running.
func (hm hostMetrics) unavailable(plugin string, v bool) {
	if hm.m != nil {
		hm.m.PluginUnavailable.WithLabelValues(plugin).Set(b2f(v))
	}
}

func (hm hostMetrics) quarantined(plugin string, v bool) {
	if hm.m != nil {
		hm.m.PluginQuarantined.WithLabelValues(plugin).Set(b2f(v))
	}
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

func (hm hostMetrics) restart(plugin, reason string) {
	if hm.m != nil {
		hm.m.PluginRestarts.WithLabelValues(plugin, reason).Inc()
	}
}

func (hm hostMetrics) rpc(plugin, method string, d time.Duration) {
	if hm.m != nil {
		hm.m.PluginRPCDuration.WithLabelValues(plugin, method).Observe(d.Seconds())
	}
}

func (hm hostMetrics) droppedLogs(plugin string, n int) {
	if hm.m != nil {
		hm.m.PluginLogsDropped.WithLabelValues(plugin).Add(float64(n))
	}
}

// logLimiter bounds one run's plugin log lines by rate and by volume, and
// masks a private key the run logs line by line whole (pem). Its rate
// limiter is made at the first line: most runs log none.
type logLimiter struct {
	out     func(LogRecord)
	o       *Options
	lim     *rate.Limiter
	budget  int
	dropped int
	pem     observability.PEMLines
}

func newLogLimiter(o *Options, out func(LogRecord)) logLimiter {
	return logLimiter{out: out, o: o, budget: o.LogBytesPerRun}
}

func (l *logLimiter) log(rec *pluginv1.LogRecord) {
	if l.out == nil {
		return
	}
	if l.lim == nil {
		l.lim = rate.NewLimiter(rate.Limit(l.o.LogLinesPerSecond), l.o.LogBurst)
	}
	// Every record, dropped ones too, so that the state follows the lines.
	rec.Message = l.pem.Line(rec.GetMessage())
	size := len(rec.GetMessage())
	for _, a := range rec.GetAttrs() {
		size += len(a.GetKey()) + len(a.GetValue().String())
	}
	if size > l.budget || !l.lim.Allow() {
		l.dropped++
		return
	}
	l.budget -= size
	r := logRecordOf(rec, l.o.Sanitizer)
	if len(r.Message) <= observability.MaxLogPiece {
		l.out(r)
		return
	}
	// A long line (a task's output line) is masked whole, then logged in
	// pieces (attack 32, S1: the pieces were masked one by one).
	for _, p := range l.o.Sanitizer.Pieces(r.Message, observability.MaxLogPiece) {
		piece := r
		piece.Message = p
		l.out(piece)
	}
}

// finish reports dropped lines once, at the end of the run.
func (l *logLimiter) finish(plugin string, m hostMetrics) {
	if l.dropped == 0 || l.out == nil {
		return
	}
	m.droppedLogs(plugin, l.dropped)
	l.out(LogRecord{Level: slog.LevelWarn, Message: fmt.Sprintf(
		"%d plugin log lines dropped: over the per-run limit (rate or volume)", l.dropped),
		Attrs: []slog.Attr{slog.Float64("dropped_lines", float64(l.dropped))}})
}

// importSpan hands a span finished inside a plugin to the runner's exporter,
// sanitized, as a child in the run's trace.
func (h *Host) importSpan(plugin string, sd *pluginv1.SpanData) {
	if h.opts.ImportSpan == nil {
		return
	}
	var tid trace.TraceID
	var sid, pid trace.SpanID
	if copy(tid[:], sd.GetTraceId()) != len(tid) || copy(sid[:], sd.GetSpanId()) != len(sid) {
		return
	}
	copy(pid[:], sd.GetParentSpanId())
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: pid, TraceFlags: trace.FlagsSampled})
	attrs := append(h.attrs(sd.GetAttributes()), attribute.String("pacer.plugin", plugin))
	stub := tracetest.SpanStub{
		Name:                 h.opts.Sanitize(sd.GetName()),
		SpanContext:          sc,
		Parent:               parent,
		SpanKind:             trace.SpanKind(sd.GetKind()),
		StartTime:            sd.GetStartTime().AsTime(),
		EndTime:              sd.GetEndTime().AsTime(),
		Attributes:           attrs,
		Status:               sdktrace.Status{Code: codes.Code(sd.GetStatusCode()), Description: h.opts.Sanitize(sd.GetStatusMessage())},
		InstrumentationScope: instrumentation.Scope{Name: h.opts.Sanitize(sd.GetScopeName())},
	}
	for _, e := range sd.GetEvents() {
		stub.Events = append(stub.Events, sdktrace.Event{Name: h.opts.Sanitize(e.GetName()), Time: e.GetTime().AsTime(), Attributes: h.attrs(e.GetAttributes())})
	}
	h.opts.ImportSpan(stub.Snapshot())
}

// attrs converts a plugin span's (or event's) attributes, each as
// Sanitizer.PluginSpanAttr makes it: a key in Pacer's namespace renamed
// (the plugin's pacer.correlation_id is plugin.pacer.correlation_id), so
// that the runner's pacer.* attributes are the only ones in a run's trace.
func (h *Host) attrs(in []*pluginv1.Attr) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(in)+1)
	for _, a := range in {
		var kv attribute.KeyValue
		switch v := a.GetValue().AsInterface().(type) {
		case bool:
			kv = attribute.Bool(a.GetKey(), v)
		case float64:
			kv = attribute.Float64(a.GetKey(), v)
		case string:
			kv = attribute.String(a.GetKey(), v)
		default:
			kv = attribute.String(a.GetKey(), fmt.Sprint(v))
		}
		out = append(out, h.opts.Sanitizer.PluginSpanAttr(kv))
	}
	return out
}
