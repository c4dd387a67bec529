package runner

import (
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
)

// SkipReasons are every value of pacer_job_skipped_total's reason label.
var SkipReasons = []string{SkipOverlap, SkipMisfire, SkipPaused, SkipLockLost, SkipClaimedElsewhere, SkipTooOld,
	SkipExpired, SkipNotInJobSet, SkipReloaded, SkipStopping, SkipTreeAlive}

// A job's series live on the replica that leads its shard: they are created
// when its term starts (once the term's catch-up has sent its claims, and
// before it counts anything or starts a run), at 0, for every known label
// value (a counter that
// appears only with its first increment hides that first event from
// increase() and rate(), so an alert on it would miss the first failures;
// Prometheus' instrumentation guide: "avoid missing metrics"), and deleted
// when the term ends, once the job's runs here have ended (their outcomes
// are counted first). So a replica holds the series of its share of the
// jobs, about 45 per job, and sums and maxima over the replicas are the
// cluster's. A runner without a coordinator (tools, tests) is home to
// every job. Series of a job that a reload removes are deleted, so
// dashboards do not show it forever. Label values are passed positionally
// (job, then plugin, then outcome or reason), in the order
// observability.Metrics declares them.

// homeLocked reports whether the jobs of shard n have their series here.
// r.mu is held.
func (r *Runner) homeLocked(n int) bool { return r.o.Coord == nil || r.home[n] != nil }

// makeHome creates the series of t's shard's jobs, as t starts, and sets
// their pacer_job_paused. Only that shard's: a replica that starts leading
// 16 shards at once makes each job's series once, not 16 times.
func (r *Runner) makeHome(t *coord.Term) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.home[t.Shard] = t
	for _, j := range r.jobs {
		if j.shard == t.Shard {
			delete(r.unhomed, j.ID)
			r.initJobMetrics(j)
			r.exportPausedJobLocked(j.ID)
		}
	}
}

// exportLastSuccess sets pacer_job_last_success_timestamp_seconds of t's
// shard's jobs from their claims as read when t started: the last success
// any leader of the shard wrote, on any replica, so that a job's staleness
// is not lost when its shard moves. It runs before any run of t can end
// (a success here is later, and sets the gauge itself), and only while t's
// series are here.
func (r *Runner) exportLastSuccess(t *coord.Term, claims map[string]coord.JobClaims) {
	m := r.o.Metrics
	if m == nil || len(claims) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.home[t.Shard] != t {
		return
	}
	for id, jc := range claims {
		if j := r.jobs[id]; j != nil && j.shard == t.Shard && !jc.LastSuccess.IsZero() {
			m.LastSuccess.WithLabelValues(id).Set(float64(jc.LastSuccess.UnixNano()) / 1e9)
		}
	}
}

// leaveHome deletes the series of t's shard's jobs as t ends; a job's that
// still runs here, when its last run ends (runEndedLocked).
func (r *Runner) leaveHome(t *coord.Term) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.home[t.Shard] != t {
		return
	}
	delete(r.home, t.Shard)
	for _, j := range r.jobs {
		if j.shard != t.Shard {
			continue
		}
		if len(r.running[j.ID]) > 0 {
			r.unhomed[j.ID] = true
			continue
		}
		r.dropHomeLocked(j)
	}
}

// dropHomeLocked deletes every series of j here. r.mu is held.
func (r *Runner) dropHomeLocked(j *Job) {
	r.dropJobMetrics(j, false)
	r.o.Metrics.JobPaused.DeleteLabelValues(j.ID)
}

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
	if r.unhomed[id] {
		delete(r.unhomed, id)
		if j := r.jobs[id]; j != nil && !r.homeLocked(j.shard) {
			r.dropHomeLocked(j)
		}
	}
	old := r.retiring[id]
	delete(r.retiring, id)
	for _, j := range old {
		r.retireLocked(j)
	}
}
