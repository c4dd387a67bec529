package runner

import "github.com/pacerun/pacer/observability"

// SkipReasons are every value of pacer_job_skipped_total's reason label.
var SkipReasons = []string{SkipOverlap, SkipMisfire, SkipPaused, SkipLockLost, SkipClaimedElsewhere, SkipTooOld,
	SkipExpired, SkipNotInJobSet, SkipReloaded, SkipStopping, SkipTreeAlive}

// Series of a job's metrics exist from the moment the job is configured, at
// 0, for every known label value: a counter that appears only with its first
// increment hides that first event from increase() and rate(), so an alert
// on it would miss the first failures (Prometheus' instrumentation guide:
// "avoid missing metrics"). Series of a job that a reload removes are
// deleted, so dashboards do not show it forever. Label values are passed
// positionally (job, then plugin, then outcome or reason), in the order
// observability.Metrics declares them.

// initJobMetrics creates j's series at 0. The last-success timestamp is left
// out: 0 would read as "last success in 1970" and fire staleness alerts.
func (r *Runner) initJobMetrics(j *Job) {
	m := r.o.Metrics
	if m == nil {
		return
	}
	for _, o := range observability.Outcomes {
		m.JobRuns.WithLabelValues(j.ID, j.Plugin, o)
	}
	for _, reason := range SkipReasons {
		m.JobSkipped.WithLabelValues(j.ID, reason)
	}
	m.JobRunDuration.WithLabelValues(j.ID, j.Plugin)
	m.ScheduleLag.WithLabelValues(j.ID)
	m.JobRunning.WithLabelValues(j.ID)
}

// dropJobMetrics deletes j's series: all of them, or with pluginOnly those
// labelled with j's plugin, for a job that stays under another plugin.
func (r *Runner) dropJobMetrics(j *Job, pluginOnly bool) {
	m := r.o.Metrics
	if m == nil {
		return
	}
	for _, o := range observability.Outcomes {
		m.JobRuns.DeleteLabelValues(j.ID, j.Plugin, o)
	}
	m.JobRunDuration.DeleteLabelValues(j.ID, j.Plugin)
	if pluginOnly {
		return
	}
	for _, reason := range SkipReasons {
		m.JobSkipped.DeleteLabelValues(j.ID, reason)
	}
	m.ScheduleLag.DeleteLabelValues(j.ID)
	m.JobRunning.DeleteLabelValues(j.ID)
	m.LastSuccess.DeleteLabelValues(j.ID)
}

// retireLocked deletes the series old no longer has under the current jobs.
// While a run of it is still going, that run's end does it (runEndedLocked):
// the run's outcome is counted first. r.mu is held.
func (r *Runner) retireLocked(old *Job) {
	cur := r.jobs[old.ID]
	if cur != nil && cur.Plugin == old.Plugin {
		return
	}
	if len(r.running[old.ID]) > 0 {
		r.retiring[old.ID] = append(r.retiring[old.ID], old)
		return
	}
	r.dropJobMetrics(old, cur != nil)
}

// runEndedLocked retires the series a reload left to the end of a job's
// last running run. r.mu is held.
func (r *Runner) runEndedLocked(id string) {
	if len(r.running[id]) > 0 {
		return
	}
	old := r.retiring[id]
	delete(r.retiring, id)
	for _, j := range old {
		r.retireLocked(j)
	}
}
