package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// PACER_SCHEDULED_TIME keeps the fraction of a second a manual run's time
// has, so it does not read like the scheduled slot of the same second (the
// docs call the scheduled time a deduplication key); a whole-second slot
// reads as it always did, without a fraction.
func TestScheduledTimeKeepsTheFraction(t *testing.T) {
	h := sdktest.Serve(t, sdk.Plugin{Name: "shell", Tasks: map[string]sdk.Task{
		"exec": sdk.Typed("Run a command; exit status 0 is success.", execTask),
	}})
	defer h.Close()
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 12, 6, 17, 38, 14, 0, time.UTC), "2026-12-06T17:38:14Z"},
		{time.Date(2026, 12, 6, 17, 38, 14, 457e6, time.UTC), "2026-12-06T17:38:14.457Z"},
		{time.Date(2026, 12, 6, 18, 38, 14, 5e6, time.FixedZone("CET", 3600)), "2026-12-06T17:38:14.005Z"},
	} {
		res := h.Run(context.Background(), sdktest.Call{Task: "exec",
			Params: map[string]any{"command": []any{"/bin/sh", "-c", `printf %s "$PACER_SCHEDULED_TIME"`}},
			Info:   sdk.RunInfo{ScheduledTime: tc.at}})
		if res.Err != nil {
			t.Fatalf("%s: %v", tc.at, res.Err)
		}
		if got := strings.TrimSpace(res.Output); got != tc.want {
			t.Errorf("scheduled %s: PACER_SCHEDULED_TIME=%q, want %q", tc.at, got, tc.want)
		}
	}
}
