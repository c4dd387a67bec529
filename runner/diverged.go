package runner

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// A leader whose job set differs from the cluster's, for less than
// job_set_settle (an edit reverted within seconds, the first step of a
// rolling update), fires the jobs as it defines them. The slots of a job
// as the others define it that came due meanwhile are neither run nor,
// once a later slot of the job is claimed, seen by a catch-up that looks
// only after the job's last claim. Two looks find them, each deciding
// every such slot with a not_in_job_set record and its mark in the job's
// claim key (one fenced transaction, so no later look records it again):
//
//   - a term's catch-up looks, for each job, at the undecided slots
//     before its last claim too, from when a leader first ran the job as
//     this replica defines it, when a leader of those times had it
//     otherwise (the epochs say so);
//   - the same look finds the slots that came due as the shard passed
//     from a leader with the job to one without it, which got the job
//     later (jobSetHistory.orphaned): no catch-up decided them, and later
//     slots ran, so each gets a misfire record and its mark;
//   - a reload that gives this replica a definition the cluster switched
//     to before it got it looks at the slots of it since the switch, in
//     each shard it leads (decideSwitchWindow);
//   - a reload that gives a job back a definition this replica had before
//     (a removal or a change undone) looks at the slots of that
//     definition since this replica stopped having it, in each shard it
//     leads (decideDroppedWindow).

// maxDropped bounds the definitions of one job remembered as dropped.
const maxDropped = 4

// noteDefinitionsLocked remembers, for a reload from the job set old to
// set at now, when each definition was dropped; it returns the jobs given
// back a definition dropped earlier, with when it was dropped. r.mu is
// held.
func (r *Runner) noteDefinitionsLocked(old, set coord.JobSet, now time.Time) (back map[string]time.Time) {
	if r.dropped == nil {
		r.dropped = map[string]map[string]time.Time{}
	}
	for id, d := range r.dropped { // a definition dropped a day ago: its leader has long handed over
		maps.DeleteFunc(d, func(_ string, at time.Time) bool { return now.Sub(at) > 24*time.Hour })
		if len(d) == 0 {
			delete(r.dropped, id)
		}
	}
	for id, h := range old.Jobs {
		if nh, ok := set.Jobs[id]; ok && nh == h {
			continue
		}
		d := r.dropped[id]
		if d == nil {
			d = map[string]time.Time{}
			r.dropped[id] = d
		}
		d[h] = now
		for len(d) > maxDropped { // forget the definition dropped first
			var oldest string
			for k, at := range d {
				if oldest == "" || at.Before(d[oldest]) {
					oldest = k
				}
			}
			delete(d, oldest)
		}
	}
	for id, h := range set.Jobs {
		if oh, ok := old.Jobs[id]; ok && oh == h {
			continue
		}
		if at, ok := r.dropped[id][h]; ok {
			if back == nil {
				back = map[string]time.Time{}
			}
			back[id] = at
			delete(r.dropped[id], h)
		}
	}
	return back
}

// undecided returns j's slots after from and before to that jc does not
// hold decided (at or before its floor, finished, or open), at most
// maxCatchUp.
func undecided(j *Job, jc coord.JobClaims, from, to time.Time) []time.Time {
	if jc.Floor.After(from) {
		from = jc.Floor
	}
	var out []time.Time
	for s := j.Schedule.Next(from); !s.IsZero() && s.Before(to) && len(out) < maxCatchUp; s = j.Schedule.Next(s) {
		if slices.ContainsFunc(jc.Slots, s.Equal) || slices.ContainsFunc(jc.Open, func(o coord.OpenClaim) bool { return o.Time.Equal(s) }) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// divergedBefore returns j's undecided slots before last (its last
// claim), from when a leader first ran j as hash defines it (or, if
// earlier, since the cluster switched to fp, the set with that
// definition): absent, those a leader without j so defined left, and
// orphans, those that came due as the shard passed from a leader with j
// so defined to one without (see jobSetHistory.orphaned), each with the
// text saying so. It reads no claims unless a leader of those times had j
// otherwise.
func (r *Runner) divergedBefore(h *jobSetHistory, j *Job, hash, fp string, jc coord.JobClaims, last time.Time) (absent []time.Time, why []string, orphans []time.Time, orphansWhy []string) {
	from, ok := h.diverged(j, hash, last)
	// A definition no leader had before the cluster switched to it: its
	// slots count from the switch (attack 22, T4).
	if since, switched := h.switchedTo(j, hash, fp, last); switched && (!ok || since.Before(from)) {
		from, ok = since, true
	}
	if !ok {
		return nil, nil, nil, nil
	}
	absent, why, rest := h.split(j, hash, undecided(j, jc, from, last))
	orphans, orphansWhy = h.orphaned(j, hash, jc, rest, last)
	return absent, why, orphans, orphansWhy
}

// decideDroppedWindow records the slots of j, as hash now defines it again,
// that came due from from to to while this replica (leading t's shard, or
// not) had it otherwise, and that no leader decided.
func (r *Runner) decideDroppedWindow(t *coord.Term, j *Job, hash string, from, to time.Time) {
	claims, err := r.o.Coord.Claims(t.Context(), t)
	if err != nil {
		if !errors.Is(err, coord.ErrNotLeader) && t.Context().Err() == nil {
			r.log.Warn("slots of a job given back its definition not checked: could not read its claims", "job", j.ID, "error", err)
		}
		return
	}
	jc := claims[j.ID]
	if !jc.Claimed() {
		return
	}
	r.recordAbsent(t, r.jobSetHistory(t.Context(), t.Shard), j, hash, jc, from, to)
}

// recordAbsent records j's undecided slots (as hash defines it) from from
// to to, whose leader of the time did not have j so defined, as skipped
// not_in_job_set, and counts them at once.
func (r *Runner) recordAbsent(t *coord.Term, h *jobSetHistory, j *Job, hash string, jc coord.JobClaims, from, to time.Time) {
	absent, why, _ := h.split(j, hash, undecided(j, jc, from, to))
	if len(absent) == 0 {
		return
	}
	done := make(chan struct{})
	close(done)
	r.recordSkipped(t, j, SkipNotInJobSet, absent, why, done)
}

// decideSwitchWindow records the slots of jobs, defined as set (the
// cluster's) defines them and new to this replica, that came due in t's
// shard from when the cluster switched to set until to, this reload:
// this replica led the shard without them meanwhile (attack 31, F1: the
// last replica of a rolling reload, reloaded within job_set_settle of the
// switch, kept its shards and its term, so no catch-up looked at them,
// and they had no run and no record). Those of a leader that had the job
// so defined are not its to record.
func (r *Runner) decideSwitchWindow(t *coord.Term, jobs []*Job, set coord.JobSet, to time.Time) {
	h := r.jobSetHistory(t.Context(), t.Shard)
	var claims map[string]coord.JobClaims
	for _, j := range jobs {
		hash := set.Jobs[j.ID]
		from, ok := h.switchedTo(j, hash, set.Fingerprint, to)
		if !ok {
			continue
		}
		if claims == nil {
			var err error
			if claims, err = r.o.Coord.Claims(t.Context(), t); err != nil {
				if !errors.Is(err, coord.ErrNotLeader) && t.Context().Err() == nil {
					r.log.Warn("slots of jobs this replica got after the cluster switched to them not checked: could not read their claims",
						"jobs", len(jobs), "error", err)
				}
				return
			}
		}
		r.recordAbsent(t, h, j, hash, claims[j.ID], from, to)
	}
}

// decideSkipped decides each of j's slots (ascending) as skipped for
// reason (not_in_job_set, or misfire for orphans): the first
// maxCatchUpRuns each with their record,
// the rest marked, the latest with one record for them. It returns the
// records to write without a mark (their slot was decided below the
// claim key's floor meanwhile, or etcd failed) and how many slots it
// decided (a slot found taken was decided otherwise).
func (r *Runner) decideSkipped(t *coord.Term, j *Job, reason string, slots []time.Time, why []string) (plain []Record, decided int) {
	n := len(slots)
	recs := make([]*Record, n)
	for i, s := range slots {
		switch {
		case i < maxCatchUpRuns:
			rec := r.skipRecord(t, Slot{Job: j, Time: s}, reason, why[i])
			recs[i] = &rec
		case i == n-1:
			first := slots[maxCatchUpRuns]
			rec := r.skipRecord(t, Slot{Job: j, Time: first}, reason, why[i])
			if k := n - maxCatchUpRuns; k > 1 {
				rec.ScheduledUntil, rec.Slots = s.UTC(), k
				rec.Error = itoa(k) + " slots, " + first.UTC().Format(time.RFC3339) + " through " +
					s.UTC().Format(time.RFC3339) + ": " + why[i]
			}
			recs[i] = &rec
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	limit := make(chan struct{}, 256)
	for i, s := range slots {
		limit <- struct{}{}
		wg.Go(func() {
			defer func() { <-limit }()
			var runID string
			var b []byte
			if rec := recs[i]; rec != nil {
				enc, err := json.Marshal(*rec)
				if err != nil {
					errs[i] = err
					return
				}
				runID, b = rec.RunID, enc
			}
			errs[i] = r.o.Coord.SkipSlot(t.Context(), t, j.ID, s, runID, b, r.o.KeepRuns, r.o.MaxRunAge)
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case err == nil:
			decided++
		case errors.Is(err, coord.ErrSlotTaken):
		default:
			decided++
			if recs[i] != nil {
				plain = append(plain, *recs[i])
			}
			if !errors.Is(err, coord.ErrSlotTooOld) {
				r.log.Warn("missed slot not marked decided; the next leader may count it again", "job", j.ID,
					"scheduled_time", slots[i], "error", err)
			}
		}
	}
	return plain, decided
}
