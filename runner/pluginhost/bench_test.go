package pluginhost_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// BenchmarkRunNoop is the host's overhead for one task run: runner side to
// plugin process and back over gRPC, with a task that does nothing.
func BenchmarkRunNoop(b *testing.B) {
	h := pluginhost.New(pluginhost.Options{Dir: pluginDir})
	defer h.Close()
	ctx := context.Background()
	c := call("noop", nil)
	if _, err := h.Run(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Run(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunThroughput runs no-op tasks through one plugin process from
// several goroutines at once and reports runs per second.
func BenchmarkRunThroughput(b *testing.B) {
	for _, conc := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			h := pluginhost.New(pluginhost.Options{Dir: pluginDir, MaxConcurrency: conc})
			defer h.Close()
			ctx := context.Background()
			c := call("noop", nil)
			if _, err := h.Run(ctx, c); err != nil {
				b.Fatal(err)
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if _, err := h.Run(ctx, c); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
		})
	}
}

// BenchmarkPluginStart is plugin start to ready: process start, handshake,
// AutoMTLS, gRPC connection and Describe.
func BenchmarkPluginStart(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		h := pluginhost.New(pluginhost.Options{Dir: pluginDir})
		if _, err := h.Describe(ctx, "testplugin"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		h.Close()
		b.StartTimer()
	}
}

// BenchmarkShellExec is one shell run of a command that does next to
// nothing, through the host and the shell plugin: process start, wait, and
// (since the whole-tree guarantee) the look for what the command left.
// "concurrency=8" runs eight at once through one plugin process.
func BenchmarkShellExec(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			h := pluginhost.New(pluginhost.Options{Dir: pluginDir, MaxConcurrency: conc})
			defer h.Close()
			ctx := context.Background()
			c := call("exec", map[string]any{"command": []any{"/bin/true"}})
			c.Plugin = "shell"
			if _, err := h.Run(ctx, c); err != nil {
				b.Fatal(err)
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if res, err := h.Run(ctx, c); err != nil || res.TaskError != "" {
							b.Error(err, res)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
		})
	}
}
