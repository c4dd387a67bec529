package pluginhost_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/perfprofile"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// BenchmarkRunNoop is the host's overhead for one task run: runner side to
// plugin process and back over gRPC, with a task that does nothing.
//
// Besides wall time it reports the CPU time each side spent per run
// (runner-cpu-us/op: this process; plugin-cpu-us/op: the plugin's, from
// /proc), which a machine shared with other work disturbs far less. With
// PACER_BENCH_PERF=DIR, perf records both sides during the timed loop into
// DIR (<benchmark>.{runner,plugin}.{data,txt}, the .txt from perf script)
// and logs each split by component (internal/perfprofile).
func BenchmarkRunNoop(b *testing.B) {
	h := pluginhost.New(pluginhost.Options{Dir: pluginDir})
	defer h.Close()
	ctx := context.Background()
	c := call("noop", nil)
	if _, err := h.Run(ctx, c); err != nil {
		b.Fatal(err)
	}
	cpu := startCPU(b, h, true) // b.Loop calls this function once
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Run(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b, b.N)
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
			cpu := startCPU(b, h, b.N >= 5000) // not the short rounds that size b.N
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
			cpu.report(b, b.N)
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
// "concurrency=8" runs eight at once through one plugin process, 32 as many
// as plugins.max_concurrency allows by default. Each side's CPU per run is
// reported as for BenchmarkRunNoop; the commands' own is in neither.
func BenchmarkShellExec(b *testing.B) {
	for _, conc := range []int{1, 8, 32} {
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
			cpu := startCPUOf(b, h, "shell", b.N >= 1000)
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
			cpu.report(b, b.N)
		})
	}
}

// cpuSample is the CPU time used so far by this process and by a host's
// plugin process.
type cpuSample struct {
	pluginPID      int
	runner, plugin time.Duration
	perf           []*exec.Cmd
	perfOut        []string
}

// startCPU samples the CPU time of both sides, and starts perf on both
// when PACER_BENCH_PERF is set and profile is true.
func startCPU(b *testing.B, h *pluginhost.Host, profile bool) cpuSample {
	return startCPUOf(b, h, "testplugin", profile)
}

// startCPUOf is startCPU for the named plugin's process.
func startCPUOf(b *testing.B, h *pluginhost.Host, plugin string, profile bool) cpuSample {
	b.Helper()
	pid := 0
	for _, st := range h.Status() {
		if st.Name == plugin {
			pid = st.PID
		}
	}
	if pid == 0 {
		b.Fatalf("%s has no process", plugin)
	}
	s := cpuSample{pluginPID: pid, runner: selfCPU(b), plugin: procCPU(b, pid)}
	if dir := os.Getenv("PACER_BENCH_PERF"); dir != "" && profile {
		// Profiles of both sides, as perf script text (the plugin's
		// binary is gone when the test ends, and with it its symbols).
		name := strings.NewReplacer("/", "_", "=", "").Replace(b.Name())
		for _, p := range []struct {
			side string
			pid  int
		}{{"runner", os.Getpid()}, {"plugin", pid}} {
			out := filepath.Join(dir, name+"."+p.side+".data")
			cmd := exec.Command("perf", "record", "-g", "-F", "999", "-o", out, "-p", strconv.Itoa(p.pid))
			if err := cmd.Start(); err != nil {
				b.Fatalf("PACER_BENCH_PERF: %v", err)
			}
			s.perf, s.perfOut = append(s.perf, cmd), append(s.perfOut, out)
		}
	}
	return s
}

// report reports the CPU time per run since s of the runner side and of the
// plugin.
func (s cpuSample) report(b *testing.B, runs int) {
	b.Helper()
	if runs == 0 {
		return
	}
	b.ReportMetric(float64((selfCPU(b)-s.runner).Microseconds())/float64(runs), "runner-cpu-us/op")
	b.ReportMetric(float64((procCPU(b, s.pluginPID)-s.plugin).Microseconds())/float64(runs), "plugin-cpu-us/op")
	for i, cmd := range s.perf {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		script, err := exec.Command("perf", "script", "-i", s.perfOut[i]).Output()
		if err != nil {
			b.Logf("perf script %s: %v", s.perfOut[i], err)
			continue
		}
		if err := os.WriteFile(strings.TrimSuffix(s.perfOut[i], ".data")+".txt", script, 0o644); err != nil {
			b.Fatal(err)
		}
		shares, total, err := perfprofile.Split(bytes.NewReader(script))
		if err != nil {
			b.Fatal(err)
		}
		side, cpu := "runner", selfCPU(b)-s.runner
		if i == 1 {
			side, cpu = "plugin", procCPU(b, s.pluginPID)-s.plugin
		}
		b.Logf("profile of the %s side (µs/op: of its CPU per run, with perf running):\n%s", side,
			perfprofile.Format(shares, total, float64(cpu.Microseconds())/float64(runs)))
	}
}

func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is pid's user and system time from /proc/<pid>/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("CPU time of the plugin: %v", err)
	}
	// Fields after the command name, which is in parentheses: utime is
	// field 14 and stime 15, in clock ticks (USER_HZ, 100 on Linux).
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	ut, err1 := strconv.ParseInt(fields[14-3], 10, 64)
	st, err2 := strconv.ParseInt(fields[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("bad /proc/%d/stat: %s", pid, data)
	}
	return time.Duration(ut+st) * (time.Second / 100)
}
