package pluginhost

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/structpb"
)

// newHCLogger adapts go-plugin's hclog output (including the plugin's stderr
// lines, which go-plugin parses) to slog.
func newHCLogger(log *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Debug})
	l.RegisterSink(hclogSink{log: log})
	return l
}

type hclogSink struct{ log *slog.Logger }

func (s hclogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
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
// one line at a time, with lines capped at maxLine bytes.
type lineLogger struct {
	log    *slog.Logger
	level  slog.Level
	stream string
	mu     sync.Mutex
	buf    []byte
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
			if len(l.buf) >= maxLine {
				l.flush()
			}
			break
		}
		l.buf = append(l.buf, p[:i]...)
		l.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (l *lineLogger) flush() {
	if len(l.buf) > maxLine {
		l.buf = l.buf[:maxLine]
	}
	if len(l.buf) > 0 {
		l.log.Log(context.Background(), l.level, string(l.buf), "source", "plugin-"+l.stream)
	}
	l.buf = l.buf[:0]
}

func structNumber(n int) *structpb.Value { return structpb.NewNumberValue(float64(n)) }

// tail keeps the last max bytes written to it: a plugin's last words, for
// the error when it fails to start.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
