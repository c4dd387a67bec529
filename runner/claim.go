package runner

// Claims: a slot is claimed under its shard's fencing token before its
// first attempt starts, and again for a manual trigger's run.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/runner/coord"
)

// claimHow is how runSlotFrom gets its slot's claim: a fresh claim (the
// zero value), a claim the catch-up made before (claimed), or the takeover
// of an older term's open claim (prev, delivery at-least-once). reruns is
// the slot's attempts before the first that ran again a cut attempt
// (Record.Reruns): they do not count against its retries. lost is the
// record of the attempt an older term's claim names, written with the
// takeover (recordWithTakeover).
type claimHow struct {
	claimed *Record
	prev    []byte
	reruns  int
	lost    *Record
}

// reclaimTrigger makes a running trigger request's claim name attempt a,
// so that the run's row ("pacer runs", /api/v1/runs) shows the attempt
// that runs, not the first. A failure is only logged: the claim still
// holds the run, and its end is recorded either way.
func (r *Runner) reclaimTrigger(ctx context.Context, t *coord.Term, tr *trigger, claim Record, a *attemptRun, log *slog.Logger) {
	claim.RunID, claim.Attempt, claim.Start = a.runID, a.number, wallNow().UTC()
	if err := r.writeTriggerClaim(ctx, t, tr, claim); err != nil {
		log.Warn("manual trigger's claim not updated to the attempt that runs", "attempt", a.number, "error", err)
	}
}

// writeTriggerClaim stores claim as the running trigger request's claim,
// guarded by the request's revision as this replica last wrote it, and
// keeps the new revision.
func (r *Runner) writeTriggerClaim(ctx context.Context, t *coord.Term, tr *trigger, claim Record) error {
	req := tr.req
	req.Claim = &claim
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	cur := tr.Trigger
	cur.Revision = tr.rev
	rev, err := r.o.Coord.RunTrigger(ctx, t, cur, b)
	if err == nil {
		tr.rev = rev
	}
	return err
}

// claim claims a slot (or decides to run a trigger request). A failure that is
// neither "taken" nor "not the leader" (etcd slow, electing, unreachable) is
// retried while the term lives, so a slot is not lost to a blip: if the
// term ends instead, the next leader's misfire catch-up finds the slot
// unclaimed. A retry that finds the slot taken checks whether the taken
// claim is this one, whose first attempt landed after all.
func (r *Runner) claim(ctx context.Context, t *coord.Term, s Slot, rec Record, tr *trigger, lost *Record) error {
	by := "scheduler"
	if tr != nil {
		by = "trigger"
	}
	ctx, span := r.startClaimSpan(ctx, t, s, by)
	defer span.End()
	b, err := encodeRecord(&rec)
	if err != nil {
		return err
	}
	// ctx ends with the term (Fire cancels it, catch-up runs on the term's).
	wait := backoff.New(transientPolicy)
	for try := 1; ; try++ {
		if tr != nil {
			err = r.claimTrigger(ctx, t, tr, rec, lost, try)
		} else {
			err = r.o.Coord.Claim(ctx, t, s.Job.ID, s.Time, b)
		}
		if errors.Is(err, coord.ErrSlotTaken) && try > 1 && tr == nil {
			if v, gerr := r.o.Coord.SlotValue(ctx, s.Job.ID, s.Time); gerr == nil && claimedBy(v, rec.RunID) {
				err = nil // our earlier try landed
			}
		}
		if err == nil || errors.Is(err, coord.ErrSlotTaken) || errors.Is(err, coord.ErrNotLeader) || errors.Is(err, coord.ErrSlotTooOld) ||
			errors.Is(err, coord.ErrTriggerDecided) ||
			ctx.Err() != nil || t.Context().Err() != nil {
			break
		}
		span.AddEvent("claim retry", trace.WithAttributes(attribute.String("error", err.Error())))
		r.log.Warn("slot claim failed; retrying while leadership lasts", "job", s.Job.ID,
			"scheduled_time", s.Time, "try", try, "error", err)
		backoff.Sleep(ctx, wait.Next())
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// claimedSpan traces the claim a catch-up made for a slot it runs late
// (misfire once or all, held back by a hand-over, a one-off run late) as
// the pacer.claim child of the run's span, with the claim write's own
// times: the claims are written together, before the runs start one
// after the other, so its span starts and ends before its parent's.
func (r *Runner) claimedSpan(ctx context.Context, t *coord.Term, s Slot, c *Record) {
	if c.claimed == nil {
		return
	}
	_, span := r.startClaimSpan(ctx, t, s, "catch-up", trace.WithTimestamp(c.claimed.start))
	span.End(trace.WithTimestamp(c.claimed.end))
}

// reclaim takes over the open claim prev of an older term for the run of
// claim (delivery at-least-once), with lost, if not nil, the record of
// the attempt prev names, in the same write; traced as the pacer.claim
// child of the run's span.
func (r *Runner) reclaim(ctx context.Context, t *coord.Term, s Slot, prev []byte, claim, lost *Record) error {
	ctx, span := r.startClaimSpan(ctx, t, s, "takeover")
	defer span.End()
	b, err := encodeRecord(claim)
	var lb []byte
	if err == nil && lost != nil {
		lb, err = encodeRecord(lost)
	}
	switch {
	case err != nil:
	case lost != nil:
		err = r.o.Coord.ReclaimRecording(ctx, t, s.Job.ID, s.Time, prev, b, lost.RunID, lb, r.o.KeepRuns, r.o.MaxRunAge)
	default:
		err = r.o.Coord.Reclaim(ctx, t, s.Job.ID, s.Time, prev, b)
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// startClaimSpan starts the pacer.claim span of s's claim under t, made
// by by (pacer.claim.by: scheduler, trigger, catch-up or takeover): one
// span with the same attributes however the claim is made.
func (r *Runner) startClaimSpan(ctx context.Context, t *coord.Term, s Slot, by string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	opts = append(opts, trace.WithAttributes(
		attribute.String("pacer.job.id", s.Job.ID), attribute.Int64("pacer.fencing_token", t.Token),
		attribute.String("pacer.claim.by", by)))
	return r.o.Tracer.Start(ctx, "pacer.claim", opts...)
}

// claimedBy reports whether a stored slot record is the claim of runID.
func claimedBy(stored []byte, runID string) bool {
	var rec Record
	return json.Unmarshal(stored, &rec) == nil && rec.RunID == runID
}
