package observability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// copyingHandler is sanitizingHandler.Handle as it was before it learned
// to pass an unchanged record on: it always builds a sanitized copy. The
// reference the handler's output is compared with.
type copyingHandler struct{ sanitizingHandler }

func (h *copyingHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, h.s.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(h.s.attr(a, 0))
		return true
	})
	return h.next.Handle(ctx, nr)
}

func (h *copyingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &copyingHandler{*h.sanitizingHandler.WithAttrs(attrs).(*sanitizingHandler)}
}

func (h *copyingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &copyingHandler{*h.sanitizingHandler.WithGroup(name).(*sanitizingHandler)}
}

// TestHandlerOutputAsCopying logs thousands of random records, with values
// the sanitizer must mask (the corpus's secrets, e-mails, tokens, keys it
// redacts) and values it must leave alone, through the handler and through
// the copying reference, JSON and text, and wants the same bytes.
func TestHandlerOutputAsCopying(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{RedactKeys: []string{"ssn"},
		Patterns: []Pattern{{Name: "ticket", Regex: `TICKET-[0-9]+`}}})
	var texts []string
	for _, f := range []string{"clean.txt", "secrets.txt"} {
		for _, l := range corpusLines(t, f) {
			texts = append(texts, strings.Split(l.text, "\t")[0])
		}
	}
	texts = append(texts, "", "web-1", "success", "testplugin", "01JEQ5Z6W4YV3Q8K1M0N2P3R4S",
		"01a24d3b-0fbf-78e3-8810-8dd782df5e04", "alice@example.com", "10.0.0.7", "Bearer abc.def.ghi",
		"password=hunter2", "TICKET-123", "[email]", "quote \" and \\ and \n and \u2028", "\xff\xfe")
	keys := []string{"job", "run_id", "correlation_id", "plugin", "msg", "node", "password", "api_key", "ssn",
		"fencing_token", "previous_token", "trace_id", "span_id", "token", "level", "x.y", "", "a key"}
	rng := rand.New(rand.NewPCG(16, 2026))
	value := func(depth int) slog.Value {
		switch rng.IntN(12) {
		case 0:
			return slog.Int64Value(rng.Int64N(1 << 40))
		case 1:
			return slog.Uint64Value(rng.Uint64())
		case 2:
			return slog.Float64Value([]float64{0.5, 3, math.NaN(), math.Inf(1), 1e21}[rng.IntN(5)])
		case 3:
			return slog.BoolValue(rng.IntN(2) == 0)
		case 4:
			return slog.DurationValue(time.Duration(rng.Int64N(1e12)))
		case 5:
			return slog.TimeValue(time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)).In(time.FixedZone("x", 3600)))
		case 6:
			return slog.AnyValue(errors.New(texts[rng.IntN(len(texts))]))
		case 7:
			if depth < 2 {
				return slog.GroupValue(slog.String(keys[rng.IntN(len(keys))], texts[rng.IntN(len(texts))]),
					slog.Int("n", rng.IntN(9)))
			}
		case 8:
			return slog.AnyValue(map[string]any{"password": "p", "to": texts[rng.IntN(len(texts))]})
		}
		return slog.StringValue(texts[rng.IntN(len(texts))])
	}
	ctx := context.Background()
	at := time.Date(2026, 12, 6, 21, 0, 0, 123456789, time.UTC)
	for _, format := range []string{"json", "text"} {
		for i := range 3000 {
			var got, want bytes.Buffer
			var lg, lw *slog.Logger
			for _, dst := range []*bytes.Buffer{&got, &want} {
				var next slog.Handler = slog.NewJSONHandler(dst, &slog.HandlerOptions{Level: slog.LevelDebug})
				if format == "text" {
					next = slog.NewTextHandler(dst, &slog.HandlerOptions{Level: slog.LevelDebug})
				}
				h := &sanitizingHandler{next: next, s: s}
				if dst == &got {
					lg = slog.New(h)
				} else {
					lw = slog.New(&copyingHandler{*h})
				}
			}
			// The same With and WithGroup on both.
			for range rng.IntN(3) {
				a := slog.Attr{Key: keys[rng.IntN(len(keys))], Value: value(0)}
				if rng.IntN(4) == 0 {
					g := fmt.Sprint("g", rng.IntN(3))
					lg, lw = lg.WithGroup(g), lw.WithGroup(g)
				}
				lg, lw = lg.With(a), lw.With(a)
			}
			msg := texts[rng.IntN(len(texts))]
			attrs := make([]slog.Attr, rng.IntN(12))
			for j := range attrs {
				attrs[j] = slog.Attr{Key: keys[rng.IntN(len(keys))], Value: value(0)}
			}
			level := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}[rng.IntN(4)]
			for _, l := range []*slog.Logger{lg, lw} {
				r := slog.NewRecord(at, level, msg, 0)
				r.AddAttrs(attrs...)
				if err := l.Handler().Handle(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if got.String() != want.String() {
				t.Fatalf("%s record %d:\n got %s\nwant %s", format, i, got.String(), want.String())
			}
		}
	}
}
