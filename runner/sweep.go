package runner

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/shard"
)

// sweep removes, while the runner runs, everything stored for jobs that
// are no longer configured (claim key, horizon, pause flag and history, run records,
// trigger requests, idempotency receipts), so that etcd holds keys for the
// configured jobs only. Each replica removes those of the shards it leads
// (a removed job's shard is the hash of its ID, as for a configured one),
// under that shard's fencing token; it looks only while it leads any. A
// job is removed when it was missing from the job set at two sweeps in a
// row, SweepInterval apart: a job dropped by mistake and put back within
// the interval keeps its history. A job with an open claim or a run in
// progress waits for the next sweep, and so does one with a trigger
// request the trigger code has yet to decide (it is recorded as expired
// after TriggerExpiry, or runs if a reload brings the job back); a request
// still there a sweep after its expiry goes with the job. Jobs with run
// records, trigger requests or receipts only (no claim key: never claimed)
// are looked for at the second sweep only, as that costs a read per job.
// While the live replicas' job sets differ (Options.JobSetsAgree), nothing
// is removed and nobody counts as missing.
func (r *Runner) sweep() {
	missing := map[string]bool{} // at the previous sweep
	timer := time.NewTimer(r.o.SweepInterval)
	defer timer.Stop()
	for n := 0; ; {
		select {
		case <-r.stopping.Done():
			return
		case <-timer.C:
		}
		timer.Reset(r.o.SweepInterval)
		agree := r.o.JobSetsAgree == nil || r.o.JobSetsAgree()
		if !agree {
			if len(missing) > 0 {
				r.log.Info("keys of removed jobs kept: the live replicas' job sets differ, and a replica with the jobs may lead", "jobs", len(missing))
			}
			missing = map[string]bool{}
		}
		if len(r.o.Coord.Terms()) == 0 {
			continue // it leads no shard: their leaders sweep
		}
		requested, err := r.o.Coord.RequestedJobs(r.stopping)
		if err != nil {
			r.log.Warn("looking for the keys of removed jobs failed; trying again later", "error", err)
			continue
		}
		r.ageUnknownJobs(requested)
		if !agree {
			continue
		}
		n++
		stored, err := r.o.Coord.StoredJobs(r.stopping, n == 2)
		if err != nil {
			r.log.Warn("looking for the keys of removed jobs failed; trying again later", "error", err)
			continue
		}
		for _, id := range slices.Concat(requested, slices.Collect(maps.Keys(missing))) {
			// Found by this sweep's look at the API's keys, or by an
			// earlier, deeper look.
			if !slices.Contains(stored, id) {
				stored = append(stored, id)
			}
		}
		next := map[string]bool{}
		for _, id := range stored {
			if _, ok := r.Job(id); ok {
				continue
			}
			t := r.o.Coord.TermOf(shard.Of(id, r.o.Shards))
			if t == nil || t.Draining() {
				continue // its shard's leader removes it
			}
			if !missing[id] {
				next[id] = true
				continue
			}
			if why := r.sweepWaits(id); why != "" {
				next[id] = true
				r.log.Debug("keys of a removed job kept until the next sweep", "job", id, "why", why)
				continue
			}
			switch err := r.o.Coord.ForgetJob(t.Context(), t, id); {
			case err == nil:
				r.log.Info("removed the keys of a job that is no longer configured (claims, pause flag and history, run records, trigger requests, receipts)",
					"job", id, "shard", t.Shard)
			case errors.Is(err, coord.ErrNotLeader), t.Context().Err() != nil:
				// The shard moved: its next leader removes the keys.
			default:
				next[id] = true
				r.log.Warn("keys of a removed job not removed yet; trying again later", "job", id, "error", err)
			}
		}
		missing = next
	}
}

// ageUnknownJobs removes the run records and idempotency receipts of jobs
// this replica does not have, of the shards it leads, once none of them is
// younger than MaxRunAge and no trigger request of the job is stored
// (coord.ForgetIdleJob): what an expired trigger request of a job that only
// a replica outside the cluster's job set had leaves behind, its skip
// record and its receipt. It runs at every sweep, whether or not the
// replicas' job sets agree: while they differ the sweep of removed jobs
// removes nothing, and such a job may never be in the cluster's set.
func (r *Runner) ageUnknownJobs(jobs []string) {
	for _, id := range jobs {
		if _, ok := r.Job(id); ok || r.stopping.Err() != nil {
			continue
		}
		t := r.o.Coord.TermOf(shard.Of(id, r.o.Shards))
		if t == nil || t.Draining() {
			continue // its shard's leader ages them
		}
		switch deleted, err := r.o.Coord.ForgetIdleJob(t.Context(), t, id, r.o.MaxRunAge, receiptTime); {
		case err == nil && deleted:
			r.log.Info("removed the run records and receipts of a job this replica does not have: all older than history.max_age",
				"job", id, "shard", t.Shard, "max_age", r.o.MaxRunAge)
		case err == nil, errors.Is(err, coord.ErrNotLeader), t.Context().Err() != nil:
		default:
			r.log.Warn("aged keys of a job this replica does not have not removed yet; trying again later", "job", id, "error", err)
		}
	}
}

// receiptTime is when an idempotent call stored its receipt (Control's
// receipt); the zero time, older than any, for one it cannot read.
func receiptTime(b []byte) time.Time {
	var rc receipt
	_ = json.Unmarshal(b, &rc)
	return rc.At
}

// sweepWaits says why a removed job's keys must stay for now: a run of it
// in progress, or a trigger request of it that the trigger code has yet to
// decide (within TriggerExpiry of the request, and a sweep for the
// decision to be written); "" if none.
func (r *Runner) sweepWaits(job string) string {
	now := wallNow()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.running[job]) > 0 {
		return "a run of the job is in progress"
	}
	for _, st := range r.pending {
		if st.Job != job {
			continue
		}
		var req TriggerRequest
		if json.Unmarshal(st.Body, &req) != nil {
			continue // recorded as expired at once (trigger.go)
		}
		if now.Before(req.RequestedAt.Add(r.o.TriggerExpiry + r.o.SweepInterval)) {
			return "trigger request " + st.ID + " not decided yet"
		}
	}
	return ""
}

// maxAgeReads bounds the etcd reads of one ageRecords pass; the jobs left
// over are looked at by the next pass.
const maxAgeReads = 500

// ageInterval is how often ageRecords passes over the jobs: a tenth of
// MaxRunAge, at least a second and at most SweepInterval.
func (r *Runner) ageInterval() time.Duration {
	return min(max(r.o.MaxRunAge/10, time.Second), r.o.SweepInterval)
}

// ageRecords removes, while the runner runs, the run and skip records
// older than MaxRunAge of the jobs of the shards this replica leads, also
// of a job that writes no records any more: a record write prunes its own
// job's records (coord's prune), so without this pass the records of a
// paused, yearly, one-off or manual-only job would never age out. Every
// ageInterval it passes over the jobs, and reads etcd (keys only, one
// read; a delete when something is to go) for a job whose records were
// not pruned for a tenth of MaxRunAge, at most maxAgeReads per pass. So
// no record is kept much longer than 1.1 × MaxRunAge plus ageInterval.
func (r *Runner) ageRecords() {
	timer := time.NewTimer(r.ageInterval())
	defer timer.Stop()
	for {
		select {
		case <-r.stopping.Done():
			return
		case <-timer.C:
		}
		timer.Reset(r.ageInterval())
		reads := 0
		for _, j := range r.Jobs() {
			if reads >= maxAgeReads || r.stopping.Err() != nil {
				break
			}
			t := r.o.Coord.TermOf(j.shard)
			if t == nil || t.Draining() {
				continue // its shard's leader ages them
			}
			if r.o.Coord.PruneIdle(t.Context(), j.ID, r.o.KeepRuns, r.o.MaxRunAge) {
				reads++
			}
		}
	}
}
