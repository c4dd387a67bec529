package zapslog

import (
	"log/slog"
	"testing"
	"time"
)

// The first entry of a message after its window carries the count of
// those dropped within it.
func TestLimiterCountsWhatItDropped(t *testing.T) {
	var l limiter
	t0 := time.Unix(1700000000, 0)
	pass := func(at time.Duration) (bool, int) { return l.pass(slog.LevelWarn, "m", 5*time.Second, t0.Add(at)) }
	if ok, n := pass(0); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for i := range 4 {
		if ok, _ := pass(time.Duration(i+1) * time.Second); ok {
			t.Fatalf("repeat %d within the window passed", i)
		}
	}
	if ok, _ := l.pass(slog.LevelError, "m", 5*time.Second, t0.Add(time.Second)); !ok {
		t.Fatal("the same message at another level was held back")
	}
	if ok, n := pass(6 * time.Second); !ok || n != 4 {
		t.Fatalf("after the window: %v, suppressed %d, want 4", ok, n)
	}
	if ok, n := pass(12 * time.Second); !ok || n != 0 {
		t.Fatalf("next window: %v %d", ok, n)
	}
}
