package runner

import (
	"context"
	"encoding/json"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// maxCatchUp bounds how many missed slots of one job a new leader examines.
const maxCatchUp = 10000

// maxSkipRecords bounds the skip records written for one job's misfires;
// beyond it one summary record says how many more were skipped.
const maxSkipRecords = 100

// CatchUp applies each job's misfire policy to the slots that came due
// since the job's last claimed slot, while nobody led. Call it when a term
// starts. Every slot that does not run leaves a skip record.
func (r *Runner) CatchUp(t *coord.Term) {
	now := wallNow()
	history, set := r.jobSetHistory(t.Context()), r.JobSet()
	for _, j := range r.Jobs() {
		if t.Context().Err() != nil {
			return
		}
		// Delivery decides the newest claim, even one a fast clock made
		// early; misfires count from the last claim before now.
		newest, err := r.o.Coord.LastSlot(t.Context(), j.ID, time.Time{})
		if err != nil {
			r.log.Warn("misfire check failed", "job", j.ID, "error", err)
			continue
		}
		if newest.Time.IsZero() {
			continue // a new job: nothing was missed
		}
		r.applyDelivery(t, j, newest)
		lastRec := newest
		if !newest.Time.Before(now) {
			if lastRec, err = r.o.Coord.LastSlot(t.Context(), j.ID, now); err != nil {
				r.log.Warn("misfire check failed", "job", j.ID, "error", err)
				continue
			}
			if !lastRec.Time.IsZero() {
				r.applyDelivery(t, j, lastRec) // it may have been left running too
			}
		}
		last := lastRec.Time
		if last.IsZero() {
			continue
		}
		var missed []time.Time
		for s := j.Schedule.Next(last); !s.IsZero() && s.Before(now) && len(missed) < maxCatchUp; s = j.Schedule.Next(s) {
			missed = append(missed, s)
		}
		if len(missed) == 0 {
			continue
		}
		// Slots the leader of the time did not have the job for were not
		// missed for want of a leader: they say so, and do not run.
		absent, why, rest := history.split(j, set.Jobs[j.ID], missed)
		if len(absent) > 0 {
			r.recordNotInJobSet(t, j, absent, why, len(rest) == 0 || rest[len(rest)-1].Before(absent[len(absent)-1]))
		}
		if len(rest) > 0 {
			r.applyMisfire(t, j, rest, now)
		}
	}
}

// recordNotInJobSet writes skip records for slots the leader of their time
// did not run because its job set lacked the job (or defined it otherwise).
// claimLatest claims the latest as skipped, so that the next leader does
// not count the same slots again.
func (r *Runner) recordNotInJobSet(t *coord.Term, j *Job, slots []time.Time, why []string, claimLatest bool) {
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipNotInJobSet).Add(float64(len(slots)))
	log := r.log.With("job", j.ID)
	log.Warn("slots came due while the leader did not have this job: recorded as skipped, not run",
		"slots", len(slots), "first", slots[0], "last", slots[len(slots)-1], "detail", why[len(why)-1])
	for i, s := range slots {
		rec := r.skipRecord(t, Slot{Job: j, Time: s}, SkipNotInJobSet, why[i])
		if i == maxSkipRecords {
			rec.Error = "and " + itoa(len(slots)-maxSkipRecords) + " more slots skipped: " + why[i]
			r.record(t, rec, log)
			break
		}
		r.record(t, rec, log)
	}
	if claimLatest {
		rec := r.skipRecord(t, Slot{Job: j, Time: slots[len(slots)-1]}, SkipNotInJobSet, why[len(why)-1])
		if b, err := json.Marshal(rec); err == nil {
			_ = r.o.Coord.Claim(context.Background(), t, j.ID, rec.ScheduledTime, b)
		}
	}
}

func (r *Runner) applyMisfire(t *coord.Term, j *Job, missed []time.Time, now time.Time) {
	var run, skip []time.Time
	for i, s := range missed {
		inGrace := now.Sub(s) <= j.Misfire.Grace
		switch {
		case !inGrace || j.Misfire.Policy == MisfireSkip:
			skip = append(skip, s)
		case j.Misfire.Policy == MisfireAll:
			run = append(run, s)
		case i == len(missed)-1: // once: the latest
			run = append(run, s)
		default:
			skip = append(skip, s)
		}
	}
	r.log.Warn("slots came due while no replica led", "job", j.ID, "missed", len(missed),
		"policy", j.Misfire.Policy, "grace", j.Misfire.Grace, "running", len(run), "skipping", len(skip))
	if len(skip) > 0 {
		r.recordMisfires(t, j, skip, len(run) == 0)
	}
	if len(run) == 0 {
		return
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() { // one after the other, in slot order
		defer r.wg.Done()
		for _, s := range run {
			if t.Context().Err() != nil {
				return
			}
			r.runTracked(t, Slot{Job: j, Time: s}, newCorrelationID(), 0, 1)
		}
	}()
}

// recordMisfires writes skip records for skipped slots. When no missed slot
// runs, the latest is also claimed as skipped, so that the next leader does
// not count the same slots again.
func (r *Runner) recordMisfires(t *coord.Term, j *Job, skip []time.Time, claimLatest bool) {
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipMisfire).Add(float64(len(skip)))
	log := r.log.With("job", j.ID)
	for i, s := range skip {
		if i == maxSkipRecords {
			rec := r.skipRecord(t, Slot{Job: j, Time: s}, SkipMisfire, "")
			rec.Error = "and " + itoa(len(skip)-maxSkipRecords) + " more slots skipped: no replica led (misfire policy " + j.Misfire.Policy + ")"
			r.record(t, rec, log)
			break
		}
		r.record(t, r.skipRecord(t, Slot{Job: j, Time: s}, SkipMisfire, "no replica led at the scheduled time (misfire policy "+j.Misfire.Policy+")"), log)
	}
	if claimLatest {
		latest := skip[len(skip)-1]
		rec := r.skipRecord(t, Slot{Job: j, Time: latest}, SkipMisfire, "")
		if b, err := json.Marshal(rec); err == nil {
			_ = r.o.Coord.Claim(context.Background(), t, j.ID, latest, b)
		}
	}
}

// applyDelivery handles the job's last slot if a previous leader claimed it
// and never recorded its end (it died or lost its lease mid-run).
func (r *Runner) applyDelivery(t *coord.Term, j *Job, last coord.SlotRecord) {
	var rec Record
	if json.Unmarshal(last.Value, &rec) != nil || rec.State != "running" || rec.FencingToken == t.Token {
		return
	}
	s := Slot{Job: j, Time: last.Time}
	log := r.log.With("job", j.ID, "correlation_id", rec.CorrelationID)
	if j.Delivery == DeliveryAtLeastOnce {
		log.Warn("slot left unfinished by the previous leader: running it again (at-least-once)",
			"scheduled_time", last.Time, "previous_node", rec.Node, "previous_token", rec.FencingToken)
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return
		}
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			r.runTracked(t, s, rec.CorrelationID, last.Revision, rec.Attempt+1)
		}()
		return
	}
	why := "claimed by " + rec.Node + " (fencing token " + itoa(int(rec.FencingToken)) + "), which lost leadership before finishing (delivery at-most-once)"
	log.Warn("slot left unfinished by the previous leader: recorded as lost (at-most-once)", "scheduled_time", last.Time, "previous_node", rec.Node)
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipLockLost).Inc()
	lost := r.skipRecord(t, s, SkipLockLost, why)
	lost.CorrelationID = rec.CorrelationID
	r.record(t, lost, log)
	if b, err := json.Marshal(lost); err == nil {
		_ = r.o.Coord.Reclaim(context.Background(), t, j.ID, s.Time, last.Revision, b)
	}
}
