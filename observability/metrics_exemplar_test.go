package observability_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/pacerun/pacer/observability"
)

// TestObserveWithTraceExemplars: each bucket's exemplar carries the trace
// ID of its own last observation, though ObserveWithTrace reuses its label
// maps, also when runs observe at once.
func TestObserveWithTraceExemplars(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	values := []float64{0.004, 0.2, 7, 100} // one per bucket, each in its own
	var wg sync.WaitGroup
	for i, v := range values {
		wg.Go(func() {
			for j := range 200 {
				observability.ObserveWithTrace(m.JobRunDuration.WithLabelValues(fmt.Sprint("j", i), "p"), v, fmt.Sprintf("trace-%d-%d", i, j))
			}
		})
	}
	wg.Wait()
	observability.ObserveWithTrace(m.JobRunDuration.WithLabelValues("untraced", "p"), 1, "")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exemplars := map[string][]string{} // job_id: the exemplars' labels
	for _, mf := range mfs {
		if mf.GetName() != "pacer_job_run_duration_seconds" {
			continue
		}
		for _, met := range mf.GetMetric() {
			job := ""
			for _, l := range met.GetLabel() {
				if l.GetName() == "job_id" {
					job = l.GetValue()
				}
			}
			exemplars[job] = nil
			for _, b := range met.GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					exemplars[job] = append(exemplars[job], l.GetName()+"="+l.GetValue())
				}
			}
		}
	}
	for i := range values {
		job := fmt.Sprint("j", i)
		if got, want := exemplars[job], fmt.Sprintf("trace_id=trace-%d-199", i); len(got) != 1 || got[0] != want {
			t.Errorf("job %s: exemplars %q, want [%s]", job, got, want)
		}
	}
	if got, ok := exemplars["untraced"]; !ok || len(got) != 0 {
		t.Errorf("an observation without a trace ID: exemplars %q (series there: %v), want none", got, ok)
	}
}
