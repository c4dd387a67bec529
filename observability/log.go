package observability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
)

// NewLogger returns a JSON (format "json", default, also "") or text
// ("text") slog logger writing to w at level, every record passing through s
// (see NewSanitizingHandler). Format is case-insensitive; an unknown format
// is an error. A nil s means the built-in masks only.
func NewLogger(w io.Writer, level slog.Level, format string, s *Sanitizer) (*slog.Logger, error) {
	if w == nil {
		return nil, errors.New("new logger: nil writer")
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "", "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("unknown log format %q: want \"json\" or \"text\"", format)
	}
	return slog.New(NewSanitizingHandler(h, s)), nil
}

// ParseLevel parses debug, info, warn or error (ASCII case-insensitive,
// surrounding space ignored).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("invalid log level %q: want debug, info, warn or error", s)
}

// NewSanitizingHandler wraps any slog.Handler: the message, every string
// attribute value (also inside groups, also values added via WithAttrs),
// error values (err.Error()), fmt.Stringer values, and []string/map values
// are sanitized; attributes whose key is sensitive (Sanitizer.SensitiveKey)
// become "[redacted]", whatever their value or kind, groups included, except
// an integer fencing token (fencingTokenAttr); TrustedKeys are passed
// through untouched, at any depth.
//
// LogValuer values are resolved first. []byte values are sanitized and kept
// as []byte; other byte-slice types (json.RawMessage) become strings; named
// string types become strings; other composite values (structs, pointers,
// slices, maps) are converted to their JSON shape and sanitized, so nothing
// reaches the wrapped handler unsanitized. Numbers, booleans, times and
// durations pass unchanged.
//
// Values given to WithAttrs are sanitized once, when WithAttrs is called.
// A nil s means the built-in masks only; a nil h panics.
func NewSanitizingHandler(h slog.Handler, s *Sanitizer) slog.Handler {
	if h == nil {
		panic("observability: NewSanitizingHandler: nil handler")
	}
	if s == nil {
		s = defaultSanitizer()
	}
	return &sanitizingHandler{next: h, s: s}
}

type sanitizingHandler struct {
	next slog.Handler
	s    *Sanitizer
}

func (h *sanitizingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle passes r on as it is when sanitizing changes nothing in it (the
// common case: a copy of the record is a copy of its attributes and, past
// five of them, garbage); otherwise a copy with the sanitized message and
// attributes.
func (h *sanitizingHandler) Handle(ctx context.Context, r slog.Record) error {
	msg := h.s.String(r.Message)
	var buf [16]slog.Attr
	attrs := buf[:0]
	same := msg == r.Message
	r.Attrs(func(a slog.Attr) bool {
		c := h.s.attr(a, 0)
		same = same && sameAttr(a, c)
		attrs = append(attrs, c)
		return true
	})
	if same {
		return h.next.Handle(ctx, r)
	}
	nr := slog.NewRecord(r.Time, r.Level, msg, r.PC)
	nr.AddAttrs(attrs...)
	return h.next.Handle(ctx, nr)
}

// sameAttr reports whether c, what Sanitizer.attr made of a, is a itself:
// a string value that nothing masked, or a number, boolean, time or
// duration that was not redacted (attr returns those values as they are).
// Groups, LogValuers and other values count as changed.
func sameAttr(a, c slog.Attr) bool {
	switch k := a.Value.Kind(); k {
	case slog.KindString:
		// Equal strings: what String returns when it masks nothing is
		// its input, so this compares one pointer and length with itself.
		return c.Value.Kind() == slog.KindString && c.Value.String() == a.Value.String()
	case slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration, slog.KindTime:
		return c.Value.Kind() == k
	}
	return false
}

func (h *sanitizingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.s.attr(a, 0)
	}
	return &sanitizingHandler{next: h.next.WithAttrs(clean), s: h.s}
}

func (h *sanitizingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &sanitizingHandler{next: h.next.WithGroup(name), s: h.s}
}

// attr sanitizes one slog attribute.
func (s *Sanitizer) attr(a slog.Attr, depth int) slog.Attr {
	if _, ok := s.trusted[a.Key]; ok {
		return a
	}
	v := a.Value.Resolve()
	if !s.foreign && (fencingTokenAttr(a.Key, v) || v.Kind() == slog.KindString && idKey(a.Key) && GeneratedID(v.String())) {
		return slog.Attr{Key: a.Key, Value: v}
	}
	if a.Key != "" && s.SensitiveKey(a.Key) {
		return slog.String(a.Key, phRedacted)
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.String(v.String()))
	case slog.KindGroup:
		if depth > sanitizeMaxDepth {
			return slog.String(a.Key, "[truncated]")
		}
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = s.attr(ga, depth+1)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		return slog.Attr{Key: a.Key, Value: s.anyValue(v.Any())}
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}

// fencingTokenAttr reports whether a log attribute is a fencing token that
// Pacer logs under a name of its own: an integer value under a key that ends
// with "fencing_token" (pacer.fencing_token, previous_fencing_token) or is
// "previous_token" (the term before a hand-over or an unfinished trigger).
// A fencing token is a revision number that guards writes, not a
// credential, and an operator needs it to link two terms. Only integers
// qualify: a string under these keys (a plugin's own "previous_token") is
// still redacted, and so is an integer under any other key ending in token.
func fencingTokenAttr(key string, v slog.Value) bool {
	if v.Kind() != slog.KindInt64 && v.Kind() != slog.KindUint64 {
		return false
	}
	return hasCanonicalSuffix(key, "fencingtoken") || key == "previous_token"
}

// anyValue sanitizes the payload of a KindAny slog value.
func (s *Sanitizer) anyValue(x any) slog.Value {
	switch t := x.(type) {
	case nil:
		return slog.AnyValue(nil)
	case error:
		return slog.StringValue(s.String(safeText(t.Error)))
	case []byte:
		return slog.AnyValue([]byte(s.String(string(t))))
	case fmt.Stringer:
		return slog.StringValue(s.String(safeText(t.String)))
	}
	if rv := reflect.ValueOf(x); rv.Kind() == reflect.String {
		return slog.StringValue(s.String(rv.String()))
	}
	return slog.AnyValue(s.value(x, 0))
}

// safeText calls an Error or String method, turning a panic (e.g. a nil
// pointer receiver) into text as fmt does.
func safeText(f func() string) (out string) {
	defer func() {
		if r := recover(); r != nil {
			out = fmt.Sprintf("!PANIC: %v", r)
		}
	}()
	return f()
}
