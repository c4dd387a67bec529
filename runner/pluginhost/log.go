package pluginhost

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/observability"
)

// newHCLogger adapts go-plugin's hclog output (including the plugin's stderr
// lines, which go-plugin parses) to slog; san sanitizes the attributes a
// plugin's stderr lines carry (see hclogSink).
func newHCLogger(log *slog.Logger, san *observability.Sanitizer) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Debug})
	l.RegisterSink(&hclogSink{log: log, san: san})
	return l
}

// hclogSink logs go-plugin's lines, one plugin process's stderr among them:
// a private key written there line by line is masked whole (pem).
//
// go-plugin logs its own lines through the logger it was given, which has
// no name, and a plugin process's stderr through a logger named after the
// binary (its gRPC stdio client's errors through one named "stdio"). The
// attributes of a named logger's line are the plugin's, but for the
// "timestamp" go-plugin adds last to a JSON line: they are the JSON line's
// fields, any process writing to the plugin's file descriptor 2 chose them,
// so each is logged as san.PluginAttr makes it.
type hclogSink struct {
	log *slog.Logger
	san *observability.Sanitizer
	mu  sync.Mutex
	pem observability.PEMLines
}

func (s *hclogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	s.mu.Lock()
	msg = s.pem.Line(msg) // before the level check: the state follows every line
	s.mu.Unlock()
	var lv slog.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		lv = slog.LevelDebug
	case hclog.Info:
		lv = slog.LevelInfo
	case hclog.Warn:
		lv = slog.LevelWarn
	default:
		lv = slog.LevelError
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, lv) {
		return
	}
	attrs := make([]slog.Attr, 0, len(args)/2+2)
	attrs = append(attrs, slog.String("source", "go-plugin"), slog.String("logger", name))
	fromPlugin := name != ""
	var stamp []any // go-plugin's timestamp of a JSON line
	if n := len(args); fromPlugin && n >= 2 && n%2 == 0 && args[n-2] == "timestamp" {
		args, stamp = args[:n-2], args[n-2:]
	}
	for i := 0; i+1 < len(args); i += 2 {
		key := fmt.Sprint(args[i])
		switch {
		case fromPlugin:
			attrs = append(attrs, s.san.PluginAttr(slog.Any(key, args[i+1])))
			continue
		case key == "plugin": // go-plugin's binary path; "plugin" is the name
			key = "path"
		}
		attrs = append(attrs, slog.Any(key, args[i+1]))
	}
	if stamp != nil {
		attrs = append(attrs, slog.Any("timestamp", stamp[1]))
	}
	s.log.LogAttrs(ctx, lv, msg, attrs...)
}

// lineLogger logs what a plugin writes to its redirected stdout or stderr,
// one line at a time. A line over observability.MaxLogPiece bytes is masked
// whole (san), then logged in pieces (Sanitizer.Pieces); one over
// observability.MaxMaskedLine is first cut where no secret is cut in two,
// where that can be avoided (linesplit), each part masked on its own. A
// private key written line by line is masked whole (pem). The lines of one plugin process are bounded
// as one run's log lines are (lim: Options.LogLinesPerSecond, LogBurst):
// the rest are dropped, counted (dropped), and said in one line once the
// output is back under the rate (attack 19, P15: 20,000 print() lines in
// 0.1 s all reached the runner's log).
type lineLogger struct {
	log     *slog.Logger
	level   slog.Level
	stream  string
	mu      sync.Mutex
	lines   linesplit.Lines // the stream's lines, to emit
	san     *observability.Sanitizer
	pem     observability.PEMLines
	lim     *rate.Limiter // nil: no bound
	perSec  float64       // lim's rate, as made
	dropped func()        // counts a dropped line; nil: none
	ndrop   int           // dropped since the last line logged
}

func newLineLogger(log *slog.Logger, san *observability.Sanitizer, level slog.Level, stream string, lim *rate.Limiter, dropped func()) *lineLogger {
	l := &lineLogger{log: log, san: san, level: level, stream: stream, lim: lim, dropped: dropped}
	if lim != nil {
		l.perSec = float64(lim.Limit())
	}
	l.lines = linesplit.Lines{Max: observability.MaxMaskedLine, Emit: l.emit}
	return l
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lines.Write(p)
}

func (l *lineLogger) emit(line []byte) {
	if len(line) == 0 {
		return
	}
	text := l.pem.Line(string(line)) // every line, dropped ones too, so that the state follows them
	if l.lim != nil && !l.lim.Allow() {
		l.ndrop++
		if l.dropped != nil {
			l.dropped()
		}
		return
	}
	if l.ndrop > 0 {
		l.log.Warn(fmt.Sprintf("%d lines the plugin wrote to its %s dropped: over %g lines/s", l.ndrop, l.stream, l.perSec),
			"source", "plugin-"+l.stream, "dropped_lines", l.ndrop)
		l.ndrop = 0
	}
	if len(text) <= observability.MaxLogPiece {
		l.log.Log(context.Background(), l.level, text, "source", "plugin-"+l.stream)
		return
	}
	for _, p := range l.san.Pieces(text, observability.MaxLogPiece) {
		l.log.Log(context.Background(), l.level, p, "source", "plugin-"+l.stream)
	}
}
