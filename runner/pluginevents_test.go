package runner_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// eventTasks is a TaskRunner whose task logs and reports progress through
// the call's callbacks, as the plugin host hands a plugin's events over.
type eventTasks struct{}

func (eventTasks) Run(_ context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	c.OnLog(pluginhost.LogRecord{Level: slog.LevelWarn, Message: "disk almost full",
		Attrs: []slog.Attr{slog.Float64("free_pct", 3), slog.String("mount", "/data")}})
	c.OnProgress(pluginhost.Progress{Percent: 42.4, Message: "copied 3 of 7"})
	return &pluginhost.Result{Output: "ok"}, nil
}

// A plugin's log record reaches the run's log at its level, with its
// attributes, marked as the plugin's and carrying the run's correlation
// ID; its progress is logged and kept in the run's record.
func TestPluginLogAndProgressReachTheRun(t *testing.T) {
	b := setup(t)
	var logs syncbuf.Buffer
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: eventTasks{}, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: slog.New(slog.NewJSONHandler(&logs, nil)), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	b.waitLeader(t)

	b.r.Fire(runner.Slot{Job: job("events", ""), Time: slotAhead()})
	waitCount(t, "records", func() float64 { return float64(len(records(t, b, "events"))) }, 1)
	rec := records(t, b, "events")[0]
	if rec.Progress != "42% copied 3 of 7" {
		t.Errorf("record's progress %q, want %q", rec.Progress, "42% copied 3 of 7")
	}

	lines := map[string]map[string]any{}
	for raw := range strings.Lines(logs.String()) {
		var l map[string]any
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		if msg, _ := l["msg"].(string); msg != "" {
			lines[msg] = l
		}
	}
	corr := rec.CorrelationID
	for msg, want := range map[string]map[string]any{
		"disk almost full": {"level": "WARN", "source": "plugin", "plugin": "p", "free_pct": 3.0, "mount": "/data",
			"job": "events", "correlation_id": corr, "run_id": rec.RunID},
		"run progress": {"level": "INFO", "percent": 42.4, "progress": "copied 3 of 7", "correlation_id": corr},
	} {
		got, ok := lines[msg]
		if !ok {
			t.Errorf("no %q line in the run's log", msg)
			continue
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%q line: %s = %v, want %v\n%v", msg, k, got[k], v, got)
			}
		}
	}
	// Every field the runner writes on a plugin's line is one the plugin
	// host renames in the plugin's attributes (attack 14, K7), so that a
	// plugin cannot put a second correlation_id on it.
	for k := range lines["disk almost full"] {
		if k != "free_pct" && k != "mount" && !slices.Contains(observability.ReservedLogKeys, k) {
			t.Errorf("the runner writes %q on a plugin's line; add it to observability.ReservedLogKeys", k)
		}
	}
}
