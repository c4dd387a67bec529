package pluginhost

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/observability"
)

// newHCLogger adapts go-plugin's hclog output (including the plugin's stderr
// lines, which go-plugin parses) to slog.
func newHCLogger(log *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Debug})
	l.RegisterSink(&hclogSink{log: log})
	return l
}

// hclogSink logs go-plugin's lines, one plugin process's stderr among them:
// a private key written there line by line is masked whole (pem).
type hclogSink struct {
	log *slog.Logger
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
	attrs := make([]slog.Attr, 0, len(args)/2+1)
	attrs = append(attrs, slog.String("source", "go-plugin"), slog.String("logger", name))
	for i := 0; i+1 < len(args); i += 2 {
		key := fmt.Sprint(args[i])
		if key == "plugin" { // go-plugin's binary path; "plugin" is the name
			key = "path"
		}
		attrs = append(attrs, slog.Any(key, args[i+1]))
	}
	s.log.LogAttrs(ctx, lv, msg, attrs...)
}

// lineLogger logs what a plugin writes to its redirected stdout or stderr,
// one line at a time. A line over maxLine bytes is logged in pieces, cut
// where no secret is cut in two (linesplit); a private key written line by
// line is masked whole (pem).
type lineLogger struct {
	log    *slog.Logger
	level  slog.Level
	stream string
	mu     sync.Mutex
	buf    []byte
	pem    observability.PEMLines
}

const maxLine = 4 << 10

func newLineLogger(log *slog.Logger, level slog.Level, stream string) *lineLogger {
	return &lineLogger{log: log, level: level, stream: stream}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			l.pieces()
			break
		}
		l.buf = append(l.buf, p[:i]...)
		l.pieces()
		l.emit(l.buf)
		l.buf = l.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

// pieces logs pieces of the current line while it is over maxLine bytes.
func (l *lineLogger) pieces() {
	for len(l.buf) > maxLine {
		n := linesplit.Cut(l.buf, maxLine)
		l.emit(linesplit.Head(l.buf, n))
		l.buf = linesplit.Rest(l.buf, n)
	}
}

func (l *lineLogger) emit(line []byte) {
	if len(line) > 0 {
		l.log.Log(context.Background(), l.level, l.pem.Line(string(line)), "source", "plugin-"+l.stream)
	}
}
