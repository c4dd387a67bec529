package runner

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
)

// TestRunLogLinesAsWith: a lazyHandler's lines, written by line and
// through a logger on it, are the lines a logger made by WithAttrs writes:
// same keys, same order, same masking, over many random fields and
// attributes (e-mails, tokens, keys the sanitizer redacts among them), on
// the runner's real logger (JSON and text, sanitizer in front, the node's
// field, sometimes in a group). Only the time differs (each line reads the
// clock).
func TestRunLogLinesAsWith(t *testing.T) {
	t.Parallel()
	s, err := observability.NewSanitizer(observability.SanitizerOptions{RedactKeys: []string{"ssn"}})
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"", "bench-0001", "testplugin", "stamp", "success", "01JEQ5Z6W4YV3Q8K1M0N2P3R4S",
		"01a24d3b-0fbf-78e3-8810-8dd782df5e04", "4bf92f3577b34da6a3ce929d0e0e4736", "alice@example.com",
		"password=hunter2", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
		"10.0.0.7:5432", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "4111 1111 1111 1111", "quote \" \\ \n"}
	keys := []string{"correlation_id", "job", "run_id", "trace_id", "span_id", "plugin", "task", "token",
		"api_key", "ssn", "fencing_token", "attempt", "msg"}
	rng := rand.New(rand.NewPCG(16, 7))
	attr := func() slog.Attr {
		k := keys[rng.IntN(len(keys))]
		switch rng.IntN(4) {
		case 0:
			return slog.Int64(k, rng.Int64N(1<<40))
		case 1:
			return slog.Time(k, time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)).UTC())
		}
		return slog.String(k, texts[rng.IntN(len(texts))])
	}
	clock := regexp.MustCompile(`^(\{"time":"[^"]*"|time=\S+)`)
	ctx := context.Background()
	for _, format := range []string{"json", "text"} {
		for i := range 2000 {
			var buf bytes.Buffer
			base, err := observability.NewLogger(&buf, slog.LevelInfo, format, s)
			if err != nil {
				t.Fatal(err)
			}
			base = base.With("node", texts[rng.IntN(len(texts))])
			if rng.IntN(5) == 0 {
				base = base.WithGroup("g")
			}
			fields := make([]slog.Attr, 1+rng.IntN(maxRunFields))
			for j := range fields {
				fields[j] = attr()
			}
			attrs := make([]slog.Attr, rng.IntN(9))
			for j := range attrs {
				attrs[j] = attr()
			}
			msg := texts[rng.IntN(len(texts))]
			level := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn}[rng.IntN(3)]
			lines := func(f func()) string {
				buf.Reset()
				f()
				return clock.ReplaceAllString(buf.String(), "")
			}
			want := lines(func() {
				slog.New(base.Handler().WithAttrs(fields)).LogAttrs(ctx, level, msg, attrs...)
			})
			got := lines(func() { newLazyHandler(base.Handler(), fields...).line(ctx, level, msg, attrs...) })
			through := lines(func() { slog.New(newLazyHandler(base.Handler(), fields...)).LogAttrs(ctx, level, msg, attrs...) })
			if got != want || through != want {
				t.Fatalf("%s case %d:\n    line %s\nthrough %s\n   want %s", format, i, got, through, want)
			}
			if level >= slog.LevelInfo && want == "" {
				t.Fatalf("%s case %d: nothing logged at %s", format, i, level)
			}
		}
	}
}
