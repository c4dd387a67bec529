package observability_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
)

// No pacer_ metric may have a label called job: Prometheus gives every
// target that label (the scrape job), so a metric label of that name is
// renamed to exported_job, or, with honor_labels, overwrites the target's.
// Per-job metrics carry the job ID as job_id.
func TestMetricLabelsDoNotCollideWithTargetLabels(t *testing.T) {
	m, err := observability.NewMetrics("v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	// Give every vector one series, so that Gather shows its labels.
	m.JobRuns.WithLabelValues("j", "p", observability.OutcomeSuccess).Inc()
	m.JobRunDuration.WithLabelValues("j", "p").Observe(1)
	m.ScheduleLag.WithLabelValues("j").Observe(1)
	m.JobSkipped.WithLabelValues("j", "overlap").Inc()
	m.LastSuccess.WithLabelValues("j").Set(1)
	m.JobRunning.WithLabelValues("j").Set(1)
	m.JobPaused.WithLabelValues("j").Set(0)
	m.Leader.WithLabelValues("n").Set(1)
	m.LeaderChanges.WithLabelValues("acquired").Inc()
	m.KeepaliveAge.WithLabelValues().Set(0)
	m.Keepalives.WithLabelValues("ok").Inc()
	m.PluginUp.WithLabelValues("p").Set(1)
	m.PluginUnavailable.WithLabelValues("p").Set(0)
	m.PluginQuarantined.WithLabelValues("p").Set(0)
	m.PluginRestarts.WithLabelValues("p", "crash").Inc()
	m.PluginRPCDuration.WithLabelValues("p", "run").Observe(1)
	m.PluginLogsDropped.WithLabelValues("p").Inc()

	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Labels Prometheus sets on targets or uses itself.
	reserved := []string{"job", "instance", "exported_job", "exported_instance", "cluster", "namespace", "pod", "container"}
	perJob := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "pacer_") {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if slices.Contains(reserved, l.GetName()) {
					t.Errorf("%s has the label %q, which Prometheus reserves for targets", f.GetName(), l.GetName())
				}
				if l.GetName() == observability.JobLabel {
					perJob++
				}
			}
		}
	}
	if perJob < 7 {
		t.Errorf("only %d series carry %s; every pacer_job_* metric should", perJob, observability.JobLabel)
	}
	problems, err := testutil.CollectAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pacer_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}
