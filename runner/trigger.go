package runner

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
)

// Manual triggers. Any replica stores a request (Control.Trigger); the
// leader decides each one exactly once, in one fenced transaction with the
// request's removal or replacement (coord/triggers.go):
//
//   - run it: the request becomes the run's claim, and is removed with the
//     run's last record;
//   - skip it, with a skip record that carries the caller's correlation ID,
//     the trigger ID and manual: true: reason overlap (the job is busy),
//     expired (not decided within Options.TriggerExpiry: no leader, or a
//     job this leader does not have), or lock_lost (a previous leader ran
//     it and died before recording its end, under delivery at-most-once;
//     at-least-once runs it again).
//
// A manual trigger runs even while its job is paused: it is an operator's
// explicit instruction.

// TriggerRequest is a manual trigger request as stored in etcd.
type TriggerRequest struct {
	CorrelationID string    `json:"correlation_id"`
	RequestedAt   time.Time `json:"requested_at"`
	By            string    `json:"by"`
	// Claim is set once the leader decided to run the request: the run's
	// claim (state running, run ID, node, fencing token, attempt).
	Claim *Record `json:"claim,omitempty"`
}

// trigger is a request this replica decides or runs.
type trigger struct {
	coord.Trigger
	req    TriggerRequest
	first  int   // the first attempt's number: a run again continues the count
	reruns int   // of the attempts before first, those that ran a cut one again (Record.Reruns): not retries
	rev    int64 // the claim's revision, once decided to run
	// lost, on a request run again (delivery at-least-once), is the claim
	// of the attempt an older term left running: recorded with the claim
	// that runs it again (recordWithTakeover).
	lost *Record
}

// HandleTriggers takes the stored trigger requests (all of them, after
// every change) and, if this replica leads, decides the undecided ones.
func (r *Runner) HandleTriggers(stored []coord.Trigger) {
	ids := make(map[string]bool, len(stored))
	for _, tr := range stored {
		ids[tr.ID] = true
	}
	if r.o.Metrics != nil {
		r.o.Metrics.TriggersStored.Set(float64(len(stored)))
	}
	r.mu.Lock()
	r.pending = stored
	// Forget requests that are gone from etcd: decided and recorded.
	for id := range r.triggers {
		if !ids[id] {
			delete(r.triggers, id)
		}
	}
	for id := range r.triggerWaits {
		if !ids[id] {
			delete(r.triggerWaits, id)
		}
	}
	r.mu.Unlock()
	r.decideTriggers()
}

// decideTriggers decides, if this replica leads, every stored request that
// no decision of this term has taken yet, oldest first (trigger IDs sort by
// time), so that of a burst on a busy job the first one runs.
func (r *Runner) decideTriggers() {
	if r.o.Coord == nil { // a runner for the API alone, in tests
		return
	}
	if len(r.o.Coord.Terms()) == 0 {
		return
	}
	r.mu.Lock()
	stored := slices.SortedFunc(slices.Values(r.pending), func(a, b coord.Trigger) int { return strings.Compare(a.ID, b.ID) })
	r.mu.Unlock()
	now := wallNow()
	var next time.Time // the earliest expiry of a request left waiting
	for _, st := range stored {
		// The leader of the job's shard decides, unless it is handing
		// the shard over (the next leader will).
		t := r.o.Coord.TermOf(r.Shard(st.Job))
		if t == nil || t.Draining() {
			continue
		}
		tr := &trigger{Trigger: st, first: 1}
		if err := json.Unmarshal(st.Body, &tr.req); err != nil {
			r.log.Warn("trigger request unreadable: recording it as expired", "job", st.Job, "trigger_id", st.ID, "error", err)
		}
		j, known := r.Job(st.Job)
		if !known {
			j = &Job{ID: st.Job}
		}
		expires := tr.req.RequestedAt.Add(r.o.TriggerExpiry)
		log := r.log.With("job", st.Job, "correlation_id", tr.req.CorrelationID, "trigger_id", st.ID)
		switch claim := tr.req.Claim; {
		case claim != nil && claim.FencingToken == t.Token:
			// This term runs it, or ran it and is recording its end.
		case claim != nil:
			if r.track(t, tr) {
				r.deliverTrigger(t, j, known, tr, log)
			}
		case !now.Before(expires):
			if r.track(t, tr) {
				why := "not decided within " + r.o.TriggerExpiry.String() + " of the request (triggers.expire_after): "
				if known {
					why += "no replica led, or etcd did not answer, meanwhile"
				} else {
					why += "job not in the leader's job set"
				}
				r.skipTrigger(t, Slot{Job: j, Time: now.UTC().Truncate(time.Millisecond)}, tr, SkipExpired, why)
			}
		case !known:
			r.mu.Lock()
			logged := r.triggerWaits[st.ID]
			r.triggerWaits[st.ID] = true
			r.mu.Unlock()
			if !logged {
				log.Warn("manual trigger waits: job not in this leader's job set; it expires unless a config reload adds the job",
					"expires", expires.UTC())
			}
			if next.IsZero() || expires.Before(next) {
				next = expires
			}
		default:
			if r.track(t, tr) {
				log.Info("manual trigger", "by", tr.req.By)
				r.start(t, Slot{Job: j, Time: now.UTC().Truncate(time.Millisecond)}, tr.req.CorrelationID, tr)
			}
		}
	}
	if !next.IsZero() {
		r.wakeTriggersAt(next)
	}
}

// track marks a request as taken by t's decisions; false if it was already.
func (r *Runner) track(t *coord.Term, tr *trigger) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.triggers[tr.ID] == t.Token {
		return false
	}
	r.triggers[tr.ID] = t.Token
	return true
}

// untrack gives a request whose decision could not be written back to the
// next pass, in a second.
func (r *Runner) untrack(t *coord.Term, tr *trigger) {
	r.mu.Lock()
	if r.triggers[tr.ID] == t.Token {
		delete(r.triggers, tr.ID)
	}
	r.mu.Unlock()
	r.wakeTriggersAt(wallNow().Add(time.Second))
}

// redecideTrigger decides again a request whose decision failed because
// the request changed after the copy it was made from was read. Only the
// term that leads the job's shard decides a request, so that copy was
// stale: a new term's first copy, from the watch, can predate the last
// writes of the term before it (a retry's due time, written as it handed
// the shard over). Decided from that copy, the request was left undecided
// for good (the term had taken it). It is read again, and decided from
// what is stored.
func (r *Runner) redecideTrigger(t *coord.Term, tr *trigger, log *slog.Logger) {
	log.Info("manual trigger changed since it was read: deciding it again from what is stored", "trigger_id", tr.ID)
	r.wg.Add(1) // the caller's count holds the group above zero
	go func() {
		defer r.wg.Done()
		cur, ok, err := r.o.Coord.GetTrigger(t.Context(), tr.Job, tr.ID)
		if err != nil {
			r.untrack(t, tr) // the next pass, in a second, tries again
			return
		}
		r.mu.Lock()
		i := slices.IndexFunc(r.pending, func(p coord.Trigger) bool { return p.Job == tr.Job && p.ID == tr.ID })
		if i >= 0 && (!ok || r.pending[i].Revision < cur.Revision) {
			pending := slices.Clone(r.pending) // the watch's slice is not ours to change
			if ok {
				pending[i] = cur
			} else {
				pending = slices.Delete(pending, i, i+1)
			}
			r.pending = pending
		}
		r.mu.Unlock()
		r.untrack(t, tr)
		r.decideTriggers()
	}()
}

// wakeTriggersAt makes decideTriggers run again at at, unless a wake-up
// is due before.
func (r *Runner) wakeTriggersAt(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || (r.triggerTimer != nil && !r.triggerWake.After(at)) {
		return
	}
	if r.triggerTimer != nil {
		r.triggerTimer.Stop()
	}
	r.triggerWake = at
	r.triggerTimer = time.AfterFunc(time.Until(at)+10*time.Millisecond, func() {
		r.mu.Lock()
		r.triggerTimer = nil
		r.mu.Unlock()
		r.decideTriggers()
	})
}

// deliverTrigger decides a request that a previous term decided to run and
// never recorded the end of, by the job's delivery policy.
func (r *Runner) deliverTrigger(t *coord.Term, j *Job, known bool, tr *trigger, log *slog.Logger) {
	claim := tr.req.Claim
	if known && j.Delivery == DeliveryAtLeastOnce {
		if claim.RetryAt.IsZero() {
			log.Warn("manual trigger left unfinished by the previous leader: running it again (at-least-once)",
				"previous_node", claim.Node, "previous_token", claim.FencingToken)
		} else {
			log.Warn("manual trigger's retry left by the previous leader: running it when its backoff ends (at-least-once)",
				"attempt", claim.Attempt+1, "retry_at", claim.RetryAt, "previous_node", claim.Node, "previous_token", claim.FencingToken)
		}
		tr.first, tr.reruns = claim.takenOver()
		lost := *claim
		lost.Manual, lost.TriggerID = true, tr.ID
		tr.lost = &lost
		r.start(t, Slot{Job: j, Time: claim.ScheduledTime}, claim.CorrelationID, tr)
		return
	}
	why := "run by " + claim.Node + " (fencing token " + strconv.FormatInt(claim.FencingToken, 10) +
		"), which lost leadership before recording its end (delivery at-most-once)"
	if !known {
		why += "; job not in the leader's job set"
	}
	if !r.addWork() {
		return
	}
	go func() { // the claim's attempt is looked up: not in the decisions' loop
		defer r.wg.Done()
		attempt := 0
		if retry, _ := r.retryLost(t, j, *claim); retry { // as for a slot (applyDelivery)
			attempt, why = claim.Attempt+1, lostRetryWhy(*claim)
			log.Warn("manual trigger's retry left by the previous leader: recorded as lost, not run (at-most-once)",
				"attempt", attempt, "previous_node", claim.Node)
		} else {
			log.Warn("manual trigger left unfinished by the previous leader: recorded as lost (at-most-once)", "previous_node", claim.Node)
		}
		r.skipTriggerAttempt(t, Slot{Job: j, Time: claim.ScheduledTime}, tr, SkipLockLost, why, attempt)
	}()
}

// awaitTriggerRetry waits until the retry a previous leader left of a
// manual trigger is due (the claim's Record.RetryAt), as awaitRetry does a
// slot's, and reports whether it is to run: on one leader it would have
// waited out its backoff too (it ran at the takeover). A paused job's
// retry does not start (a manual trigger of a paused job runs one
// attempt), nor does one whose job a reload changed or removed: each is
// recorded with the reason and the request removed. When this term stops
// firing or ends, the request is left as it is, due time and all, to the
// shard's next leader.
func (r *Runner) awaitTriggerRetry(ctx context.Context, t *coord.Term, s Slot, tr *trigger, sr *slotRun) bool {
	var cause error
	if paused, _ := r.JobState(s.Job.ID); paused {
		cause = stopPausedManual
	} else if wait := tr.lost.RetryAt.Sub(wallNow()); wait > 0 {
		sr.setPhase(phaseRetry)
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-t.FiringStopped():
			return false
		case <-ctx.Done():
			cause = context.Cause(ctx)
		case <-sr.retries.Done():
			cause = context.Cause(sr.retries)
		}
	} else {
		return true
	}
	var stop *retryStop
	if t.Draining() || !errors.As(cause, &stop) || stop == stopStopping {
		return false // the next leader decides the request
	}
	if stop == stopPaused {
		stop = stopPausedManual
	}
	r.skipTrigger(t, s, tr, stop.reason, "retry of attempt "+itoa(tr.lost.Attempt)+" left by "+tr.lost.Node+
		" not started: "+stop.detail)
	return false
}

// skipTrigger decides not to run a request: its skip record and its
// removal are one fenced write.
func (r *Runner) skipTrigger(t *coord.Term, s Slot, tr *trigger, reason, why string) {
	r.skipTriggerAttempt(t, s, tr, reason, why, 0)
}

// skipTriggerAttempt is skipTrigger for a record that names the attempt
// not run (0: none).
func (r *Runner) skipTriggerAttempt(t *coord.Term, s Slot, tr *trigger, reason, why string, attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.skipTriggerLocked(t, s, tr, reason, why, attempt)
	}
}

// skipTriggerLocked is skipTriggerAttempt with r.mu held.
func (r *Runner) skipTriggerLocked(t *coord.Term, s Slot, tr *trigger, reason, why string, attempt int) {
	log := r.log.With("job", s.Job.ID, "correlation_id", tr.req.CorrelationID, "trigger_id", tr.ID)
	rec := r.skipRecord(t, s, reason, why)
	rec.CorrelationID, rec.Manual, rec.TriggerID, rec.Attempt = tr.req.CorrelationID, true, tr.ID, attempt
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.write(t, rec, log, func(b []byte) error {
			return r.o.Coord.SkipTrigger(context.Background(), t, tr.Trigger, rec.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
		})
		switch {
		case err == nil:
			r.o.Metrics.JobSkipped.WithLabelValues(s.Job.ID, reason).Inc()
			log.Warn("manual trigger skipped", "reason", reason, "detail", why)
		case errors.Is(err, coord.ErrTriggerDecided) && t.Context().Err() == nil:
			r.redecideTrigger(t, tr, log) // only this term decides it: the copy read was stale
		case t.Context().Err() == nil:
			r.untrack(t, tr)
		}
	}()
}

// claimTrigger decides to run a request: the request becomes the run's
// claim, rec, written with lost, if not nil: the record of the attempt a
// run again takes over (takenOverRecord). A try after a failed one checks
// whether the failed one landed after all.
func (r *Runner) claimTrigger(ctx context.Context, t *coord.Term, tr *trigger, rec Record, lost *Record, try int) error {
	req := tr.req
	req.Claim = &rec
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var records []coord.StoredRun
	if lost != nil {
		lb, err := encodeRecord(lost)
		if err != nil {
			return err
		}
		records = append(records, coord.StoredRun{ID: lost.RunID, Value: lb})
	}
	rev, err := r.o.Coord.RunTrigger(ctx, t, tr.Trigger, b, records...)
	if errors.Is(err, coord.ErrTriggerDecided) && try > 1 {
		if cur, ok, gerr := r.o.Coord.GetTrigger(ctx, tr.Job, tr.ID); gerr == nil && ok {
			var stored TriggerRequest
			if json.Unmarshal(cur.Body, &stored) == nil && stored.Claim != nil && stored.Claim.RunID == rec.RunID {
				rev, err = cur.Revision, nil // our earlier try landed
			}
		}
	}
	if err == nil {
		tr.rev = rev
	}
	return err
}

// lateJitter is how long a slot with start delay d still waits now: its
// delay counts from its scheduled time, so a slot that fires on time waits
// about d, and a late one (a catch-up's run, a slot held back by a
// hand-over) whose delay has passed starts at once (attack 17, K8: it
// waited d again from the takeover, past its next slot, which was then
// skipped as an overlap). Never more than d: a wall clock stepped back
// does not stretch it.
func lateJitter(d time.Duration, slot time.Time) time.Duration {
	if d <= 0 {
		return 0
	}
	return min(d, time.Until(slot.Add(d)))
}

// jitterFor is the job's deterministic start delay for a slot.
func jitterFor(j *Job, slot time.Time) time.Duration {
	if j.Jitter <= 0 {
		return 0
	}
	return schedule.Jitter(j.ID, slot, j.Jitter)
}

func newCorrelationID() string { return observability.NewCorrelationID() }

func itoa(n int) string { return strconv.Itoa(n) }
