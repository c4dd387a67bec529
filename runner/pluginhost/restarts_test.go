package pluginhost_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// A plugin whose process crashes and whose binary then cannot be started
// (another plugin's binary, one not executable, one that never hands shake:
// the runbook's "binary replaced by a broken build") counts every attempt
// to replace the process, failed ones included, in
// pacer_plugin_restarts_total and in RESTARTS: the first by the crash, each
// later one by the failed start before it. (Attempts were counted only
// when a process came up: all stayed 0, and PacerPluginCrashLooping could
// not fire.)
func TestFailedReplacementsCountAsRestarts(t *testing.T) {
	t.Parallel()
	hang := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 300\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		breakBin func(t *testing.T, bin string)
	}{
		{"another plugin's binary", func(t *testing.T, bin string) { copyPlugin(t, "shell", bin, 0o755) }},
		{"not executable", func(t *testing.T, bin string) {
			if err := os.Chmod(bin, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"hangs at start", func(t *testing.T, bin string) {
			b, err := os.ReadFile(hang)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(bin+".tmp", b, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(bin+".tmp", bin); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := observability.NewMetrics("test")
			if err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(t.TempDir(), "testplugin")
			copyPlugin(t, "testplugin", bin, 0o755)
			// Three failures quarantine it: the crash and two failed starts.
			b := setup(t, pluginhost.Options{Paths: map[string]string{"testplugin": bin}, Metrics: m,
				RestartBackoff: time.Millisecond, MaxRestartBackoff: time.Millisecond,
				QuarantineCrashes: 3, QuarantineFor: time.Hour, StartTimeout: 3 * time.Second})
			c := call("echo", map[string]any{"message": "x"})
			if _, err := b.host.Run(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			st, _ := statusOf(b.host, "testplugin")
			tc.breakBin(t, bin)
			if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var runErr error
			deadline := time.Now().Add(time.Minute)
			for !errors.Is(runErr, pluginhost.ErrPluginQuarantined) {
				if time.Now().After(deadline) {
					t.Fatalf("not quarantined after a minute; the last run: %v", runErr)
				}
				_, runErr = b.host.Run(context.Background(), c) // waits out the 1 ms backoff itself
			}
			want := map[string]float64{pluginhost.ReasonCrash: 1, pluginhost.ReasonStart: 1}
			for _, reason := range pluginhost.RestartReasons {
				if got := testutil.ToFloat64(m.PluginRestarts.WithLabelValues("testplugin", reason)); got != want[reason] {
					t.Errorf("restarts{reason=%q} = %v, want %v", reason, got, want[reason])
				}
			}
			if st, _ := statusOf(b.host, "testplugin"); st.State != "quarantined" || st.Restarts != 2 {
				t.Errorf("status %+v, want quarantined after 2 restarts", st)
			}
		})
	}
}
