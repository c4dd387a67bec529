//go:build faultclock

package runner

// The fault clock, for fault-injection tests only (docs/chaos-results.md,
// scenario 11). Go programs read the clock through the vDSO, so libfaketime cannot
// shift them; instead, a binary built with -tags faultclock shifts the
// runner's wall clock by the Go duration (such as "-90s" or "1h") in the
// file named by PACER_FAULT_CLOCK_FILE, re-read every 50 ms. A missing or
// empty file means no shift. Never ship a build with this tag.

import (
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func init() {
	path := os.Getenv("PACER_FAULT_CLOCK_FILE")
	slog.Warn("fault clock compiled in: the runner's wall clock follows PACER_FAULT_CLOCK_FILE; a test build, never for production",
		"file", path)
	var offset atomic.Int64 // nanoseconds
	last := ""
	read := func() { // from init, then from one goroutine
		b, _ := os.ReadFile(path) // missing: no shift
		text := strings.TrimSpace(string(b))
		if text == last {
			return
		}
		last = text
		var d time.Duration
		if text != "" {
			var err error
			if d, err = time.ParseDuration(text); err != nil {
				slog.Warn("fault clock: bad offset; keeping the last one", "file", path, "error", err)
				return
			}
		}
		offset.Store(int64(d))
		slog.Warn("fault clock: wall clock shifted", "offset", d)
	}
	read()
	// A real clock jump moves the wall clock only: Add shifts the monotonic
	// reading too, so strip it (Round(0)), and every comparison made with
	// the result uses the shifted wall clock.
	wallNow = func() time.Time { return time.Now().Add(time.Duration(offset.Load())).Round(0) }
	if path == "" {
		return
	}
	go func() {
		for range time.Tick(50 * time.Millisecond) {
			read()
		}
	}()
}
