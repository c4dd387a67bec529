// Package zapslog writes zap's log entries (etcd's client and server log
// through zap) to a *slog.Logger, so they come out in the runner's format
// and through its sanitizer.
package zapslog

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// Options tune a Core. The zero value passes every entry at or above
// Level on at its own level.
type Options struct {
	// Level is the lowest level passed on.
	Level zapcore.Level
	// Quiet, while set, demotes every entry to debug (a component that is
	// being closed on purpose reports its listeners closing as errors).
	Quiet *atomic.Bool
	// Demote lists messages logged at debug whatever their level: warnings
	// that say nothing an operator can act on.
	Demote map[string]bool
	// OnError, if set, is called after each entry at error level or above,
	// with its message and attributes.
	OnError func(msg string, attrs []any)
}

// Core is a zapcore.Core that writes to slog.
type Core struct {
	log *slog.Logger
	o   Options
}

// New returns a Core writing to log.
func New(log *slog.Logger, o Options) *Core {
	if o.Quiet == nil {
		o.Quiet = new(atomic.Bool)
	}
	return &Core{log: log, o: o}
}

// Enabled implements zapcore.Core.
func (c *Core) Enabled(l zapcore.Level) bool { return l >= c.o.Level }

// With implements zapcore.Core.
func (c *Core) With(fields []zapcore.Field) zapcore.Core {
	return &Core{log: c.log.With(Attrs(fields)...), o: c.o}
}

// Check implements zapcore.Core.
func (c *Core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write implements zapcore.Core.
func (c *Core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	lv := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		lv = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		lv = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		lv = slog.LevelDebug
	}
	if c.o.Quiet.Load() || c.o.Demote[e.Message] {
		lv = slog.LevelDebug
	}
	attrs := Attrs(fields)
	c.log.Log(context.Background(), lv, e.Message, attrs...)
	if e.Level >= zapcore.ErrorLevel && c.o.OnError != nil {
		c.o.OnError(e.Message, attrs)
	}
	return nil
}

// Sync implements zapcore.Core.
func (c *Core) Sync() error { return nil }

// Attrs turns zap fields into slog key-value pairs.
func Attrs(fields []zapcore.Field) []any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}
