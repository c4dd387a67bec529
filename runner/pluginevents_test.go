package runner_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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

// setupLogging is setup with a runner calling tasks that logs JSON to the
// buffer it returns; it leads once this returns.
func setupLogging(t *testing.T, tasks runner.TaskRunner) (*bundle, *syncbuf.Buffer) {
	b := setup(t)
	logs := &syncbuf.Buffer{}
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: slog.New(slog.NewJSONHandler(logs, nil)), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	b.waitLeader(t)
	return b, logs
}

// A plugin's log record reaches the run's log at its level, with its
// attributes, marked as the plugin's and carrying the run's correlation
// ID; its progress is logged and kept in the run's record.
func TestPluginLogAndProgressReachTheRun(t *testing.T) {
	b, logs := setupLogging(t, eventTasks{})

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

// floodTasks reports progress n times, as a task that reports per item.
type floodTasks struct{ n int }

func (f floodTasks) Run(_ context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	for i := range f.n {
		c.OnProgress(pluginhost.Progress{Percent: float64(i * 100 / f.n), Message: "item " + strconv.Itoa(i)})
	}
	return &pluginhost.Result{Output: "ok"}, nil
}

// Attack 19, P15: a task reporting progress per item wrote one runner log
// line per report (20,000 in 0.3 s), past every bound on a run's log, and
// with a slow log reader drowned other jobs' lines. Progress is logged at
// most once a second; the record keeps the last report.
func TestProgressFloodIsNotLoggedLineByLine(t *testing.T) {
	b, logs := setupLogging(t, floodTasks{n: 5000})

	start := time.Now()
	b.r.Fire(runner.Slot{Job: job("flood", ""), Time: slotAhead()})
	waitCount(t, "records", func() float64 { return float64(len(records(t, b, "flood"))) }, 1)
	took := time.Since(start)
	if rec := records(t, b, "flood")[0]; rec.Progress != "99% item 4999" {
		t.Errorf("record's progress %q, want the last report", rec.Progress)
	}
	n := strings.Count(logs.String(), `"msg":"run progress"`)
	if max := 1 + int(took/time.Second); n < 1 || n > max {
		t.Fatalf("%d run progress lines for 5,000 reports in %s; want 1 to %d", n, took, max)
	}
}

// oddTasks reports progress outside [0, 100].
type oddTasks struct{}

func (oddTasks) Run(_ context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	c.OnProgress(pluginhost.Progress{Percent: math.NaN(), Message: "nan"})
	c.OnProgress(pluginhost.Progress{Percent: math.Inf(1), Message: "inf"})
	return &pluginhost.Result{Output: "ok"}, nil
}

// Attack 19, P2: progress outside [0, 100] (NaN, ±Inf, 250) went through:
// the log line's percent became an error string for NaN and ±Inf, and the
// record said "+Inf%". It is kept within [0, 100], NaN as 0.
func TestProgressIsKeptWithinItsRange(t *testing.T) {
	b, logs := setupLogging(t, oddTasks{})
	b.r.Fire(runner.Slot{Job: job("odd", ""), Time: slotAhead()})
	waitCount(t, "records", func() float64 { return float64(len(records(t, b, "odd"))) }, 1)
	if rec := records(t, b, "odd")[0]; rec.Progress != "100% inf" {
		t.Errorf("record's progress %q, want %q", rec.Progress, "100% inf")
	}
	if strings.Contains(logs.String(), "!ERROR") || !strings.Contains(logs.String(), `"percent":0,`) {
		t.Fatalf("the log's percent is not a number in range:\n%s", logs.String())
	}
}
