package runner

// A run's loggers. Every slot and every attempt logs with fields of its
// own (correlation ID, job, run ID, trace and span IDs), but most log only
// the attempt's two info lines, "run started" and "run finished". A
// logger made by With for each of them costs a copy of the handler, its
// fields sanitized and encoded ahead, and the garbage of it, on every run;
// these loggers make theirs on first use only, and the two info lines are
// written without one.

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxRunFields is the most fields a lazyHandler carries.
const maxRunFields = 5

// lazyHandler is base with fields added, as base.WithAttrs(fields) would
// give, made on first use. The fields must be plain values (strings,
// numbers): they are sanitized and encoded when first used, not when given.
type lazyHandler struct {
	base   slog.Handler
	fields [maxRunFields]slog.Attr
	n      int

	once sync.Once
	h    slog.Handler
	log  *slog.Logger // on h
}

// newLazyHandler returns base with fields (at most maxRunFields) added
// lazily.
func newLazyHandler(base slog.Handler, fields ...slog.Attr) *lazyHandler {
	l := &lazyHandler{base: base, n: len(fields)}
	copy(l.fields[:], fields)
	return l
}

func (l *lazyHandler) handler() slog.Handler {
	l.once.Do(func() {
		l.h = l.base.WithAttrs(l.fields[:l.n])
		l.log = slog.New(l.h)
	})
	return l.h
}

// logger returns a logger with the fields, made on first use.
func (l *lazyHandler) logger() *slog.Logger {
	l.handler()
	return l.log
}

// Enabled asks base: adding fields does not change a handler's level.
func (l *lazyHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return l.base.Enabled(ctx, level)
}

func (l *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	return l.handler().Handle(ctx, r)
}

func (l *lazyHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return l.handler().WithAttrs(attrs)
}

func (l *lazyHandler) WithGroup(name string) slog.Handler { return l.handler().WithGroup(name) }

// line writes one line with the fields, then attrs, to base: the same line
// as slog.New(l).LogAttrs(ctx, level, msg, attrs...) (the fields of a
// WithAttrs come first, the record's after them, in the groups base has
// open), without making the handler with the fields, and without the
// caller's program counter, which slog.Logger looks up on every line
// (only a handler that logs the source uses it; Pacer's does not).
func (l *lazyHandler) line(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if !l.base.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(l.fields[:l.n]...)
	r.AddAttrs(attrs...)
	_ = l.base.Handle(ctx, r)
}

var _ slog.Handler = (*lazyHandler)(nil)
