// Package zapslog writes zap's log entries (etcd's client and server log
// through zap) to a *slog.Logger, so they come out in the runner's format
// and through its sanitizer.
package zapslog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
	// Every, if set, passes on at most one entry per message and level in
	// each Every (entries logged at debug are not counted): etcd logs some
	// warnings hundreds of times within milliseconds (a restarting member's
	// "failed to publish local member to cluster through raft"). The next
	// entry passed on after some were dropped carries their count,
	// attribute "suppressed". OnError still sees every error.
	Every time.Duration
	// Sync, if set, flushes the output the slog logger writes to. It is
	// called after an entry above error level (zap's DPanic, Panic and
	// Fatal: the process may end right after it, and the entry says why),
	// not by the Core's Sync.
	Sync func() error
}

// Core is a zapcore.Core that writes to slog.
type Core struct {
	log   *slog.Logger
	o     Options
	limit *limiter // shared by the Cores With derives
}

// limiter counts the entries of each message within its current window.
type limiter struct {
	mu   sync.Mutex
	seen map[limitKey]*window
}

type limitKey struct {
	lv  slog.Level
	msg string
}

type window struct {
	start      time.Time
	suppressed int
}

// maxLimited bounds the messages a limiter tracks; past it, it forgets
// them all (etcd's messages are a fixed set: it is not reached).
const maxLimited = 1024

// pass reports whether an entry goes out now, and how many like it were
// dropped since the last that did.
func (l *limiter) pass(lv slog.Level, msg string, every time.Duration, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := limitKey{lv, msg}
	w := l.seen[k]
	if w != nil && now.Sub(w.start) < every {
		w.suppressed++
		return false, 0
	}
	if l.seen == nil || len(l.seen) >= maxLimited {
		l.seen = map[limitKey]*window{}
	}
	n := 0
	if w != nil {
		n = w.suppressed
	}
	l.seen[k] = &window{start: now}
	return true, n
}

// New returns a Core writing to log.
func New(log *slog.Logger, o Options) *Core {
	if o.Quiet == nil {
		o.Quiet = new(atomic.Bool)
	}
	return &Core{log: log, o: o, limit: &limiter{}}
}

// Enabled implements zapcore.Core.
func (c *Core) Enabled(l zapcore.Level) bool { return l >= c.o.Level }

// With implements zapcore.Core.
func (c *Core) With(fields []zapcore.Field) zapcore.Core {
	return &Core{log: c.log.With(Attrs(fields)...), o: c.o, limit: c.limit}
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
	out := true
	if c.o.Every > 0 && lv > slog.LevelDebug {
		var n int
		if out, n = c.limit.pass(lv, e.Message, c.o.Every, time.Now()); n > 0 {
			attrs = append(attrs, "suppressed", n)
		}
	}
	if out {
		c.log.Log(context.Background(), lv, e.Message, attrs...)
	}
	if e.Level >= zapcore.ErrorLevel && c.o.OnError != nil {
		c.o.OnError(e.Message, attrs)
	}
	if e.Level > zapcore.ErrorLevel && c.o.Sync != nil {
		return c.o.Sync()
	}
	return nil
}

// Sync implements zapcore.Core. It does not call Options.Sync: etcd syncs
// its logger as it closes, and a stop must not wait there for a blocked
// output (the log queue's own close has its bound).
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
