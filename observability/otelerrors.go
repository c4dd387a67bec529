package observability

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
)

// RouteOTelLogs sends what OpenTelemetry logs of itself (a header variable
// it cannot parse, an endpoint it ignores) through log: JSON lines that
// pass the sanitizer. Its default logger writes plain text to stderr and
// quoted the variable whole, an API key or a password in it (attack 32,
// S4). Its verbose lines (V(1) and up) come below INFO.
func RouteOTelLogs(log *slog.Logger) {
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))
}

// OTelErrorHandler logs the errors OpenTelemetry reports on its own (a span
// export that failed, a collector that is down) through a logger, so they
// are JSON lines like every other and pass the sanitizer, instead of the
// plain text the default handler writes with the standard library's log
// package. A collector that stays down would repeat the same error with
// every batch: at most one line is written per interval, at WARN, with the
// number of errors left out since the previous line (suppressed).
type OTelErrorHandler struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time // when the last line was written
	suppressed int
}

var _ otel.ErrorHandler = (*OTelErrorHandler)(nil)

// NewOTelErrorHandler returns a handler that writes through log, at most one
// line per every (default 30s).
func NewOTelErrorHandler(log *slog.Logger, every time.Duration) *OTelErrorHandler {
	if every <= 0 {
		every = 30 * time.Second
	}
	return &OTelErrorHandler{log: log, every: every, now: time.Now}
}

// Handle implements otel.ErrorHandler.
func (h *OTelErrorHandler) Handle(err error) {
	if err == nil {
		return
	}
	h.mu.Lock()
	now := h.now()
	if !h.last.IsZero() && now.Sub(h.last) < h.every {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	suppressed := h.suppressed
	h.last, h.suppressed = now, 0
	h.mu.Unlock()
	h.log.LogAttrs(context.Background(), slog.LevelWarn, "opentelemetry error",
		slog.String("error", err.Error()), slog.Int("suppressed", suppressed),
		slog.Duration("interval", h.every))
}
