//go:build linux

package proctree_test

import (
	"context"
	"io"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/sdk/proctree"
)

// BenchmarkRun is one command that does nothing, run through proctree (the
// whole-tree look afterwards included) and, for comparison, through os/exec
// (first: once proctree has run, its reaper owns every child of the process).
func BenchmarkRun(b *testing.B) {
	b.Run("os-exec", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			c := exec.Command("/bin/true")
			c.Stdout, c.Stderr = io.Discard, io.Discard
			if err := c.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proctree", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			c := proctree.Command(context.Background(), "/bin/true")
			c.Stdout, c.Stderr = io.Discard, io.Discard
			if res, err := c.Run(); err != nil || res.ExitCode != 0 {
				b.Fatal(res, err)
			}
		}
	})
	// 32 at once, as a shell plugin runs its commands at the default
	// plugins.max_concurrency: each command's end scans the processes below
	// this one, which are the other commands'.
	b.Run("proctree-concurrency=32", func(b *testing.B) {
		defer reportCPU(b)()
		var left atomic.Int64
		left.Store(int64(b.N))
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					c := proctree.Command(context.Background(), "/bin/true")
					c.Stdout, c.Stderr = io.Discard, io.Discard
					if res, err := c.Run(); err != nil || res.ExitCode != 0 {
						b.Error(res, err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// reportCPU reports the CPU time this process spent per op (user + system),
// which the load of other processes on the machine does not inflate as it
// does wall time.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
