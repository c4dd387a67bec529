package runner_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/schedule"
)

// The catch-up's line for slots missed while no replica led tells what
// becomes of them: for a paused job, the slots its policy would run are
// counted as paused, not running (they are recorded skipped, reason
// paused, and do not run).
func TestCatchUpLogCountsPausedSlotsAsPaused(t *testing.T) {
	b := setup(t)
	tasks := &scripted{}
	var logs syncbuf.Buffer
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: slog.New(slog.NewJSONHandler(&logs, nil)), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	term := b.waitLeader(t)
	all := &runner.Job{ID: "all", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{all})
	b.r.SetPaused(map[string]bool{"all": true})
	last := time.Now().Truncate(time.Second).UTC().Add(-5 * time.Second)
	if err := b.coord.Claim(context.Background(), term, "all", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(context.Background(), term, "all", last, "run-0", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}

	b.r.CatchUp(term)
	stop, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b.r.Stop(stop)

	var line map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "slots came due while no replica led" && l["job"] == "all" {
			line = l
		}
	}
	if line == nil {
		t.Fatalf("no catch-up line for the missed slots:\n%s", logs.String())
	}
	missed, _ := line["missed"].(float64)
	if missed < 4 || line["running"] != 0.0 || line["paused"] != missed || line["skipping"] != 0.0 {
		t.Errorf("catch-up line %v: want the %v missed slots counted paused, none running nor skipped", line, missed)
	}
	if called := tasks.called(); len(called) != 0 {
		t.Errorf("the catch-up ran %d slots of a paused job", len(called))
	}
}

// A one-off whose time passed before any leader of its shard had it is
// run by no catch-up (no slot from before a job existed runs): SetJobs
// said a leader's catch-up decides it, so the catch-up says it will
// never fire (attack 25, W4).
func TestCatchUpWarnsOfAOneOffItWillNotRun(t *testing.T) {
	b := setup(t)
	var logs syncbuf.Buffer
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: &scripted{}, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: slog.New(slog.NewJSONHandler(&logs, nil)), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	term := b.waitLeader(t)
	at := time.Now().Add(-5 * time.Second).UTC().Truncate(time.Second)
	spec := "at: " + at.Format(time.RFC3339)
	s, err := schedule.Parse(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.r.SetJobs([]*runner.Job{{ID: "added", Plugin: "p", Task: "t", Schedule: s, Spec: spec, Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Hour}}})
	b.r.CatchUp(term)
	want := `"level":"WARN","msg":"job will never fire: its one-off time has passed (next: never)","job":"added"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs.String())
	}
}
