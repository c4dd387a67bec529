package pluginhost_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// A plugin process stopped by SIGSTOP (or a frozen cgroup) answers nothing.
// Before the fix, killing it waited for its answer to go-plugin's Shutdown
// call and health probes waited for a Ping: both forever, so a timed-out
// run never returned, the runner could not stop, and the probe never
// noticed.
func TestStoppedPluginIsKilled(t *testing.T) {
	t.Parallel()
	// within runs f and fails the test if it has not returned by then.
	within := func(t *testing.T, d time.Duration, what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); f() }()
		select {
		case <-done:
		case <-time.After(d):
			t.Fatalf("%s did not return within %s", what, d)
		}
	}
	// stopped starts the plugin and stops its process; it returns the pid.
	stopped := func(t *testing.T, h *pluginhost.Host) int {
		t.Helper()
		res, err := h.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatal(err)
		}
		pid := int(res.Data["pid"].(float64))
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
		return pid
	}

	t.Run("a run times out", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pluginhost.Options{CancelGrace: 300 * time.Millisecond, ProbeInterval: time.Hour})
		pid := stopped(t, b.host)
		within(t, 20*time.Second, "a run on the stopped plugin", func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := b.host.Run(ctx, call("sleep", map[string]any{"duration": "1h"})); !errors.Is(err, pluginhost.ErrPluginKilled) {
				t.Errorf("err = %v, want ErrPluginKilled", err)
			}
		})
		waitGone(t, pid)
		if _, err := b.host.Run(context.Background(), call("env", nil)); err != nil {
			t.Fatalf("no new process after the kill: %v", err)
		}
	})

	t.Run("health probes", func(t *testing.T) {
		t.Parallel()
		m, err := observability.NewMetrics("test")
		if err != nil {
			t.Fatal(err)
		}
		b := setup(t, pluginhost.Options{ProbeInterval: 100 * time.Millisecond, Metrics: m})
		pid := stopped(t, b.host)
		waitGone(t, pid)
		// The replacement counts the restart, with its reason.
		if _, err := b.host.Run(context.Background(), call("env", nil)); err != nil {
			t.Fatalf("no new process after the kill: %v", err)
		}
		if got := testutil.ToFloat64(m.PluginRestarts.WithLabelValues("testplugin", pluginhost.ReasonUnhealthy)); got != 1 {
			t.Fatalf("restarts{reason=unhealthy} = %v, want 1", got)
		}
	})

	t.Run("close", func(t *testing.T) {
		t.Parallel()
		h := pluginhost.New(pluginhost.Options{Dir: pluginDir, ProbeInterval: time.Hour})
		pid := stopped(t, h)
		within(t, 20*time.Second, "Close", func() { _ = h.Close() })
		waitGone(t, pid)
	})
}
