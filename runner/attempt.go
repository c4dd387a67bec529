package runner

// Attempts: a claimed slot's runs, one after another under its retry
// policy, each a plugin call with its span, timeout and classification.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/proctree"
)

// retryStop says why a slot's pending retries were stopped.
type retryStop struct{ reason, detail string }

func (e *retryStop) Error() string { return e.detail }

var (
	stopPaused = &retryStop{SkipPaused, "the job was paused"}
	// A manual trigger runs a paused job, one attempt: no retry of a
	// paused job starts, whoever started its run.
	stopPausedManual = &retryStop{SkipPaused, "the job is paused (a manual trigger of a paused job runs one attempt)"}
	stopRemoved      = &retryStop{SkipReloaded, "the job was removed by a config reload"}
	stopChanged      = &retryStop{SkipReloaded, "the job was changed by a config reload"}
	stopStopping     = &retryStop{SkipStopping, "the runner is stopping"}
	stopHandingOver  = &retryStop{SkipStopping, "this replica stopped leading the job's shard (a stop, or a hand-over to another replica)"}
)

// slotRun is a slot being run: its attempts and the wait between them.
type slotRun struct {
	cancel context.CancelCauseFunc // ends the running attempt and the retries
	// claimed, on a slot the scheduler fired, counts its claim in
	// (startGate); nil on other runs.
	claimed func()
	// retries ends (with a *retryStop cause) when no further attempt may
	// start; a running attempt goes on.
	retries   context.Context
	stopRetry context.CancelCauseFunc

	// attempt is held (a value in it) while an attempt runs: a slot that
	// replaces this one waits to take it, then knows no attempt of this
	// slot runs, nor will (its context has ended).
	attempt chan struct{}
	mu      sync.Mutex
	left    string // ProcessesLeft of its last attempt
	runID   string // of its last attempt

	// phase says what the slot's run does while no attempt runs, for the
	// overlap skips it causes (attack 17, K7: a 5 ms job whose record
	// waited on a stalled etcd made its next slot "still running").
	phase atomic.Uint32

	// late, on a catch-up's run of slots a hand-over held back, takes the
	// slots the scheduler fires while they run (guarded by Runner.mu).
	late *lateQueue
}

// lateQueue holds the slots a job's scheduler fired while the job's slots
// held back by a hand-over ran late, one after the other (attack 20, Q2:
// they were skipped as overlaps, though on one leader the job never
// overlapped). They run after the held-back ones, each unless the late
// run of an earlier slot, taken from its own time, would have covered it,
// as on one leader.
type lateQueue struct {
	slots  []Slot
	closed bool // the run is ending: a slot fired now is decided as usual
}

// Phases of a slot's run (slotRun.phase): what an overlap skip it causes
// says of it. An index, so that a run's path does not allocate for it.
const (
	phaseRunning uint32 = iota
	phaseJitter
	phaseClaiming
	phaseRetry
	phaseRecord
)

var phaseDetails = [...]string{
	phaseRunning:  "previous run still running",
	phaseJitter:   "previous slot not finished: waiting out its jitter",
	phaseClaiming: "previous slot not finished: claiming its slot",
	phaseRetry:    "previous slot not finished: waiting to retry",
	phaseRecord:   "previous slot not finished: its task has ended; its record is being written (etcd slow or refusing writes?)",
}

func (sr *slotRun) setPhase(p uint32) { sr.phase.Store(p) }

// overlapDetail is the detail of a skip record for a slot that this one
// overlaps under overlap: forbid.
func (sr *slotRun) overlapDetail() string { return phaseDetails[sr.phase.Load()] }

// attemptEnded notes the end of one of the slot's attempts.
func (sr *slotRun) attemptEnded(rec Record) {
	sr.mu.Lock()
	sr.left, sr.runID = rec.ProcessesLeft, rec.RunID
	sr.mu.Unlock()
	<-sr.attempt
}

// awaitReplaced waits, up to limit (or until ctx ends), until no attempt of
// the replaced slots runs. It returns why the replacing slot must not run
// (a replaced attempt did not end in time, or its processes could not be
// confirmed dead), or nil.
func awaitReplaced(ctx context.Context, replaced []*slotRun, limit time.Duration) *retryStop {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for _, sr := range replaced {
		select {
		case sr.attempt <- struct{}{}:
			<-sr.attempt
		case <-timer.C:
			sr.mu.Lock()
			id := sr.runID
			sr.mu.Unlock()
			return &retryStop{SkipTreeAlive, fmt.Sprintf("the replaced run (last run ID %s) did not end within %s of being cancelled", orNone(id), limit)}
		case <-ctx.Done():
			return nil
		}
		sr.mu.Lock()
		left, id := sr.left, sr.runID
		sr.mu.Unlock()
		if left != "" {
			return &retryStop{SkipTreeAlive, fmt.Sprintf("processes of the replaced run %s could not be confirmed dead: %s", id, left)}
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none yet"
	}
	return s
}

// percent is a task's reported progress kept within [0, 100], as the
// protocol says it is: NaN reads as 0 (attack 19, P2: NaN and ±Inf made the
// log line's percent an error string, and 250 was recorded "250%").
func percent(p float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0:
		return 0
	case p > 100:
		return 100
	}
	return p
}

// progressLogEvery is how often a run's progress reports are logged at
// most.
const progressLogEvery = time.Second

// waitJitter waits out a slot's jitter d, and reports whether the slot is
// to run. A pause of the job, or a reload that changes it, meanwhile ends
// the wait: the slot, not started, is recorded skipped (`paused`,
// `reloaded`) as a pending retry would be (attack 20, Q3 and Q4: it ran
// after the pause, or with the replaced definition). A removed job's, a
// replaced slot's or an ended term's slot ends with ctx, unrecorded as
// before. When the term stops firing (a hand-over, a stop), a slot not
// claimed yet (unclaimed) is given up and held back for the shard's next
// leader (coord.Term.HoldBack), which runs it late, its jitter counted
// from the slot: the drain waits for runs, not for jitter (attack 20,
// Q5). A slot claimed already (a late run of a catch-up) waits on, for the
// drain.
func (r *Runner) waitJitter(ctx context.Context, t *coord.Term, s Slot, sr *slotRun, d time.Duration, unclaimed bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	stopped := sr.retries.Done()
	var handing <-chan struct{}
	if unclaimed {
		handing = t.FiringStopped()
	}
	for {
		select {
		case <-timer.C:
			return true
		case <-handing:
			t.HoldBack(s.Time)
			return false
		case <-ctx.Done():
			if unclaimed && t.Draining() {
				t.HoldBack(s.Time)
			}
			return false
		case <-stopped:
			stopped = nil
			var stop *retryStop
			if !errors.As(context.Cause(sr.retries), &stop) || stop != stopPaused && stop != stopChanged {
				continue
			}
			r.mu.Lock()
			if !r.stopped {
				r.skipAsync(t, s, stop.reason, stop.detail+" while this slot waited out its jitter")
			}
			r.mu.Unlock()
			return false
		}
	}
}

// nextLeaderDecides says what the shard's next leader does with a slot (or
// trigger request) whose claim failed because the term ended, and under
// which correlation ID, for the log line that leaves it to it.
func nextLeaderDecides(tr *trigger, how claimHow) string {
	switch {
	case tr != nil:
		return "the trigger request stays pending; the next leader runs it, with the same correlation ID"
	case how.prev != nil:
		return "its claim stays open; the next leader decides it by the delivery policy, with the same correlation ID"
	}
	return "its catch-up runs or skips the slot under the misfire policy, with a correlation ID of its own: find it by job and scheduled_time"
}

// runSlot claims a slot (or decides to run a trigger request) and runs its
// attempts.
func (r *Runner) runSlot(ctx context.Context, t *coord.Term, s Slot, correlationID string, tr *trigger, sr *slotRun) {
	first := 1
	if tr != nil {
		first = tr.first
		if tr.lost != nil && !tr.lost.RetryAt.IsZero() && !r.awaitTriggerRetry(ctx, t, s, tr, sr) {
			return
		}
	}
	r.runSlotFrom(ctx, t, s, correlationID, tr, claimHow{}, first, sr)
}

// runSlotFrom runs a slot's attempts from attempt first. The slot's retry
// budget counts from attempt 1, whichever leader ran the attempts before
// first: of those, only the re-runs of cut attempts (how.reruns, or the
// trigger's) are not retries, so the last attempt it may start is
// retries.max + 1 + reruns (attack 25, W10: a leader that took a retry
// over ran retries.max more after it).
func (r *Runner) runSlotFrom(ctx context.Context, t *coord.Term, s Slot, correlationID string, tr *trigger, how claimHow, first int, sr *slotRun) {
	job := s.Job
	if d := lateJitter(jitterFor(job, s.Time), s.Time); d > 0 && tr == nil {
		sr.setPhase(phaseJitter)
		if !r.waitJitter(ctx, t, s, sr, d, how.claimed == nil && how.prev == nil) {
			if how.lost != nil { // no takeover to write it with
				r.recordTakenOver(t, s, *how.lost)
			}
			return
		}
	}
	base := Record{Job: job.ID, ScheduledTime: s.Time.UTC(), CorrelationID: correlationID, Node: r.o.Node,
		FencingToken: t.Token, Manual: tr != nil}
	if tr != nil {
		base.TriggerID = tr.ID
	}
	// Made on first use: most slots log nothing with it.
	log := slog.New(newLazyHandler(r.log.Handler(), slog.String("correlation_id", correlationID), slog.String("job", job.ID)))

	sr.setPhase(phaseClaiming)
	claim := base
	claim.State, claim.Start, claim.RunID, claim.Attempt = "running", wallNow().UTC(), observability.NewRunID(), first
	claim.Reruns = how.reruns
	if tr != nil {
		claim.Reruns = tr.reruns
	}
	last := job.Retries.Max + 1 + claim.Reruns // the last attempt that may start
	if how.claimed != nil {
		claim.RunID = how.claimed.RunID
	}
	// The first attempt's span starts before the claim, so the claim is
	// its child; a slot whose claim fails leaves that span, in error.
	if tr != nil && tr.lost != nil {
		// The attempt the request's claim names is recorded with the
		// claim that runs it again: a claim from a stale copy of the
		// request fails, and writes nothing.
		how.lost = r.recordWithTakeover(t, s, *tr.lost, first)
	}
	firstAttempt := &attemptRun{slot: s, term: t, runID: claim.RunID, correlationID: correlationID, number: first}
	spanCtx, firstSpan := r.startRunSpan(ctx, firstAttempt)
	var err error
	switch {
	case how.claimed != nil: // claimed already
		r.claimedSpan(spanCtx, t, s, how.claimed)
	case how.prev != nil:
		err = r.reclaim(spanCtx, t, s, how.prev, &claim, how.lost)
	default:
		err = r.claim(spanCtx, t, s, claim, tr, how.lost)
	}
	if err != nil {
		r.claimFailed(t, s, tr, how, firstSpan, err, log)
		return
	}

	if sr.claimed != nil {
		sr.claimed()
	}
	held := claim // the slot's claim as stored
	if how.claimed != nil {
		held = *how.claimed
	}
	var final Record
	var prev trace.SpanContext
	cur := firstAttempt
	for attempt := first; ; attempt++ {
		sr.attempt <- struct{}{} // free unless a replacing slot is looking
		sr.setPhase(phaseRunning)
		if attempt == first {
			final, prev = r.execute(spanCtx, firstSpan, firstAttempt, base)
		} else {
			cur = &attemptRun{slot: s, term: t, runID: observability.NewRunID(), correlationID: correlationID, number: attempt, prev: prev}
			actx, span := r.startRunSpan(ctx, cur)
			if tr != nil {
				r.reclaimTrigger(actx, t, tr, claim, cur, log)
			} else {
				held = r.reclaimSlot(actx, t, s, held, cur, log)
			}
			final, prev = r.execute(actx, span, cur, base)
		}
		sr.attemptEnded(final)
		sr.setPhase(phaseRecord)
		// Invalid params are a configuration problem: every attempt would
		// fail the same (attack 19, P5: they were retried).
		retry := final.State == observability.OutcomeFailure && !invalidParams(final) || final.State == observability.OutcomeTimeout ||
			final.State == observability.OutcomeCrashed
		if !retry || attempt >= last || ctx.Err() != nil || t.Context().Err() != nil {
			break
		}
		r.record(t, final, log) // this attempt's; the last one is recorded with the slot's result
		wait := retryPolicy(job.Retries).Delay(attempt)
		due := wallNow().Add(wait) // the next attempt's time, should it be left to the next leader
		if stop := r.retryStopped(s, tr, sr, final); stop != nil {
			if leavesRetry(job, stop) {
				r.leaveOpen(t, s, tr, held, final, log, due)
				return
			}
			final = r.retrySkipped(t, final, attempt+1, stop, log)
			break
		}
		log.Info("retrying", "attempt", attempt+1, "after", wait.Round(time.Millisecond), "previous_outcome", final.State)
		sr.setPhase(phaseRetry)
		if job.Delivery == DeliveryAtLeastOnce {
			held = r.noteRetryDue(t, s, tr, held, final, due, log)
		}
		sleepUntilStopped(ctx, sr.retries, t.FiringStopped(), time.Until(due))
		if stop := r.retryStopped(s, tr, sr, final); stop != nil {
			if leavesRetry(job, stop) {
				r.leaveOpen(t, s, tr, held, final, log, due)
				return
			}
			final = r.retrySkipped(t, final, attempt+1, stop, log)
			break
		}
		if t.Draining() && ctx.Err() == nil {
			// The term stops firing (a hand-over, a stop): the retry
			// does not start here, and the drain does not wait out its
			// backoff (attack 20, Q7: a join hand-over waited its whole
			// drain timeout, then closed the slot with the failed
			// attempt's record, its retries dropped in silence).
			// at-least-once leaves the slot to the shard's next leader,
			// which runs the next attempt when its backoff ends (S3: it
			// ran it at the takeover); at-most-once records why.
			if job.Delivery == DeliveryAtLeastOnce {
				r.leaveOpen(t, s, tr, held, final, log, due)
				return
			}
			final = r.retrySkipped(t, final, attempt+1, stopHandingOver, log)
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	if r.leftForNextLeader(ctx, job, final) || cur.diedInDrain {
		r.leaveOpen(t, s, tr, held, final, log, time.Time{})
		return
	}
	var succeeded time.Time // kept in the claim key: the next leader's pacer_job_last_success_timestamp_seconds
	if final.State == observability.OutcomeSuccess {
		succeeded = final.End
	}
	if tr != nil { // the request's claim ends with the run's last record
		r.writeFor(t, final, log, 0, func(b []byte) error {
			return r.o.Coord.FinishTrigger(context.Background(), t, job.ID, tr.ID, tr.rev, final.RunID, b, succeeded, r.o.KeepRuns, r.o.MaxRunAge)
		})
		return
	}
	r.awaitClaims(job)
	// Retried while the term lives: until it lands the slot's claim is
	// open, and a later leader would take the slot for one left running.
	r.writeFor(t, final, log, 0, func(b []byte) error {
		return r.o.Coord.FinishSlot(context.Background(), t, job.ID, s.Time, final.RunID, b, succeeded, r.o.KeepRuns, r.o.MaxRunAge)
	})
}

// claimFailed ends the first attempt's span of a slot (or trigger
// request) whose claim failed with err, and says why: a stale copy of a
// request is decided again; a slot another replica (or this one's
// catch-up) claimed is its; one older than the claims kept is recorded
// skipped; otherwise the term ended before the claim landed, and the
// shard's next leader decides the slot.
func (r *Runner) claimFailed(t *coord.Term, s Slot, tr *trigger, how claimHow, firstSpan trace.Span, err error, log *slog.Logger) {
	if tr != nil && errors.Is(err, coord.ErrTriggerDecided) {
		// The request changed since the copy this decision read: only
		// this term decides it now, so the copy was stale.
		firstSpan.SetStatus(codes.Error, "trigger request changed since it was read: decided again from the newer copy")
		firstSpan.End()
		r.redecideTrigger(t, tr, log)
		return
	}
	reason := SkipLockLost
	switch {
	case errors.Is(err, coord.ErrSlotTaken), errors.Is(err, coord.ErrTriggerDecided):
		reason = SkipClaimedElsewhere
	case errors.Is(err, coord.ErrSlotTooOld):
		reason = SkipTooOld
	}
	firstSpan.SetAttributes(attribute.String("pacer.skip_reason", reason))
	status := "slot not claimed: " + err.Error()
	if reason == SkipLockLost {
		// The term ended before the claim landed: the slot is not
		// decided here, and this span is not its last word (attack
		// 25, W7).
		firstSpan.SetAttributes(attribute.Bool("pacer.left_to_next_leader", true))
		status += "; left to the shard's next leader"
	}
	firstSpan.SetStatus(codes.Error, status)
	firstSpan.End()
	r.o.Metrics.JobSkipped.WithLabelValues(s.Job.ID, reason).Inc()
	switch reason {
	case SkipClaimedElsewhere:
		// Another replica (or this one, in a race with misfire
		// catch-up) has the slot: nothing to record, it will.
		log.Debug("slot already claimed", "scheduled_time", s.Time)
	case SkipTooOld:
		// Not silent: a record says why, though the slot may also
		// have a record of the run it had long ago.
		log.Warn("slot not run: older than the claims the cluster keeps, so it may have run; is a replica's clock wrong?",
			"scheduled_time", s.Time, "reason", reason, "error", err)
		r.record(t, r.skipRecord(t, s, reason, err.Error()), log)
	default:
		log.Warn("slot not run: claim failed; left to the shard's next leader", "scheduled_time", s.Time, "reason", reason,
			"error", err, "next_leader", nextLeaderDecides(tr, how))
	}
}

// leftForNextLeader reports whether a slot's run, whose last attempt
// ended as final, was cut off by this replica's going (Stop's drain
// timeout, or the end of its term: a hand-over's drain timeout, or lost
// leadership) under delivery at-least-once: then the slot is not finished
// here, but left to the shard's next leader, which runs it again as the
// next attempt (its catch-up takes over open claims, applyDelivery; a
// trigger request's, deliverTrigger). A run ended on purpose (replaced, its
// job removed) or by its own outcome is finished as before, and so is
// every run of an at-most-once job: its cut attempt is its last.
func (r *Runner) leftForNextLeader(ctx context.Context, j *Job, final Record) bool {
	if j.Delivery != DeliveryAtLeastOnce || final.State != observability.OutcomeCanceled || ctx.Err() == nil {
		return false
	}
	return r.stopCtx.Err() != nil || errors.Is(context.Cause(ctx), errLeadershipLost)
}

// reclaimSlot makes a slot's open claim name the attempt a that starts,
// as reclaimTrigger does for a manual trigger's: a leader that takes the
// slot over after this replica died, or lost its lease, mid-attempt runs
// it as the attempt after a, not as one that ran already. It returns the
// claim as stored; when the write fails (the term is over, etcd refused),
// that is still held, and the next leader may repeat a's number.
func (r *Runner) reclaimSlot(ctx context.Context, t *coord.Term, s Slot, held Record, a *attemptRun, log *slog.Logger) Record {
	next := held
	next.RunID, next.Attempt, next.Start, next.RetryAt = a.runID, a.number, wallNow().UTC(), time.Time{}
	stored, err := r.rewriteClaim(ctx, t, s, held, next)
	if err != nil {
		log.Warn("slot's claim not updated to the attempt that runs: a leader that takes the slot over may repeat the attempt's number",
			"scheduled_time", s.Time, "attempt", a.number, "error", err)
	}
	return stored
}

// rewriteClaim replaces a slot's open claim, held as stored, by next, if
// it is still held. It returns the claim as stored: next, or held if the
// write failed.
func (r *Runner) rewriteClaim(ctx context.Context, t *coord.Term, s Slot, held, next Record) (Record, error) {
	prev, err := encodeRecord(&held)
	var b []byte
	if err == nil {
		b, err = encodeRecord(&next)
	}
	if err == nil {
		err = r.o.Coord.Reclaim(ctx, t, s.Job.ID, s.Time, prev, b)
	}
	if err != nil {
		return held, err
	}
	return next, nil
}

// leaveOpen records a slot's cut attempt (final) without closing its claim
// (a trigger request's claim stays too), so that the history shows the
// attempt, and the shard's next leader finds the claim open and runs the
// slot again, as the next attempt, with the same correlation ID. A slot's
// claim names the attempt that runs (reclaimSlot): if that write failed,
// the claim is made to name the cut attempt here, so that the next
// leader's attempt comes after it. A write refused because the term is
// over changes nothing: the claim is open either way.
// A non-zero retryAt says that final ended as a failure whose retry is
// left, not as a cut attempt, and when that retry is due: a slot's claim
// is made to say so (Record.RetryAt), and the next leader waits until
// then (redeliver). If that write fails, the next leader runs the retry
// when it takes the slot over, as before. A trigger request's claim is
// made to say so too, so that the next leader counts the retry against
// the retry budget, not as a re-run of a cut attempt (Record.Reruns).
func (r *Runner) leaveOpen(t *coord.Term, s Slot, tr *trigger, held, final Record, log *slog.Logger, retryAt time.Time) {
	retry := !retryAt.IsZero()
	noted := retry && held.RunID == final.RunID && held.RetryAt.Equal(retryAt.UTC()) // by noteRetryDue
	switch {
	case noted:
	case tr != nil && retry:
		r.leaveTriggerRetry(t, tr, held, final, retryAt, log)
	case tr == nil && (final.Attempt != held.Attempt || retry):
		ctx, cancel := context.WithTimeout(context.Background(), recordPatience)
		_, err := r.leaveClaim(ctx, t, s, held, final, retryAt)
		cancel()
		switch {
		case err != nil && retry:
			log.Warn("slot's claim not updated with its retry's due time: the next leader may run the retry before its backoff ends",
				"scheduled_time", s.Time, "attempt", final.Attempt+1, "retry_at", retryAt, "error", err)
		case err != nil:
			log.Warn("cut slot's claim not updated to its last attempt: the next leader may repeat the attempt's number",
				"scheduled_time", s.Time, "attempt", final.Attempt, "error", err)
		}
	}
	if retry {
		final.Error += "; its retry left to the shard's next leader (delivery at-least-once)"
		log.Warn("retry left to the shard's next leader: this replica stopped leading the shard (at-least-once)",
			"scheduled_time", s.Time, "attempt", final.Attempt+1, "retry_at", retryAt, "previous_outcome", final.State)
		r.record(t, final, log)
		return
	}
	final.Error += "; left to the shard's next leader to run again (delivery at-least-once)"
	log.Warn("run cut off by this replica's going: left to the shard's next leader to run again (at-least-once)",
		"scheduled_time", s.Time, "attempt", final.Attempt, "run_id", final.RunID)
	r.record(t, final, log)
}

// leaveClaim makes a slot's open claim, held as stored, name the attempt
// final that ended and, if retryAt is set, when its retry is due. It
// returns the claim as stored.
func (r *Runner) leaveClaim(ctx context.Context, t *coord.Term, s Slot, held, final Record, retryAt time.Time) (Record, error) {
	return r.rewriteClaim(ctx, t, s, held, leftClaim(held, final, retryAt))
}

// leftClaim is the claim held, of a slot or a manual trigger's request,
// naming the attempt final that ended and, if retryAt is set, when its
// retry is due.
func leftClaim(held, final Record, retryAt time.Time) Record {
	left := held
	left.RunID, left.Attempt, left.Start, left.RetryAt = final.RunID, final.Attempt, final.Start, retryAt.UTC()
	return left
}

// noteRetryDue makes the claim of a slot (or of a manual trigger's
// request) name its failed attempt final and when its retry is due, as
// the backoff starts (delivery at-least-once): a leader that dies, or
// loses its lease, during the backoff then leaves the next leader a retry,
// which counts against the retry budget and starts when due, not a cut
// attempt to run again at the takeover, one attempt more per such crash
// (attack 25's W10 follow-up). It returns the claim as stored (held if
// the write failed: logged, and the next leader runs the retry as before).
func (r *Runner) noteRetryDue(t *coord.Term, s Slot, tr *trigger, held, final Record, due time.Time, log *slog.Logger) Record {
	ctx, cancel := context.WithTimeout(t.Context(), recordPatience)
	defer cancel()
	var err error
	if tr != nil {
		left := leftClaim(held, final, due)
		if err = r.writeTriggerClaim(ctx, t, tr, left); err == nil {
			return left
		}
	} else if held, err = r.leaveClaim(ctx, t, s, held, final, due); err == nil {
		return held
	}
	if t.Context().Err() == nil {
		log.Warn("claim not updated with the retry's due time: should this replica die during the backoff, the next leader runs the retry at its takeover, as a re-run",
			"scheduled_time", s.Time, "attempt", final.Attempt+1, "retry_at", due.UTC(), "error", err)
	}
	return held
}

// leaveTriggerRetry makes a running trigger request's claim name its
// failed attempt final and when its retry is due (Record.RetryAt), as
// leaveOpen does a slot's claim.
func (r *Runner) leaveTriggerRetry(t *coord.Term, tr *trigger, held, final Record, retryAt time.Time, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), recordPatience)
	err := r.writeTriggerClaim(ctx, t, tr, leftClaim(held, final, retryAt))
	cancel()
	if err != nil {
		log.Warn("manual trigger's claim not updated with its left retry: the next leader may take the retry for a re-run of a cut attempt",
			"attempt", final.Attempt+1, "retry_at", retryAt, "error", err)
	}
}

// leavesRetry says whether a retry that stop keeps from starting here is
// left to the shard's next leader: the runner is stopping, under delivery
// at-least-once (attack 28, F1: an attempt that failed in a stop's drain,
// after the stop had begun, had its retry recorded "stopping" and the
// slot closed; only one that failed before the stop was left).
func leavesRetry(j *Job, stop *retryStop) bool {
	return stop == stopStopping && j.Delivery == DeliveryAtLeastOnce
}

// retryStopped says why the next attempt of a slot must not start, or
// returns nil: processes of the last attempt may be alive, the retries were
// stopped (pause, reload, shutdown, replaced), or the job is paused (a
// manual trigger runs a paused job, but only once: no retry of a paused
// job starts).
func (r *Runner) retryStopped(s Slot, tr *trigger, sr *slotRun, last Record) *retryStop {
	if last.ProcessesLeft != "" {
		return &retryStop{SkipTreeAlive, "processes of attempt " + strconv.Itoa(last.Attempt) + " could not be confirmed dead: " + last.ProcessesLeft}
	}
	var stop *retryStop
	if errors.As(context.Cause(sr.retries), &stop) {
		return stop
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.stopped:
		return stopStopping
	case r.paused[s.Job.ID] && tr != nil:
		return stopPausedManual
	case r.paused[s.Job.ID]:
		return stopPaused
	}
	return nil
}

// retrySkipped records that attempt n of a slot will not start, after
// last, and returns the record: the slot's last.
func (r *Runner) retrySkipped(t *coord.Term, last Record, n int, stop *retryStop, log *slog.Logger) Record {
	r.o.Metrics.JobSkipped.WithLabelValues(last.Job, stop.reason).Inc()
	log.Warn("retry not started", "attempt", n, "reason", stop.reason, "detail", stop.detail, "previous_outcome", last.State)
	now := wallNow().UTC()
	rec := last
	rec.RunID, rec.TraceID, rec.Attempt, rec.State, rec.Reason = observability.NewRunID(), "", n, "skipped", stop.reason
	rec.Error = r.o.Sanitize(fmt.Sprintf("retry not started: %s (attempt %d ended %s)", stop.detail, last.Attempt, last.State))
	rec.Start, rec.End, rec.Duration, rec.Output, rec.Progress, rec.ProcessesLeft = now, now, "", "", "", ""
	return rec
}

// attemptRun is one try at running a slot.
type attemptRun struct {
	slot          Slot
	term          *coord.Term
	runID         string
	correlationID string
	number        int
	prev          trace.SpanContext // the previous attempt's span, linked
	// diedInDrain says the attempt's plugin died under it (crashed, or
	// was killed for another run that ignored its cancel) while this
	// replica was stopping or handing its shard over, under delivery
	// at-least-once: it is recorded canceled and left to the shard's next
	// leader, as one the drain timeout cuts off (diedInDrain).
	diedInDrain bool
}

// runSpanOptions start every attempt's span (made once: each option is an
// allocation).
var runSpanOptions = []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal)}

// startRunSpan starts an attempt's root span, pacer.run, linked to the
// previous attempt's. Its attributes are set only when the span is
// recorded: building them costs every run, and a span nobody records (no
// exporter) keeps none.
func (r *Runner) startRunSpan(ctx context.Context, a *attemptRun) (context.Context, trace.Span) {
	job := a.slot.Job
	opts := runSpanOptions
	if a.prev.IsValid() {
		opts = append(opts[:len(opts):len(opts)], trace.WithLinks(trace.Link{SpanContext: a.prev,
			Attributes: []attribute.KeyValue{attribute.String("pacer.link", "previous attempt")}}))
	}
	ctx, span := r.o.Tracer.Start(ctx, "pacer.run", opts...)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("pacer.job.id", job.ID),
			attribute.String("pacer.run.id", a.runID),
			attribute.String("pacer.correlation_id", spanCorrelationID(r.o.Sanitize, a.correlationID)),
			attribute.Int("pacer.attempt", a.number),
			attribute.String("pacer.scheduled_time", a.slot.Time.UTC().Format(time.RFC3339Nano)),
			attribute.Int64("pacer.fencing_token", a.term.Token),
			attribute.Int("pacer.shard", a.term.Shard),
			attribute.String("pacer.plugin", job.Plugin),
			attribute.String("pacer.task", job.Task),
		)
	}
	return ctx, span
}

// spanCorrelationID is a run's correlation ID for its span: one Pacer made
// as it is (an operator pattern must not turn it into another than its
// record's and log lines'), any other sanitized.
func spanCorrelationID(sanitize func(string) string, id string) string {
	if observability.GeneratedID(id) {
		return id
	}
	return sanitize(id)
}

// execute runs one attempt under its started span, ends the span and
// records the attempt. It returns the record and the span's context.
func (r *Runner) execute(ctx context.Context, span trace.Span, a *attemptRun, base Record) (Record, trace.SpanContext) {
	job := a.slot.Job
	start, began := time.Now(), wallNow() // for the duration; for the record and the lag
	defer span.End()
	traceID := span.SpanContext().TraceID().String()
	// The run's fields, on a logger made on first use: the two info lines
	// are written without it (runlog.go).
	runLog := newLazyHandler(r.log.Handler(),
		slog.String("correlation_id", a.correlationID), slog.String("job", job.ID), slog.String("run_id", a.runID),
		slog.String("trace_id", traceID), slog.String("span_id", span.SpanContext().SpanID().String()))
	rec := base
	rec.RunID, rec.TraceID, rec.Attempt, rec.State, rec.Start = a.runID, traceID, a.number, "running", began.UTC()

	if a.number == 1 {
		observability.ObserveWithTrace(r.o.Metrics.ScheduleLag.WithLabelValues(job.ID), began.Sub(a.slot.Time).Seconds(), traceID)
	}
	running := r.o.Metrics.JobRunning.WithLabelValues(job.ID)
	running.Inc()
	defer running.Dec()
	runLog.line(ctx, slog.LevelInfo, "run started", slog.String("plugin", job.Plugin), slog.String("task", job.Task),
		slog.Time("scheduled_time", a.slot.Time.UTC()), slog.Int("attempt", a.number), slog.Int("shard", a.term.Shard),
		slog.Int64("fencing_token", a.term.Token), slog.Int64("lag_ms", began.Sub(a.slot.Time).Milliseconds()))

	var progress string
	var progressLogged time.Time
	rctx, cancel := context.WithTimeoutCause(ctx, job.Timeout, r.timeoutCause(job.Timeout))
	defer cancel()
	res, err := r.o.Tasks.Run(rctx, pluginhost.Call{
		Plugin:     job.Plugin,
		Task:       job.Task,
		Params:     job.Params,
		InheritEnv: job.InheritEnv,
		Info: pluginhost.RunInfo{
			JobID: job.ID, RunID: a.runID, CorrelationID: a.correlationID, Attempt: a.number,
			ScheduledTime: a.slot.Time, FencingToken: a.term.Token, Node: r.o.Node, Shard: a.term.Shard,
		},
		OnLog: func(l pluginhost.LogRecord) { pluginLog(runLog.logger(), job.Plugin, l) },
		OnProgress: func(p pluginhost.Progress) {
			msg := truncate(p.Message, r.o.MaxProgressBytes)
			p.Percent = percent(p.Percent)
			progress = fmt.Sprintf("%.0f%% %s", p.Percent, msg)
			// At most a line a second: a task that reports per item
			// wrote 20,000 lines in 0.3 s, past every bound on its log
			// (attack 19, P15). The record keeps the last report.
			if now := time.Now(); now.Sub(progressLogged) >= progressLogEvery {
				progressLogged = now
				runLog.logger().Info("run progress", "percent", p.Percent, "progress", msg)
			}
		},
	})
	outcome, errText := classifyAt(rctx, res, err, time.Now())
	if outcome == observability.OutcomeCrashed && r.diedInDrain(a.term, job) {
		a.diedInDrain = true
		outcome, errText = observability.OutcomeCanceled, "canceled: the plugin died during the drain of this replica's stop (or hand-over); then: "+errText
	}
	elapsed := time.Since(start)
	// The texts the plugin controls are cut as the output is, for the
	// record (whose write etcd refuses over its request limit), the log
	// line and the span alike.
	errText = truncate(errText, r.o.MaxErrorBytes)

	rec.State, rec.End, rec.Duration, rec.Error = outcome, wallNow().UTC(), elapsed.Round(time.Millisecond).String(), r.o.Sanitize(errText)
	rec.Progress = r.o.Sanitize(progress)
	if res != nil {
		rec.Output = r.o.Sanitize(truncate(res.Output, r.o.MaxOutputBytes))
		rec.ProcessesLeft = r.o.Sanitize(truncate(res.ProcessesLeft, r.o.MaxErrorBytes))
	}
	if errors.Is(err, proctree.ErrTreeAlive) {
		rec.ProcessesLeft = r.o.Sanitize(truncate(err.Error(), r.o.MaxErrorBytes))
	}
	r.o.Metrics.JobRuns.WithLabelValues(job.ID, job.Plugin, outcome).Inc()
	observability.ObserveWithTrace(r.o.Metrics.JobRunDuration.WithLabelValues(job.ID, job.Plugin), elapsed.Seconds(), traceID)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("pacer.outcome", outcome))
	}
	if outcome == observability.OutcomeSuccess {
		r.o.Metrics.LastSuccess.WithLabelValues(job.ID).SetToCurrentTime()
		span.SetStatus(codes.Ok, "")
		runLog.line(ctx, slog.LevelInfo, "run finished", slog.String("outcome", outcome),
			slog.Int64("duration_ms", elapsed.Milliseconds()), slog.Int("attempt", a.number))
	} else {
		span.SetStatus(codes.Error, rec.Error)
		runLog.logger().Warn("run finished", "outcome", outcome, "duration_ms", elapsed.Milliseconds(), "attempt", a.number, "error", errText)
	}
	return rec, span.SpanContext()
}

// diedInDrain reports whether an attempt of j that crashed (its plugin
// died under it) ended during this replica's going: the runner stopping,
// or t handing its shard over. Under delivery at-least-once such an
// attempt is decided as the drain decides the attempts it cuts off:
// canceled, and left to the shard's next leader to run again. No retry
// of it could start here, and the plugin's death is the stop's doing as
// often as not: a plugin that does not answer (SIGSTOP, a frozen cgroup)
// is killed as hung for the first of its runs cancelled (by the stop, or
// before it), and its other runs crash with it, before the drain timeout
// has cut them (attack 25, W12: they were recorded crashed and closed,
// never run again).
func (r *Runner) diedInDrain(t *coord.Term, j *Job) bool {
	return j.Delivery == DeliveryAtLeastOnce && (t.Draining() || r.stopping.Err() != nil)
}

// timeoutCause is the cause of an attempt's timeout. The few distinct
// timeouts' causes are made once: an error per run is garbage per run.
func (r *Runner) timeoutCause(d time.Duration) error {
	if err, ok := r.timeoutCauses.Load(d); ok {
		return err.(error)
	}
	err, _ := r.timeoutCauses.LoadOrStore(d, fmt.Errorf("timed out after %s", d))
	return err.(error)
}

// classify maps an attempt's result to an outcome and an error text.
func classify(ctx context.Context, res *pluginhost.Result, err error) (string, string) {
	return classifyAt(ctx, res, err, time.Now())
}

// classifyAt is classify for an attempt whose call returned at ended: an
// attempt whose timeout had passed by then timed out, whatever the task
// answered (a task that ignored its cancellation and returned success).
// Likewise an attempt the runner cancelled before its answer came (the
// drain timeout, overlap: replace, lost leadership, the job removed) was
// canceled, whatever the task answered: a task that returns success as soon
// as it is cancelled did not finish its work, and under delivery
// at-least-once a canceled attempt is run again (leftForNextLeader). What
// the task answered stays in the error text.
func classifyAt(ctx context.Context, res *pluginhost.Result, err error, ended time.Time) (string, string) {
	late := errors.Is(ctx.Err(), context.DeadlineExceeded) || pastDeadlineAt(ctx, ended)
	cut := !late && ctx.Err() != nil
	switch {
	case err == nil && res.TaskError == "" && late:
		why := "the timeout passed" // its timer may not have fired yet
		if c := context.Cause(ctx); c != nil {
			why = c.Error()
		}
		return observability.OutcomeTimeout, why + "; the task went on past it and reported success"
	case err == nil && res.TaskError == "" && cut:
		return observability.OutcomeCanceled, "canceled: " + context.Cause(ctx).Error() + "; the task reported success after the cancel"
	case err == nil && res.TaskError == "":
		return observability.OutcomeSuccess, ""
	case err == nil:
		// The task answered, but after its context ended: the context's
		// end is what happened to it. The plugin enforces the deadline
		// itself, so its answer can arrive before this side's context
		// timer has fired: compare with the deadline too.
		switch {
		case late:
			return observability.OutcomeTimeout, res.TaskError
		case ctx.Err() != nil:
			// The plugin usually says why already: the reason Cancel
			// carried is the cause.
			if cause := context.Cause(ctx).Error(); !strings.Contains(res.TaskError, cause) {
				return observability.OutcomeCanceled, res.TaskError + " (" + cause + ")"
			}
			return observability.OutcomeCanceled, res.TaskError
		}
		return observability.OutcomeFailure, res.TaskError
	case errors.Is(err, context.DeadlineExceeded):
		return observability.OutcomeTimeout, err.Error()
	case errors.Is(err, context.Canceled):
		return observability.OutcomeCanceled, "canceled: " + context.Cause(ctx).Error()
	case errors.Is(err, pluginhost.ErrPluginKilled) && (errors.Is(ctx.Err(), context.DeadlineExceeded) || pastDeadline(ctx)):
		// Killed for ignoring the cancel its timeout sent (the error
		// carries the timeout's cause, not DeadlineExceeded).
		return observability.OutcomeTimeout, err.Error()
	case errors.Is(err, pluginhost.ErrPluginKilled) && ctx.Err() != nil:
		return observability.OutcomeCanceled, err.Error()
	case cut:
		// E.g. the plugin crashed after the cancel: the runner cut the
		// attempt all the same.
		if cause := context.Cause(ctx).Error(); !strings.Contains(err.Error(), cause) {
			return observability.OutcomeCanceled, "canceled: " + cause + "; then: " + err.Error()
		}
		return observability.OutcomeCanceled, err.Error()
	case late:
		// E.g. the timeout passed while the attempt waited for a free
		// slot of its plugin, or for the plugin to start; or the plugin
		// crashed (was killed for another run that ignored its cancel)
		// while this one was past its timeout, waiting for its answer
		// (attack 25, W1: it was recorded crashed).
		if cause := context.Cause(ctx); cause != nil && errors.Is(err, pluginhost.ErrPluginCrashed) && !strings.Contains(err.Error(), cause.Error()) {
			return observability.OutcomeTimeout, cause.Error() + "; then: " + err.Error()
		}
		return observability.OutcomeTimeout, err.Error()
	case errors.Is(err, pluginhost.ErrPluginCrashed):
		return observability.OutcomeCrashed, err.Error()
	default:
		return observability.OutcomeFailure, err.Error()
	}
}

// pastDeadline reports whether ctx's deadline has passed, whether or not
// its timer has fired yet.
func pastDeadline(ctx context.Context) bool { return pastDeadlineAt(ctx, time.Now()) }

// pastDeadlineAt reports whether ctx's deadline had passed at t.
func pastDeadlineAt(ctx context.Context, t time.Time) bool {
	dl, ok := ctx.Deadline()
	return ok && !t.Before(dl)
}

// sleepUntilStopped waits d between attempts, or less if the run's ctx or
// the slot's retries end first.
func sleepUntilStopped(ctx, retries context.Context, handing <-chan struct{}, d time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(retries, cancel)()
	if handing != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-handing:
				cancel()
			case <-stop:
			}
		}()
	}
	backoff.Sleep(ctx, d)
}

// invalidParams says whether an attempt failed because the task refused
// its params (pluginhost.ErrInvalidParams: the SDKs' InvalidArgument).
func invalidParams(rec Record) bool {
	return strings.HasPrefix(rec.Error, pluginhost.ErrInvalidParams.Error()+":")
}

// retryPolicy spaces out a job's attempts: exponential from
// InitialBackoff (1s if unset), capped at MaxBackoff (no doubling if
// unset), with up to 20 % random jitter so retries of many jobs spread out;
// the cap holds with the jitter (it spreads capped waits below MaxBackoff).
func retryPolicy(p Retries) backoff.Policy {
	b := backoff.Policy{Initial: p.InitialBackoff, Max: p.MaxBackoff, Jitter: 0.2}
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = b.Initial
	}
	return b
}

// pluginLog forwards a plugin's log record through the run's logger.
func pluginLog(log *slog.Logger, plugin string, l pluginhost.LogRecord) {
	attrs := make([]slog.Attr, 0, len(l.Attrs)+2)
	attrs = append(attrs, slog.String("source", "plugin"), slog.String("plugin", plugin))
	attrs = append(attrs, l.Attrs...)
	log.LogAttrs(context.Background(), l.Level, l.Message, attrs...)
}
