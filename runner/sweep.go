package runner

import (
	"errors"
	"slices"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// sweep removes, while t lasts, everything stored for jobs that are no
// longer configured (claim key, horizon, pause flag, run records), so that
// etcd holds keys for the configured jobs only. A job is removed when it
// was missing from the job set at two sweeps in a row, SweepInterval
// apart: a job dropped by mistake and put back within the interval keeps
// its history. A job with an open claim waits for the next sweep. Jobs
// with run records only (no claim key: never claimed) are looked for at
// the term's second sweep only, as that costs a read per job.
func (r *Runner) sweep(t *coord.Term) {
	missing := map[string]bool{} // at the previous sweep
	timer := time.NewTimer(r.o.SweepInterval)
	defer timer.Stop()
	for n := 1; ; n++ {
		select {
		case <-t.Context().Done():
			return
		case <-r.stopping.Done():
			return
		case <-timer.C:
		}
		stored, err := r.o.Coord.StoredJobs(t.Context(), n == 2)
		if err != nil {
			r.log.Warn("looking for the keys of removed jobs failed; trying again later", "error", err)
			timer.Reset(r.o.SweepInterval)
			continue
		}
		for id := range missing { // found by an earlier, deeper look
			if !slices.Contains(stored, id) {
				stored = append(stored, id)
			}
		}
		next := map[string]bool{}
		for _, id := range stored {
			if _, ok := r.Job(id); ok {
				continue
			}
			if !missing[id] {
				next[id] = true
				continue
			}
			switch err := r.o.Coord.ForgetJob(t.Context(), t, id); {
			case err == nil:
				r.log.Info("removed the keys of a job that is no longer configured (claims, pause flag, run records)", "job", id)
			case errors.Is(err, coord.ErrNotLeader):
				return
			default:
				next[id] = true
				r.log.Warn("keys of a removed job not removed yet; trying again later", "job", id, "error", err)
			}
		}
		missing = next
		timer.Reset(r.o.SweepInterval)
	}
}
