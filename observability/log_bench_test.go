package observability

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// BenchmarkRunLogLines logs one run's two info lines, "run started" and
// "run finished", the way runner/attempt.go does: through NewLogger's JSON
// handler and the sanitizer, on a logger that carries the node, with the
// run's fields added by WithAttrs once per run.
//
//	go test -run '^$' -bench RunLogLines -benchmem ./observability/
func BenchmarkRunLogLines(b *testing.B) {
	var w countWriter
	runLogLines(b, &w)
	b.ReportMetric(float64(w.n)/float64(b.N), "B/run")
}

// BenchmarkLogOutput is BenchmarkRunLogLines written to a real file:
// directly, as before, or through a LogQueue; to /dev/null, or to a pipe
// whose reader keeps up (stderr read by a log shipper).
//
//	go test -run '^$' -bench LogOutput -benchmem -count 3 ./observability/
func BenchmarkLogOutput(b *testing.B) {
	for _, out := range []string{"devnull", "pipe"} {
		for _, via := range []string{"direct", "queue"} {
			b.Run(out+"/"+via, func(b *testing.B) {
				var w *os.File
				switch out {
				case "devnull":
					f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					w = f
				case "pipe":
					r, pw, err := os.Pipe()
					if err != nil {
						b.Fatal(err)
					}
					drained := make(chan struct{})
					go func() { _, _ = io.Copy(io.Discard, r); close(drained) }()
					defer func() { pw.Close(); <-drained; r.Close() }()
					w = pw
				}
				if via == "direct" {
					runLogLines(b, w)
					return
				}
				q := NewLogQueue(w, LogQueueOptions{})
				runLogLines(b, q)
				b.StopTimer()
				if err := q.Close(context.Background()); err != nil {
					b.Fatal(err)
				}
				if q.Dropped() > 0 {
					b.Fatalf("%d lines dropped", q.Dropped())
				}
			})
		}
	}
}

// runLogLines logs b.N runs' two lines to w.
func runLogLines(b *testing.B, w io.Writer) {
	l, err := NewLogger(w, slog.LevelInfo, "json", DefaultSanitizer())
	if err != nil {
		b.Fatal(err)
	}
	l = l.With("node", "web-1")
	ctx := context.Background()
	slot := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		log := slog.New(l.Handler().WithAttrs([]slog.Attr{
			slog.String("correlation_id", "01JEQ5Z6W4YV3Q8K1M0N2P3R4S"), slog.String("job", "job-0042"),
			slog.String("run_id", "01JEQ5Z6W4YV3Q8K1M0N2P3R4T"),
			slog.String("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), slog.String("span_id", "00f067aa0ba902b7"),
		}))
		log.LogAttrs(ctx, slog.LevelInfo, "run started", slog.String("plugin", "testplugin"), slog.String("task", "stamp"),
			slog.Time("scheduled_time", slot), slog.Int("attempt", 1), slog.Int("shard", 0),
			slog.Int64("fencing_token", 7587), slog.Int64("lag_ms", 12))
		log.LogAttrs(ctx, slog.LevelInfo, "run finished", slog.String("outcome", "success"),
			slog.Int64("duration_ms", 3), slog.Int("attempt", 1))
	}
}

type countWriter struct{ n int }

func (w *countWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
