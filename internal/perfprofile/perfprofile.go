// Package perfprofile splits a CPU profile that Linux perf recorded of a
// Pacer process (runner, embedded etcd, plugin) by where its time went:
// etcd's server, the garbage collector, gRPC, logging, the runner's own
// code, the SDK, and so on. Pacer's benchmarks use it to report profiles by
// component (PACER_BENCH_PERF); it is not part of the product.
//
// A sample counts whole for etcd's server or the garbage collector when its
// stack is in one of them (their own goroutines); otherwise for the
// component of the frame nearest the leaf that belongs to one, so that time
// spent in gRPC on behalf of the runner counts as gRPC, and the runner's
// own frames count only for its own work (a system call counts for the code
// that made it). The Go runtime's scheduling, timers and system calls count
// on their own only when no such frame is on the stack. Samples with no Go
// frame of a known component (most are kernel-only: page faults,
// interrupts) are "other".
package perfprofile

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// Components, in the order Split tries them.
var components = []struct {
	name     string
	root     bool // a sample anywhere under it counts whole
	fallback bool // only when no other component's frame is on the stack
	match    *regexp.Regexp
}{
	{"GC (mark, sweep, scavenge)", true, false, regexp.MustCompile(`^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge|gcMarkDone|forEachP|gcStart)`)},
	{"etcd server", true, false, regexp.MustCompile(`go\.etcd\.io/etcd/server|go\.etcd\.io/raft|go\.etcd\.io/bbolt`)},
	{"sanitizer", false, false, regexp.MustCompile(`pacer/observability\.\(\*Sanitizer\)`)},
	{"logging (slog, JSON lines)", false, false, regexp.MustCompile(`^log/slog|pacer/observability\.\(\*sanitizingHandler\)`)},
	{"tracing (OpenTelemetry)", false, false, regexp.MustCompile(`go\.opentelemetry\.io/`)},
	{"metrics (Prometheus)", false, false, regexp.MustCompile(`prometheus/client_golang`)},
	{"etcd client", false, false, regexp.MustCompile(`go\.etcd\.io/etcd/(client|api)`)},
	{"gRPC, HTTP/2, TLS, protobuf", false, false, regexp.MustCompile(`^(google\.golang\.org/(grpc|protobuf)|golang\.org/x/net/http2|crypto/)`)},
	{"plugin host", false, false, regexp.MustCompile(`pacer/runner/pluginhost`)},
	{"coordinator", false, false, regexp.MustCompile(`pacer/runner/coord`)},
	{"runner (scheduler, run path)", false, false, regexp.MustCompile(`pacer/runner\.`)},
	{"SDK (plugin side)", false, false, regexp.MustCompile(`pacer/sdk`)},
	{"task code", false, false, regexp.MustCompile(`^main\.`)},
	{"encoding/json", false, false, regexp.MustCompile(`^encoding/json`)},
	{"Go scheduler, timers, syscalls", false, true, regexp.MustCompile(`^runtime\.(schedule|findRunnable|mcall|park_m|netpoll|sysmon|mstart|checkTimers|runqgrab|stealWork|gopark|goready|ready|wakep|startm|stopm|notewakeup|notesleep|futex|usleep|exitsyscall|entersyscall)|^(syscall|internal/runtime/syscall|internal/poll|os)\.`)},
}

// Other is the component of samples no rule matched.
const Other = "other"

// Share is one component's part of a profile.
type Share struct {
	Component string
	Samples   int
	// Percent is of all samples; InMalloc the percent of the component's
	// own samples spent allocating.
	Percent, InMalloc float64
}

var malloc = regexp.MustCompile(`^runtime\.(mallocgc|newobject|makeslice|growslice|makemap|gcAssist|rawstring)`)

// Split reads perf script's output and returns the components' shares,
// largest first, and the number of samples.
func Split(r io.Reader) ([]Share, int, error) {
	counts, allocs := map[string]int{}, map[string]int{}
	total := 0
	var stack []string
	inSample := false
	flush := func() {
		if !inSample {
			return
		}
		c := classify(stack)
		counts[c]++
		if slices.ContainsFunc(stack, malloc.MatchString) {
			allocs[c]++
		}
		total++
		stack, inSample = stack[:0], false
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] != ' ' && line[0] != '\t': // a sample's header line
			flush()
			inSample = true
		default: // "\t    addr symbol+off (dso)"
			fields := strings.Fields(line)
			if len(fields) >= 2 {
				sym, _, _ := strings.Cut(fields[1], "+0x")
				stack = append(stack, sym)
			}
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, 0, err
	}
	out := make([]Share, 0, len(counts))
	for c, n := range counts {
		out = append(out, Share{Component: c, Samples: n, Percent: 100 * float64(n) / float64(total),
			InMalloc: 100 * float64(allocs[c]) / float64(n)})
	}
	slices.SortFunc(out, func(a, b Share) int { return b.Samples - a.Samples })
	return out, total, nil
}

// classify names the component of one sample's stack, leaf first.
func classify(stack []string) string {
	for _, c := range components {
		if c.root && slices.ContainsFunc(stack, c.match.MatchString) {
			return c.name
		}
	}
	// The code a sample's time was spent for, nearest the leaf; the Go
	// runtime's own work (scheduling, timers, system calls) only when no
	// such frame is on the stack (an idle thread, sysmon, a goroutine
	// switch).
	for _, f := range stack {
		for _, c := range components {
			if !c.root && !c.fallback && c.match.MatchString(f) {
				return c.name
			}
		}
	}
	for _, f := range stack {
		for _, c := range components {
			if c.fallback && c.match.MatchString(f) {
				return c.name
			}
		}
	}
	return Other
}

// Script runs perf script on a recording and splits it.
func Script(data string) ([]Share, int, error) {
	out, err := exec.Command("perf", "script", "-i", data).Output()
	if err != nil {
		return nil, 0, fmt.Errorf("perf script -i %s: %w", data, err)
	}
	return Split(strings.NewReader(string(out)))
}

// Format writes shares as lines of a table: component, percent of the
// samples, µs of CPU per operation when perOp > 0 (the profiled process's
// CPU time per operation), and the part spent allocating.
func Format(shares []Share, total int, perOp float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-32s %7s", "component", "share")
	if perOp > 0 {
		fmt.Fprintf(&b, " %9s", "µs/op")
	}
	fmt.Fprintf(&b, " %9s\n", "in malloc")
	for _, s := range shares {
		fmt.Fprintf(&b, "%-32s %6.1f%%", s.Component, s.Percent)
		if perOp > 0 {
			fmt.Fprintf(&b, " %9.1f", perOp*s.Percent/100)
		}
		fmt.Fprintf(&b, " %8.0f%%\n", s.InMalloc)
	}
	fmt.Fprintf(&b, "%d samples\n", total)
	return b.String()
}
