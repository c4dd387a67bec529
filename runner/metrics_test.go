package runner_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
)

// series lists the series of metric family name in reg, each as its label
// values joined by "," in the order of the label names (sorted), and its
// value: "a,success,p=0". Label names are left out on purpose: the test
// holds whatever they are called.
func series(t *testing.T, reg prometheus.Gatherer, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, l := range m.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			out = append(out, strings.Join(vals, ",")+"="+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	slices.Sort(out)
	return out
}

// TestJobSeriesExistAtZeroAndGoWithTheJob: every job's counters exist at 0
// for every outcome and skip reason as soon as it is configured, so the
// first failure shows in increase(); a reload that removes a job deletes
// its series, and one that moves it to another plugin deletes the old
// plugin's.
func TestJobSeriesExistAtZeroAndGoWithTheJob(t *testing.T) {
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Metrics: m})
	a, b := job("a", runner.OverlapForbid), job("b", runner.OverlapForbid)
	b.Plugin = "q"
	r.SetJobs([]*runner.Job{a, b})

	var want []string
	for _, j := range []*runner.Job{a, b} {
		for _, o := range observability.Outcomes {
			want = append(want, j.ID+","+o+","+j.Plugin+"=0")
		}
	}
	slices.Sort(want)
	if got := series(t, m.Registry, "pacer_job_runs_total"); !slices.Equal(got, want) {
		t.Fatalf("pacer_job_runs_total:\n got %v\nwant %v", got, want)
	}
	if got := series(t, m.Registry, "pacer_job_skipped_total"); len(got) != 2*len(runner.SkipReasons) ||
		!slices.Contains(got, "a,overlap=0") || !slices.Contains(got, "b,too_old=0") ||
		!slices.Contains(got, "a,expired=0") || !slices.Contains(got, "b,not_in_job_set=0") {
		t.Fatalf("pacer_job_skipped_total: %v", got)
	}
	for _, name := range []string{"pacer_job_running", "pacer_job_schedule_lag_seconds"} {
		if got := series(t, m.Registry, name); !slices.Equal(got, []string{"a=0", "b=0"}) {
			t.Fatalf("%s: %v", name, got)
		}
	}
	if got := series(t, m.Registry, "pacer_job_last_success_timestamp_seconds"); len(got) != 0 {
		t.Fatalf("last success exists before any success (0 would read as 1970): %v", got)
	}

	// Reload: b removed, a moved to plugin q.
	a2 := job("a", runner.OverlapForbid)
	a2.Plugin = "q"
	r.SetJobs([]*runner.Job{a2})
	for _, name := range []string{"pacer_job_runs_total", "pacer_job_skipped_total", "pacer_job_running",
		"pacer_job_run_duration_seconds", "pacer_job_schedule_lag_seconds"} {
		for _, s := range series(t, m.Registry, name) {
			if strings.HasPrefix(s, "b,") || strings.HasPrefix(s, "b=") {
				t.Errorf("%s: series of removed job b left: %s", name, s)
			}
			if labels, _, _ := strings.Cut(s, "="); strings.HasPrefix(s, "a,") && strings.HasSuffix(labels, ",p") {
				t.Errorf("%s: series of a's old plugin left: %s", name, s)
			}
		}
	}
	if got := series(t, m.Registry, "pacer_job_runs_total"); len(got) != len(observability.Outcomes) || got[0] != "a,canceled,q=0" {
		t.Fatalf("after reload pacer_job_runs_total: %v", got)
	}
	if got := series(t, m.Registry, "pacer_job_skipped_total"); len(got) != len(runner.SkipReasons) {
		t.Fatalf("after reload pacer_job_skipped_total: %v (a stays, its skip series too)", got)
	}
}

// TestRemovedRunningJobSeriesGoWhenTheRunEnds: a job removed while a run of
// it goes on keeps its series until that run ends (its outcome is counted),
// then they are deleted. The removal cancels the run; the task here takes
// until it is released to stop.
func TestRemovedRunningJobSeriesGoWhenTheRunEnds(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	b.tasks.stubborn.Store(true)
	j := job("gone", runner.OverlapForbid)
	b.r.SetJobs([]*runner.Job{j})
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	<-b.tasks.started
	b.r.SetJobs(nil)
	if got := series(t, b.metrics.Registry, "pacer_job_running"); !slices.Equal(got, []string{"gone=1"}) {
		t.Fatalf("while running: pacer_job_running = %v", got)
	}
	close(b.tasks.release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, name := range []string{"pacer_job_runs_total", "pacer_job_skipped_total", "pacer_job_running",
			"pacer_job_run_duration_seconds", "pacer_job_schedule_lag_seconds", "pacer_job_last_success_timestamp_seconds"} {
			left = append(left, series(t, b.metrics.Registry, name)...)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("series of the removed job left after its run ended: %v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJobSeriesFollowTheShard: a job's series live on the leader of its
// shard. They appear, at 0, when the term starts, and go when it ends; a
// job still running then keeps its series until the run ends and its
// outcome is counted. So a replica holds the series of its share of the
// jobs only.
func TestJobSeriesFollowTheShard(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	// A runner of its own, which hears of the term only from this test.
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: b.tasks, Metrics: m, Tracer: b.tp.Tracer("t"),
		Logger: discardLogger()})
	defer r.Stop(context.Background())
	idle, busy := job("idle", runner.OverlapForbid), job("busy", runner.OverlapForbid)
	r.SetJobs([]*runner.Job{idle, busy})
	count := func() int {
		n := 0
		for _, name := range []string{"pacer_job_runs_total", "pacer_job_skipped_total", "pacer_job_running", "pacer_job_paused",
			"pacer_job_run_duration_seconds", "pacer_job_schedule_lag_seconds"} {
			n += len(series(t, m.Registry, name))
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d job series before the shard's term started here, want 0", n)
	}
	r.OnTerm(term)
	perJob := len(observability.Outcomes) + len(runner.SkipReasons) + 4 // running, paused, duration, lag
	if n := count(); n != 2*perJob {
		t.Fatalf("%d job series while leading, want %d", n, 2*perJob)
	}
	r.Fire(runner.Slot{Job: busy, Time: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)})
	<-b.tasks.started
	r.OnTransition(false, term) // the term ends here (the run goes on: this test holds it)
	if got := series(t, m.Registry, "pacer_job_running"); !slices.Equal(got, []string{"busy=1"}) {
		t.Fatalf("after the term ended, with busy still running: pacer_job_running = %v", got)
	}
	close(b.tasks.release)
	deadline := time.Now().Add(10 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d job series left after the term ended and the run finished", count())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
