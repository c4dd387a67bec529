package pluginhost_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// TestConfiguredPluginSeriesExistAtZero: checking the jobs' tasks creates
// every restart reason's series (and the dropped-lines one) at 0 for each
// plugin the jobs use, so the first crash shows in increase() and in the
// crash-loop alert; plugins no job uses get none.
func TestConfiguredPluginSeriesExistAtZero(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pluginhost.Options{Metrics: m})
	if err := b.host.CheckTasks(context.Background(), []pluginhost.TaskRef{
		{File: "x", Job: "jobs[0]", Plugin: "testplugin", Task: "echo", Params: map[string]any{"message": "x"}},
	}); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.PluginRestarts, "pacer_plugin_restarts_total"); n != len(pluginhost.RestartReasons) {
		t.Fatalf("%d restart series, want one per reason (%d)", n, len(pluginhost.RestartReasons))
	}
	for _, reason := range pluginhost.RestartReasons {
		if v := testutil.ToFloat64(m.PluginRestarts.WithLabelValues("testplugin", reason)); v != 0 {
			t.Fatalf("restarts{reason=%s} = %v, want 0", reason, v)
		}
	}
	if n := testutil.CollectAndCount(m.PluginLogsDropped, "pacer_plugin_log_lines_dropped_total"); n != 1 {
		t.Fatalf("%d dropped-lines series, want 1", n)
	}
}
