package config

import (
	"math"
	"testing"
	"time"
)

// plugins.cancel_grace is accepted up to its bound, and the stop timeout
// built from it is the plain sum there; past every bound (a Config built
// in code, not parsed) the sum saturates instead of wrapping around to a
// negative, already expired, deadline: SIGTERM made an unclean stop at
// once with the largest grace validation accepted before.
func TestStopTimeoutAtTheEdges(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("pacer.yaml", y("shutdown: {drain_timeout: 24h}", "plugins: {cancel_grace: 24h}"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.StopTimeout(), 48*time.Hour+15*time.Second; got != want {
		t.Errorf("stop timeout with the largest drain_timeout and cancel_grace: %s, want %s", got, want)
	}
	cfg.Plugins.CancelGrace = math.MaxInt64
	if got := cfg.StopTimeout(); got != math.MaxInt64 {
		t.Errorf("stop timeout with cancel_grace %s: %s, want the largest duration", cfg.Plugins.CancelGrace, got)
	}
}
