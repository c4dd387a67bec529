package runner

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
)

// maxCatchUp bounds how many missed slots of one job a new leader examines.
const maxCatchUp = 10000

// maxCatchUpRuns bounds the missed slots of one job that run under the
// misfire policy "all": they are claimed together before the term's
// scheduler claims anything, and then run one after the other (under
// overlap allow, at once, up to max_concurrency: applyMisfire). Missed
// slots beyond it are recorded as skipped.
const maxCatchUpRuns = 100

// maxHeldRuns bounds the slots of one job held back by a hand-over that
// run late; beyond it they are skipped as misfires.
const maxHeldRuns = 100

// CatchUp decides, for each job of t's shard, the slots that came due
// before the term started while nobody led, from one read of the shard's
// claims: the misfire policy for the slots after the job's last claim (for
// a job never claimed, since a leader of the shard first had it, by the
// epochs), and the delivery policy for the slots an older term claimed and
// never finished. Slots held back by a graceful hand-over (from when the
// previous leader stopped firing, by its hand-over mark, to this term or,
// taken late, to its resignation) were not missed: they run late, whatever
// the misfire policy, but under the overlap policy as on one leader
// (applyMisfire). A slot that came due while its job was paused, by the
// job's pause history (coord.PauseHistory, read beside the claims), does
// not run late: it is recorded paused, whether or not the job is paused
// now. Every slot that does not run leaves a skip record. It returns, once every claim it makes is written, the
// instant it looked up to: the scheduler takes the shard's jobs over from
// there (OnTerm), so its claims come after the catch-up's; the runs go on
// after.
func (r *Runner) CatchUp(t *coord.Term) time.Time {
	start := wallNow()
	r.catchUp(t, start, func() {})
	return start
}

// catchUp is CatchUp from start. It calls home once, in a goroutine of its
// own, while the claims are read (OnTerm creates the series of the shard's
// jobs there: 10,000 jobs' take about as long as that read), and returns
// once home has returned. Nothing of the catch-up is counted, and none of
// its runs starts, before home returns. (Called after the loop below, as it
// was, home held the first runs back while it made the series: issue 18.)
// Once both are done, before anything runs, the jobs' last successes read
// with the claims are exported (exportLastSuccess).
func (r *Runner) catchUp(t *coord.Term, start time.Time, home func()) {
	homed := make(chan struct{})
	read := make(chan map[string]coord.JobClaims, 1)
	go func() {
		home()
		r.exportLastSuccess(t, <-read)
		close(homed)
	}()
	defer func() { <-homed }()
	// The hand-over mark is taken while the claims are read.
	heldc := make(chan heldBack, 1)
	go func() { heldc <- r.heldFrom(t) }()
	pausesc := make(chan map[string][]coord.Pause, 1)
	go func() { pausesc <- r.pauseHistory(t) }()
	claims, err := r.readClaims(t)
	read <- claims
	held, pauses := <-heldc, <-pausesc
	if err != nil {
		r.log.Warn("misfire check failed: could not read the claims; slots missed while nobody led are not decided in this term",
			"shard", t.Shard, "error", err)
		return
	}
	history, set := r.jobSetHistory(t.Context(), t.Shard), r.JobSet()
	history.handedOver = held
	var claimed sync.WaitGroup // claims of this catch-up, written before the scheduler's
	for _, j := range r.shardJobs(t.Shard) {
		jc := claims[j.ID]
		redo := r.applyDelivery(t, j, jc, held, homed)
		last := jc.Last(start) // slots a clock ahead claimed early say nothing of what was missed
		hash := set.Jobs[j.ID]
		var missed, gap, orphans []time.Time
		var gapWhy, orphansWhy []string
		if last.IsZero() {
			// Never claimed (a new job, a one-off): its slots missed are
			// those since a leader of the shard first had it (none for a
			// job no earlier leader had).
			from, ok := history.firstHad(j, hash, start)
			// Or since the cluster switched to the set that has it, if
			// a leader after that did not have it (attack 22, T4).
			if since, switched := history.switchedTo(j, hash, set.Fingerprint, start); switched && (!ok || since.Before(from)) {
				from, ok = since, true
			}
			if ok {
				missed = undecided(j, jc, from, start)
			}
			if len(missed) == 0 && oneOffLate(j, start) {
				// SetJobs said a leader's catch-up decides it: this
				// one runs nothing, and says so.
				r.log.Warn("job will never fire: its one-off time has passed (next: never)", "job", j.ID, "schedule", j.Spec,
					"why", "its time came before a leader of its shard had the job, and no slot from before that runs")
			}
		} else {
			for s := j.Schedule.Next(last); !s.IsZero() && s.Before(start) && len(missed) < maxCatchUp; s = j.Schedule.Next(s) {
				missed = append(missed, s)
			}
			// Slots a leader that had the job otherwise left undecided
			// before its later claims (diverged.go).
			gap, gapWhy, orphans, orphansWhy = r.divergedBefore(history, j, hash, set.Fingerprint, jc, last)
		}
		if len(missed) == 0 && len(gap) == 0 && len(orphans) == 0 && len(redo) == 0 {
			continue
		}
		// Slots the leader of the time did not have the job for were not
		// missed for want of a leader: they say so, and do not run. The
		// misfire policy's claims come first: the slots decided as not in
		// the job set may move the claim key's floor past earlier slots.
		absent, why, rest := history.split(j, hash, missed)
		absent, why = append(gap, absent...), append(gapWhy, why...)
		restWhy := history.notClaimed(t, rest) // read here: the history is not for goroutines
		// Once the job's slots are decided, this goroutine goes on as
		// the run of those to run: one goroutine a job, not two (an
		// overlap allow job's slots each run in one of their own, which
		// applyMisfire starts). The run is registered as the job's before
		// the catch-up returns (before the scheduler can fire a slot of
		// the job, which the overlap policy decides against it).
		claimed.Add(1)
		go func() {
			decided := sync.OnceFunc(claimed.Done)
			defer decided()
			var run func(context.Context, *slotRun)
			late := false // a run of held-back slots, which takes the scheduler's
			if len(rest) > 0 {
				run, late = r.applyMisfire(t, j, rest, restWhy, start, held, pauses[j.ID], len(redo) > 0, homed)
			}
			if len(redo) > 0 {
				// Re-deliveries of a dead leader's attempts are the job's
				// run, as on one leader: a slot fired meanwhile is skipped.
				// Slots a hand-over left queued are late slots, as held-back
				// ones are: a slot fired meanwhile runs after them.
				late = handedOverAll(redo, held) && (run == nil || late)
				run = r.inTurn(t, j, redo, homed, held, run)
			}
			if len(absent) > 0 || len(orphans) > 0 {
				if run != nil { // the runs need not wait for these marks
					r.goTracked(t, j, run)
					run = nil
				}
				if len(orphans) > 0 { // older than the absent ones: before the floor moves
					r.recordSkipped(t, j, SkipMisfire, orphans, orphansWhy, homed)
				}
				if len(absent) > 0 {
					r.recordSkipped(t, j, SkipNotInJobSet, absent, why, homed)
				}
			}
			if run == nil || !r.addWork() {
				return
			}
			defer r.wg.Done()
			ctx, sr, done := r.tracked(t, j)
			defer done()
			if late { // before the scheduler may fire the job's slots
				r.mu.Lock()
				sr.late = &lateQueue{}
				r.mu.Unlock()
			}
			decided()
			run(ctx, sr)
		}()
	}
	claimed.Wait()
}

// recordSkipped decides slots before the job's last claim that no leader
// ran: those the leader of their time did not run because its job set
// lacked the job (or defined it otherwise), reason not_in_job_set, and
// orphans (jobSetHistory.orphaned), reason misfire. Each is marked
// decided in the job's claim key with its skip record (see
// decideSkipped), so that no later leader counts it again. They are
// counted once homed is closed.
func (r *Runner) recordSkipped(t *coord.Term, j *Job, reason string, slots []time.Time, why []string, homed <-chan struct{}) {
	log := r.log.With("job", j.ID)
	msg := "slots came due while the leader did not have this job: recorded as skipped, not run"
	if reason != SkipNotInJobSet {
		msg = "slots came due as the shard passed to a leader without this job, and later slots of it have run since: " +
			"recorded as skipped (misfire), not run late"
	}
	log.Warn(msg, "slots", len(slots), "first", slots[0], "last", slots[len(slots)-1], "detail", why[len(why)-1])
	plain, decided := r.decideSkipped(t, j, reason, slots, why)
	<-homed
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, reason).Add(float64(decided))
	if len(plain) == 0 || !r.addWork() {
		return
	}
	go func() {
		defer r.wg.Done()
		for _, rec := range plain {
			r.record(t, rec, log)
		}
	}()
}

// heldBack is the stretch a hand-over held the shard's slots back: from
// when the previous leader stopped firing, through until (zero: through
// the start of the term that took the mark over). Zero from: none. token
// is the fencing token of the term that handed the shard over.
type heldBack struct {
	from, until time.Time
	token       int64
}

// holds says whether slot s was held back.
func (h heldBack) holds(s time.Time) bool {
	return !h.from.IsZero() && !s.Before(h.from) && (h.until.IsZero() || !s.After(h.until))
}

// handedOver says whether a claim made under fencing token token was left
// open by a graceful hand-over: by the term that left the mark, or by an
// earlier one whose claims that term left as they were.
func (h heldBack) handedOver(token int64) bool { return !h.from.IsZero() && token <= h.token }

// heldFrom takes the hand-over mark the shard's previous leader left, and
// returns the stretch it held the shard's slots back (none: no hand-over
// before t).
func (r *Runner) heldFrom(t *coord.Term) heldBack {
	for wait := 100 * time.Millisecond; t.Context().Err() == nil; wait = min(2*wait, time.Second) {
		h, ok, err := r.o.Coord.TakeHandOver(t.Context(), t)
		switch {
		case err == nil && ok:
			r.log.Info("shard handed over: slots held back meanwhile run late", "shard", t.Shard, "from", h.Node,
				"firing_stopped", h.FiringStopped, "held_until", h.HeldUntil, "previous_token", h.FencingToken)
			return heldBack{h.FiringStopped, h.HeldUntil, h.FencingToken}
		case err == nil:
			return heldBack{}
		}
		r.log.Warn("reading the hand-over mark failed; retrying while leadership lasts", "shard", t.Shard, "error", err)
		select {
		case <-time.After(wait):
		case <-t.Context().Done():
		}
	}
	return heldBack{}
}

// readClaims reads the claims of every job of t's shard, again while the term lives if etcd
// fails (a blip must not leave the missed slots undecided).
func (r *Runner) readClaims(t *coord.Term) (map[string]coord.JobClaims, error) {
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second})
	for {
		claims, err := r.o.Coord.Claims(t.Context(), t)
		if err == nil || errors.Is(err, coord.ErrNotLeader) || t.Context().Err() != nil {
			return claims, err
		}
		r.log.Warn("reading the claims for the misfire check failed; retrying while leadership lasts", "error", err)
		if !backoff.Sleep(t.Context(), wait.Next()) {
			return nil, t.Context().Err()
		}
	}
}

// applyMisfire decides missed slots by the job's policy (those a hand-over
// held back run whatever the policy, unless, under overlap forbid, an
// attempt of the job ran at their time: the one the hand-over drained, by
// the job's records, and they are recorded as overlaps): the
// slots to run are claimed now, together, and then run one after the
// other (under overlap forbid and replace; under allow, at once: below);
// the others are recorded as skipped, one record for each run of
// consecutive slots, written with the first claims, the latest's with the
// mark that the latest slot is decided when it is skipped. Once homed is
// closed, they are counted, and it returns the run of the claimed slots
// (one run of the job; nil if none was claimed), and whether slots a
// hand-over held back are among them: then the run takes the slots the
// scheduler fires while it goes (slotRun.late, runLate).
//
// Under overlap allow, the slots to run do not wait for one another: each
// is decided as a slot the scheduler fires is (admitLate), so that up to
// max_concurrency of them (with the job's runs going) start at once, each
// in a run of its own registered before this returns, and the others are
// recorded skipped, reason overlap, as over max_concurrency. Then it
// starts them itself (runAtOnce) and returns no run. (Attack 25, W2: they
// ran one after the other, and the run took the scheduler's slots behind
// them for a minute and a half.)
//
// A slot that would run (a held-back one included), or be skipped as a
// misfire, but came due while the job was paused, by pauses (its pause
// history), is skipped with reason paused instead, as on one leader,
// whether or not the job is paused now (attack 25, W9: under misfire once
// and skip, such a slot not run was recorded misfire).
//
// behind says the slots to run wait for the job's re-delivered slots
// (inTurn): the first is claimed as queued too.
func (r *Runner) applyMisfire(t *coord.Term, j *Job, missed []time.Time, missedWhy []string, now time.Time, held heldBack,
	pauses []coord.Pause, behind bool, homed <-chan struct{}) (func(context.Context, *slotRun), bool) {
	var run []time.Time
	var skips [][]time.Time // runs of consecutive skipped slots: windows of missed, not copies
	var skipsWhy []string   // who did not claim each run's first slot ("": no replica led)
	var skipsKind []string  // each run of skipped slots' reason: SkipMisfire, SkipOverlap (held back, or allow's max_concurrency) or SkipPaused
	prevSkipped, prevKind := false, ""
	nheld, noverlap, npaused, nheldPaused := 0, 0, 0, 0
	atOnce := j.Overlap == OverlapAllow
	var started []lateRun    // under allow: the run of each slot of run, registered
	nbusy, nheldBusy := 0, 0 // under allow: slots over max_concurrency, and the held-back ones among them
	var busy []span          // the job's attempts, when held-back slots are decided by overlap
	if forbids(j) && slices.ContainsFunc(missed, held.holds) {
		busy = r.attemptsOf(t, j)
	}
	for i, s := range missed {
		inGrace := now.Sub(s) <= j.Misfire.Grace
		// Whether the job was paused at s, by its pause history: a slot
		// that would run, or be skipped as a misfire, is recorded paused
		// instead, as on one leader, whether or not the job is still
		// paused now.
		pausedThen := coord.PausedAt(pauses, s)
		skip, kind := false, SkipMisfire
		switch {
		case held.holds(s) && pausedThen:
			skip, kind = true, SkipPaused
			nheldPaused++
		case held.holds(s) && overlaps(busy, s):
			// On one leader it would have been skipped: an attempt of
			// the job (the one the hand-over drained) ran at its time.
			skip, kind = true, SkipOverlap
			noverlap++
		case held.holds(s) && nheld < maxHeldRuns:
			nheld++ // held back by the hand-over, not missed
		case !inGrace || j.Misfire.Policy == MisfireSkip:
			skip = true
		case j.Misfire.Policy == MisfireAll:
			skip = len(run)-(nheld-nheldBusy) >= maxCatchUpRuns
		default: // once: the latest
			skip = i != len(missed)-1
		}
		if pausedThen && kind == SkipMisfire {
			skip, kind = true, SkipPaused
			npaused++
		}
		why := ""
		if i < len(missedWhy) {
			why = missedWhy[i]
		}
		if !skip && atOnce {
			if over := r.admitLate(t, j, &started); over != "" {
				skip, kind, why = true, SkipOverlap, over
				nbusy++
				if held.holds(s) {
					nheldBusy++
				}
			}
		}
		switch {
		case !skip:
			run = append(run, s)
		case prevSkipped && prevKind == kind:
			// The run's slots are consecutive in missed: its window
			// grows by one.
			k := len(skips) - 1
			skips[k] = skips[k][:len(skips[k])+1]
		default:
			skips = append(skips, missed[i:i+1])
			skipsWhy = append(skipsWhy, why)
			skipsKind = append(skipsKind, kind)
		}
		prevSkipped, prevKind = skip, kind
	}
	nskip := len(missed) - len(run) - noverlap - npaused - nheldPaused - nbusy
	if nheld+noverlap+nheldPaused < len(missed) {
		// A paused job's slots to run do not run (see below): say so.
		running, paused := len(run)-(nheld-nheldBusy), npaused
		if p, _ := r.JobState(j.ID); p {
			running, paused = 0, running+paused
		}
		r.log.Warn("slots came due while no replica led", "job", j.ID, "missed", len(missed)-nheld-noverlap-nheldPaused,
			"policy", j.Misfire.Policy, "grace", j.Misfire.Grace, "running", running, "skipping", nskip, "paused", paused,
			"skipped_max_concurrency", nbusy-nheldBusy)
	}
	if nheld > 0 || noverlap > 0 || nheldPaused > 0 {
		r.log.Info("slots held back by a hand-over: running them late", "job", j.ID, "slots", nheld-nheldBusy,
			"skipped_overlap", noverlap, "skipped_paused", nheldPaused, "skipped_max_concurrency", nheldBusy)
	}
	recs := make([]Record, len(skips))
	for i, sk := range skips {
		switch skipsKind[i] {
		case SkipOverlap:
			if atOnce { // over max_concurrency, as the scheduler's slots are
				recs[i] = r.slotsRecord(t, j, sk, SkipOverlap, skipsWhy[i])
				break
			}
			recs[i] = r.heldOverlapRecord(t, j, sk)
		case SkipPaused:
			recs[i] = r.pausedThenRecord(t, j, sk)
		default:
			recs[i] = r.misfireRecord(t, j, sk, skipsWhy[i])
		}
	}
	// Claims first: they must be in before the scheduler's. Skip records
	// go with them. When the latest missed slot is skipped (nothing runs,
	// or more slots were missed than run), it is marked decided with its
	// record, so that the next leader does not count the same slots again.
	var claims []Record
	var unwritten []Record
	var latest *Record
	if prevSkipped {
		rec := recs[len(recs)-1]
		latest, recs = &rec, recs[:len(recs)-1]
	}
	if len(run) > 0 {
		claims, unwritten = r.claimMissed(t, j, run, recs, behind, atOnce)
	} else {
		unwritten = recs
	}
	if latest != nil {
		last := missed[len(missed)-1]
		b, err := encodeRecord(latest)
		if err == nil {
			err = r.o.Coord.SkipSlot(t.Context(), t, j.ID, last, latest.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
		}
		if err != nil {
			unwritten = append(unwritten, *latest)
			if !errors.Is(err, coord.ErrSlotTaken) {
				r.log.Warn("missed slot not marked decided; the next leader may count it again", "job", j.ID,
					"scheduled_time", last, "error", err)
			}
		}
	}
	<-homed
	if nskip > 0 {
		r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipMisfire).Add(float64(nskip))
	}
	if noverlap+nbusy > 0 {
		r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipOverlap).Add(float64(noverlap + nbusy))
	}
	if npaused+nheldPaused > 0 {
		r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipPaused).Add(float64(npaused + nheldPaused))
	}
	if len(unwritten) > 0 && r.addWork() {
		go func() {
			defer r.wg.Done()
			log := r.log.With("job", j.ID)
			for _, rec := range unwritten {
				r.record(t, rec, log)
			}
		}()
	}
	if atOnce {
		r.runAtOnce(t, j, run, started, claims)
		return nil, false
	}
	if len(claims) == 0 {
		return nil, false
	}
	// One after the other, in slot order, as one of the job's runs. A
	// slot of a job paused by the time it would start does not start, as
	// a slot due while the job is paused does not. Under overlap forbid, a
	// held-back slot does not start either if the late run of an earlier
	// one, started at that one's time, would still have been running at
	// its time: on one leader it would have been skipped as an overlap.
	// Once the term stops firing (a hand-over, a stop), no queued slot
	// starts: their claims stay open, queued, and the shard's next leader
	// runs them late, in turn (applyDelivery; attack 25, W13: the drain
	// started them, and the next leader recorded those it cut lock_lost).
	return func(ctx context.Context, sr *slotRun) {
		if sr.late != nil {
			defer func() { r.runLate(ctx, t, j, sr, busy) }()
		}
		for i := range claims {
			c := &claims[i] // not a copy, which would escape to the heap, one a job
			if ctx.Err() != nil {
				r.closeUnrun(t, j, claims[i:], context.Cause(ctx))
				return
			}
			if c.Queued && t.Draining() {
				return
			}
			if paused, _ := r.JobState(j.ID); paused {
				r.closeUnrun(t, j, claims[i:i+1], stopPaused)
				continue
			}
			if forbids(j) && held.holds(c.ScheduledTime) && overlaps(busy, c.ScheduledTime) {
				r.closeUnrun(t, j, claims[i:i+1], stopHeldOverlap)
				continue
			}
			if c.Queued && !r.startQueued(ctx, t, j, c) {
				continue
			}
			began := wallNow()
			r.runSlotFrom(ctx, t, Slot{Job: j, Time: c.ScheduledTime}, c.CorrelationID, nil, claimHow{claimed: c}, c.Attempt, sr)
			if held.holds(c.ScheduledTime) {
				busy = append(busy, span{c.ScheduledTime, c.ScheduledTime.Add(wallNow().Sub(began))})
			}
		}
	}, nheld > 0
}

// runLate runs the slots the scheduler fired while the held-back slots of
// j ran late (sr.late), one after the other, until none is left. A slot
// that the run of an earlier one (held back, or taken here), taken from
// its own time, would still have covered is skipped as an overlap, as on
// one leader; so is every slot while the job is paused. Slots left when
// ctx ends are not claimed: the shard's next leader decides them. Once the
// term stops firing, none starts: they are held back for the next leader
// (coord.Term.HoldBack), which runs them late.
func (r *Runner) runLate(ctx context.Context, t *coord.Term, j *Job, sr *slotRun, busy []span) {
	for {
		r.mu.Lock()
		q := sr.late
		if len(q.slots) == 0 || ctx.Err() != nil || r.stopped || t.Draining() {
			if len(q.slots) > 0 && t.Draining() {
				t.HoldBack(q.slots[0].Time)
			}
			q.closed = true
			r.mu.Unlock()
			return
		}
		s := q.slots[0]
		q.slots = q.slots[1:]
		switch {
		case r.paused[j.ID]:
			r.skipAsync(t, s, SkipPaused, "job is paused")
			r.mu.Unlock()
			continue
		case overlaps(busy, s.Time):
			r.skipAsync(t, s, SkipOverlap, "previous run still running (the late run of a slot held back by a hand-over, taken from its own time)")
			r.mu.Unlock()
			continue
		}
		r.mu.Unlock()
		began := wallNow()
		r.runSlotFrom(ctx, t, s, observability.NewCorrelationID(), nil, claimHow{}, 1, sr)
		busy = append(busy, span{s.Time, s.Time.Add(wallNow().Sub(began))})
	}
}

// lateRun is a run registered for a late slot of an overlap allow job
// (admitLate): its context, its slotRun and the func that ends it.
type lateRun struct {
	ctx  context.Context
	sr   *slotRun
	done func()
}

// admitLate decides whether a late slot of j, an overlap allow job, starts
// now beside the job's runs, as a slot the scheduler fires would be
// (atMaxConcurrency): if so, it registers the slot's run as one of the
// job's (trackedLocked), appended to started, so that the next slot's
// decision counts it, and returns ""; if not, why not.
func (r *Runner) admitLate(t *coord.Term, j *Job, started *[]lateRun) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if why := atMaxConcurrency(j, len(r.running[j.ID])); why != "" {
		return why
	}
	ctx, sr, done := r.trackedLocked(t, j)
	*started = append(*started, lateRun{ctx, sr, done})
	return ""
}

// runAtOnce starts each claimed late slot of an overlap allow job in the
// run admitLate registered for it (runs[i] for slots[i]), on a goroutine
// of its own. The run of a slot that was not claimed (claims holds those
// that were, in slot order) ends at once; so does every run once the
// runner is stopped, its claim left open for the shard's next leader. A
// slot whose job is paused by the time it would start, or whose run ended
// first, is closed with a skip record (closeUnrun), as in a forbid job's
// run of late slots.
func (r *Runner) runAtOnce(t *coord.Term, j *Job, slots []time.Time, runs []lateRun, claims []Record) {
	for i, s := range slots {
		a := runs[i]
		if len(claims) == 0 || !claims[0].ScheduledTime.Equal(s) {
			a.done() // decided elsewhere: its claim says how
			continue
		}
		c := claims[0]
		claims = claims[1:]
		if !r.addWork() {
			a.done()
			continue
		}
		go func() {
			defer r.wg.Done()
			defer a.done()
			if a.ctx.Err() != nil {
				r.closeUnrun(t, j, []Record{c}, context.Cause(a.ctx))
				return
			}
			if paused, _ := r.JobState(j.ID); paused {
				r.closeUnrun(t, j, []Record{c}, stopPaused)
				return
			}
			r.runSlotFrom(a.ctx, t, Slot{Job: j, Time: c.ScheduledTime}, c.CorrelationID, nil, claimHow{claimed: &c}, c.Attempt, a.sr)
		}()
	}
}

// startQueued rewrites a queued claim as started (Record.Queued), so that a
// later leader does not take the slot for one never started. False when
// the claim is no longer this term's to run: it lost leadership, or the
// slot was decided meanwhile.
func (r *Runner) startQueued(ctx context.Context, t *coord.Term, j *Job, c *Record) bool {
	prev, err := encodeRecord(c)
	if err != nil {
		return true // cannot happen for a claim; run it as claimed
	}
	started := *c
	started.Queued, started.Start = false, wallNow().UTC()
	b, err := encodeRecord(&started)
	if err == nil {
		err = r.o.Coord.Reclaim(ctx, t, j.ID, c.ScheduledTime, prev, b)
	}
	switch {
	case err == nil:
		*c = started
	case ctx.Err() != nil || t.Context().Err() != nil || errors.Is(err, coord.ErrNotLeader):
		return false // the next leader decides it, as never started
	case errors.Is(err, coord.ErrSlotTaken):
		r.log.Warn("queued late slot not started: it was decided meanwhile", "job", j.ID, "scheduled_time", c.ScheduledTime, "error", err)
		return false
	default: // still this term's claim: run it, unmarked
		r.log.Warn("queued late slot's claim not marked started; running it", "job", j.ID, "scheduled_time", c.ScheduledTime, "error", err)
	}
	return true
}

// stopHeldOverlap closes a held-back slot's claim that does not run late:
// see applyMisfire's run.
var stopHeldOverlap = &retryStop{SkipOverlap, "held back by a hand-over and not run late: the late run of an earlier " +
	"held-back slot, had it started at that slot's time, would still have been running at this one's (overlap: forbid)"}

// span is when an attempt of a job ran: from start, before end.
type span struct{ start, end time.Time }

// overlaps says whether an attempt in spans was running at s.
func overlaps(spans []span, s time.Time) bool {
	return slices.ContainsFunc(spans, func(a span) bool { return !s.Before(a.start) && s.Before(a.end) })
}

// forbids says whether j skips a slot due while an attempt of it runs.
func forbids(j *Job) bool { return j.Overlap != OverlapAllow && j.Overlap != OverlapReplace }

// heldAttempts bounds the records attemptsOf reads.
const heldAttempts = 32

// attemptsOf reads when j's latest attempts ran, from their records: the
// previous leader's drain wrote them before its hand-over mark, so the
// attempt it drained is among them. A failed read leaves none: the held-back
// slots run late, as before.
func (r *Runner) attemptsOf(t *coord.Term, j *Job) []span {
	raw, err := r.o.Coord.Runs(t.Context(), j.ID, heldAttempts)
	if err != nil {
		r.log.Warn("reading the job's runs for its held-back slots failed; they run late whatever they overlapped",
			"job", j.ID, "error", err)
		return nil
	}
	var out []span
	for _, b := range raw {
		var rec Record
		if json.Unmarshal(b, &rec) != nil || rec.State == "skipped" || rec.State == "running" ||
			rec.Start.IsZero() || !rec.End.After(rec.Start) {
			continue
		}
		out = append(out, span{rec.Start, rec.End})
	}
	return out
}

// heldOverlapRecord is the skip record of held-back slots that an attempt
// of the job overlapped.
func (r *Runner) heldOverlapRecord(t *coord.Term, j *Job, slots []time.Time) Record {
	why := "held back by a hand-over while the previous run was still running (overlap: forbid): not run late"
	return r.slotsRecord(t, j, slots, SkipOverlap, why)
}

// pausedThenRecord is the skip record of consecutive missed or held-back
// slots that came due while the job was paused, by its pause history.
func (r *Runner) pausedThenRecord(t *coord.Term, j *Job, slots []time.Time) Record {
	why := "the job was paused at the scheduled time, which came due while no replica ran the job's slots: not run late"
	return r.slotsRecord(t, j, slots, SkipPaused, why)
}

// slotsRecord is the one skip record of consecutive slots of j, skipped
// for reason: from the first through the last, with how many there are
// (Record.ScheduledUntil, Record.Slots) and why.
func (r *Runner) slotsRecord(t *coord.Term, j *Job, slots []time.Time, reason, why string) Record {
	rec := r.skipRecord(t, Slot{Job: j, Time: slots[0]}, reason, why)
	if n := len(slots); n > 1 {
		rec.ScheduledUntil, rec.Slots = slots[n-1].UTC(), n
		rec.Error = itoa(n) + " slots, " + slots[0].UTC().Format(time.RFC3339) + " through " +
			slots[n-1].UTC().Format(time.RFC3339) + ": " + why
	}
	return rec
}

// pauseHistory reads the stretches each job was paused, for the catch-up
// (again while the term lives if etcd fails, a few times). Without it,
// missed slots are decided by the pause flags as they are now, as before.
func (r *Runner) pauseHistory(t *coord.Term) map[string][]coord.Pause {
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: time.Second})
	for try := 0; ; try++ {
		p, err := r.o.Coord.PauseHistory(t.Context())
		if err == nil {
			return p
		}
		if try == 4 || t.Context().Err() != nil || !backoff.Sleep(t.Context(), wait.Next()) {
			r.log.Warn("reading the jobs' pause history failed: missed slots are decided by whether their job is paused now",
				"shard", t.Shard, "error", err)
			return nil
		}
	}
}

// closeUnrun closes the claims of caught-up slots that did not start
// because their run was ended for them (cause: a slot with overlap
// "replace", or a reload that removed the job) or their job was paused,
// with a skip record each.
// When the runner stops or the term ends instead, they stay open: the
// next leader decides them by the delivery policy.
func (r *Runner) closeUnrun(t *coord.Term, j *Job, claims []Record, cause error) {
	var stop *retryStop
	if r.stopCtx.Err() != nil || t.Context().Err() != nil || !errors.As(cause, &stop) {
		return
	}
	log := r.log.With("job", j.ID)
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, stop.reason).Add(float64(len(claims)))
	why := stop.detail + " before it ran"
	if stop == stopHeldOverlap {
		why = stop.detail
	}
	for _, c := range claims {
		rec := r.skipRecord(t, Slot{Job: j, Time: c.ScheduledTime}, stop.reason, why)
		rec.CorrelationID = c.CorrelationID
		r.write(t, rec, log, func(b []byte) error {
			return r.o.Coord.FinishSlot(context.Background(), t, j.ID, c.ScheduledTime, rec.RunID, b, time.Time{}, r.o.KeepRuns, r.o.MaxRunAge)
		})
	}
}

// misfireRecord is the skip record of consecutive missed slots; notClaimed
// names the leader in charge at the first of them that did not claim it
// ("": no replica led).
func (r *Runner) misfireRecord(t *coord.Term, j *Job, slots []time.Time, notClaimed string) Record {
	why := "no replica led at the scheduled time (misfire policy " + j.Misfire.Policy + ")"
	if notClaimed != "" {
		why = "not claimed: " + notClaimed + " (misfire policy " + j.Misfire.Policy + ")"
	}
	return r.slotsRecord(t, j, slots, SkipMisfire, why)
}

// claimMissed claims missed slots to run, in one batch, with the skip
// records recs written alongside the first claims. It returns the claims
// made, in slot order, and the records that were not written. A slot found
// taken or decided is left out: its claim says what happened to it. Every
// slot but the first is claimed as queued (Record.Queued), the first too
// if behind (it waits for re-delivered slots of the job); none if atOnce
// (each starts at once, in a run of its own: overlap allow).
func (r *Runner) claimMissed(t *coord.Term, j *Job, run []time.Time, recs []Record, behind, atOnce bool) (claims, unwritten []Record) {
	claims = make([]Record, len(run))
	errs := make([]error, len(run))
	var wg sync.WaitGroup
	for i, s := range run {
		claims[i] = Record{Job: j.ID, ScheduledTime: s.UTC(), RunID: observability.NewRunID(), CorrelationID: newCorrelationID(),
			Node: r.o.Node, FencingToken: t.Token, Attempt: 1, State: "running", Start: wallNow().UTC(), Queued: (i > 0 || behind) && !atOnce}
		var runID string
		var rec []byte
		if i < len(recs) {
			b, err := encodeRecord(&recs[i])
			if err == nil {
				runID, rec = recs[i].RunID, b
			}
		}
		claim := func() {
			b, err := encodeRecord(&claims[i])
			if err == nil {
				began := time.Now()
				err = r.o.Coord.ClaimRecording(t.Context(), t, j.ID, s, b, runID, rec, r.o.KeepRuns, r.o.MaxRunAge)
				claims[i].claimed = &claimTimes{began, time.Now()} // for the run's pacer.claim span
			}
			errs[i] = err
		}
		if len(run) == 1 { // the usual case (misfire "once"): no goroutine of its own
			claim()
			continue
		}
		wg.Go(claim)
	}
	wg.Wait()
	if len(recs) > len(run) {
		unwritten = append(unwritten, recs[len(run):]...)
	}
	out := claims[:0]
	for i, err := range errs {
		if err != nil {
			if i < len(recs) {
				unwritten = append(unwritten, recs[i])
			}
			if !errors.Is(err, coord.ErrSlotTaken) {
				r.log.Warn("missed slot not claimed: not run", "job", j.ID, "scheduled_time", run[i], "error", err)
			}
			continue
		}
		out = append(out, claims[i])
	}
	return out, unwritten
}

// applyDelivery decides the job's slots that an older term claimed and
// never finished (its leader died or lost its lease mid-run), by the job's
// delivery policy. What it counts, and the runs it starts, wait for homed
// to close. Under at-least-once, it returns the slots to run again, in slot
// order, for one run of the job that runs them one after the other
// (inTurn), unless the job's overlap policy is allow: then each runs at
// once, in a run of its own, as before. A slot claimed to run late that
// never started (Record.Queued), left by a graceful hand-over (held), is
// run late that way under at-most-once too: its leader stopped before its
// turn came (attack 25, W13: it was recorded lock_lost, and a graceful stop
// lost it).
func (r *Runner) applyDelivery(t *coord.Term, j *Job, jc coord.JobClaims, held heldBack, homed <-chan struct{}) []redelivery {
	var redo []redelivery
	for _, o := range jc.Open {
		var rec Record
		if json.Unmarshal(o.Claim, &rec) != nil || rec.FencingToken == t.Token {
			continue // this term's own claim
		}
		s := Slot{Job: j, Time: o.Time}
		if rec.State != "running" {
			// A final record left open (moved from the previous claim
			// layout, where a slot's key held its result): close it.
			if !r.addWork() {
				return redo
			}
			go func() {
				defer r.wg.Done()
				if err := r.o.Coord.CloseSlot(t.Context(), t, j.ID, s.Time); err != nil {
					r.log.Warn("finished slot's claim not closed", "job", j.ID, "scheduled_time", s.Time, "error", err)
				}
			}()
			continue
		}
		log := r.log.With("job", j.ID, "correlation_id", rec.CorrelationID)
		if j.Delivery == DeliveryAtLeastOnce || rec.Queued && held.handedOver(rec.FencingToken) {
			switch {
			case j.Delivery != DeliveryAtLeastOnce:
				log.Warn("slot the previous leader claimed to run late but had not started when it handed the shard over: running it",
					"scheduled_time", o.Time, "previous_node", rec.Node, "previous_token", rec.FencingToken)
			case !rec.RetryAt.IsZero():
				log.Warn("retry left by the previous leader: running it when its backoff ends (at-least-once)",
					"scheduled_time", o.Time, "attempt", rec.Attempt+1, "retry_at", rec.RetryAt, "previous_node", rec.Node,
					"previous_token", rec.FencingToken)
			case rec.Queued:
				log.Warn("slot the previous leader claimed to run late but never started: running it (at-least-once)",
					"scheduled_time", o.Time, "previous_node", rec.Node, "previous_token", rec.FencingToken)
			default:
				log.Warn("slot left unfinished by the previous leader: running it again (at-least-once)",
					"scheduled_time", o.Time, "previous_node", rec.Node, "previous_token", rec.FencingToken)
			}
			d := redelivery{slot: s, rec: rec, claim: o.Claim}
			if j.Overlap == OverlapAllow {
				r.goTracked(t, j, func(ctx context.Context, sr *slotRun) {
					<-homed
					r.redeliver(ctx, t, d, sr)
				})
				continue
			}
			redo = append(redo, d)
			continue
		}
		why := "claimed by " + rec.Node + " (fencing token " + itoa(int(rec.FencingToken)) + "), which lost leadership before finishing (delivery at-most-once)"
		if rec.Queued {
			why = "claimed by " + rec.Node + " (fencing token " + itoa(int(rec.FencingToken)) +
				") to run late behind earlier slots of the job, but not started before it lost leadership (delivery at-most-once)"
		}
		lost := r.skipRecord(t, s, SkipLockLost, why)
		lost.CorrelationID = rec.CorrelationID
		if !r.addWork() {
			return redo
		}
		go func() {
			defer r.wg.Done()
			retry, unrecorded := r.retryLost(t, j, rec)
			if retry {
				// The attempt the claim names ended, recorded: what was
				// lost is its retry (attack 28, F5: the record read as a
				// cut attempt).
				lost.Attempt, lost.Error = rec.Attempt+1, lostRetryWhy(rec)
				log.Warn("retry left by the previous leader: recorded as lost, not run (at-most-once)", "scheduled_time", o.Time,
					"attempt", lost.Attempt, "previous_node", rec.Node)
			} else {
				if !rec.Queued {
					lost.Attempt = rec.Attempt
				}
				if unrecorded {
					// The cut attempt's record, under its run ID: the key its
					// leader would have written (attack 31, M2: a new run ID
					// and no attempt number hid which attempt was cut).
					lost.RunID = rec.RunID
				}
				log.Warn("slot left unfinished by the previous leader: recorded as lost (at-most-once)", "scheduled_time", o.Time,
					"attempt", lost.Attempt, "run_id", lost.RunID, "previous_node", rec.Node)
			}
			<-homed
			r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipLockLost).Inc()
			r.write(t, lost, log, func(b []byte) error { // the record closes the claim
				return r.o.Coord.FinishSlot(t.Context(), t, j.ID, s.Time, lost.RunID, b, time.Time{}, r.o.KeepRuns, r.o.MaxRunAge)
			})
		}()
	}
	return redo
}

// retryLost says whether an at-most-once slot's claim rec, left open by
// an older term, names an attempt whose record was written: one whose
// slot stays claimed after its record only while its retry waits out the
// backoff (a slot's last attempt is recorded with its claim's close). An
// unreadable answer counts as no: the attempt reads as cut, as before.
// unrecorded is true only when the attempt is known to have no record:
// its key is then free for the record of its cut.
func (r *Runner) retryLost(t *coord.Term, j *Job, rec Record) (lost, unrecorded bool) {
	if rec.Queued || rec.RunID == "" {
		return false, false
	}
	recorded, err := r.o.Coord.HasRun(t.Context(), j.ID, rec.RunID)
	return err == nil && recorded, err == nil && !recorded
}

// lostRetryWhy says that the retry of the attempt claim names, which
// waited out its backoff, was lost with its leader (delivery at-most-once).
func lostRetryWhy(claim Record) string {
	return "retry (attempt " + itoa(claim.Attempt+1) + ") of a failed attempt, left waiting out its backoff by " + claim.Node +
		" (fencing token " + itoa(int(claim.FencingToken)) + "), which lost leadership before starting it: not run (delivery at-most-once)"
}

// takenOverRecord is the record of the attempt an older term left
// running (claim: a slot's or a manual trigger request's, as read), which
// this term runs again, as attempt next, under delivery at-least-once:
// skipped, reason lock_lost, as the at-most-once record of a lost slot,
// with the attempt's number, correlation ID and run ID as the claim names
// them. Its leader's own record of it is refused on its stale fencing
// token: before, a slot's history showed attempts 2, 4, 6 and nothing of
// 1, 3, 5 (attack 25, W6). Under the attempt's run ID, its key is the one
// its leader would have written. False for a queued claim: it names no
// attempt that started. Not counted in pacer_job_skipped_total: the slot
// runs again.
func (r *Runner) takenOverRecord(t *coord.Term, s Slot, claim Record, next int) (Record, bool) {
	if claim.Queued || claim.RunID == "" {
		return Record{}, false
	}
	why := "left running by " + claim.Node + " (fencing token " + itoa(int(claim.FencingToken)) +
		"), which lost leadership before recording its end: run again as attempt " + itoa(next) + " (delivery at-least-once)"
	lost := r.skipRecord(t, s, SkipLockLost, why)
	lost.RunID, lost.CorrelationID, lost.Attempt = claim.RunID, claim.CorrelationID, claim.Attempt
	lost.Manual, lost.TriggerID = claim.Manual, claim.TriggerID
	return lost, true
}

// recordWithTakeover returns the record of the attempt claim names
// (takenOverRecord) for the takeover of its slot or request to write, or
// nil when there is none to write with it: a queued claim, or an attempt
// recorded already (by its leader, as when its drain timeout cut it; or by
// a previous taker that wrote it alone), so each attempt has one record.
// Its leader is fenced, so the read stands. When the read fails, the
// record is written on its own instead (recordTakenOver).
func (r *Runner) recordWithTakeover(t *coord.Term, s Slot, claim Record, next int) *Record {
	lost, ok := r.takenOverRecord(t, s, claim, next)
	if !ok {
		return nil
	}
	recorded, err := r.o.Coord.HasRun(t.Context(), s.Job.ID, lost.RunID)
	switch {
	case err != nil:
		r.recordTakenOver(t, s, lost)
		return nil
	case recorded:
		return nil
	}
	return &lost
}

// recordTakenOver writes lost (takenOverRecord) on its own, unless a
// record of the attempt is found: when the takeover cannot carry it
// (recordWithTakeover's read failed; the term stopped firing before a
// slot's takeover). It is called from the run, which Stop waits for, and
// writes in a goroutine that Stop waits for too.
func (r *Runner) recordTakenOver(t *coord.Term, s Slot, lost Record) {
	r.wg.Add(1) // the caller's count holds the group above zero
	log := r.log.With("job", s.Job.ID, "correlation_id", lost.CorrelationID)
	go func() {
		defer r.wg.Done()
		wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: time.Second})
		for try := 0; ; try++ {
			recorded, err := r.o.Coord.HasRun(t.Context(), s.Job.ID, lost.RunID)
			switch {
			case err == nil && recorded:
				return
			case err == nil:
				r.record(t, lost, log)
				return
			case try == 4 || t.Context().Err() != nil || !backoff.Sleep(t.Context(), wait.Next()):
				log.Warn("attempt taken over not recorded: could not read whether its leader recorded it",
					"scheduled_time", s.Time, "attempt", lost.Attempt, "run_id", lost.RunID, "error", err)
				return
			}
		}
	}()
}

// redelivery is a slot an older term claimed and never finished, to run
// again under at-least-once: its claim, as read and decoded.
type redelivery struct {
	slot  Slot
	rec   Record
	claim []byte
}

// redeliver runs a slot an older term left unfinished, taking its claim
// over: as the next attempt, or as attempt 1 if its claim says it was
// queued and never started (Record.Queued). The retry budget goes on from
// the claim's: a retry left counts against it, a re-run of a cut attempt
// does not (Record.Reruns). A retry the previous leader
// left (Record.RetryAt) starts when its backoff ends, not before
// (awaitRetry). A paused job's slot does not run: it is closed with a
// skip record. A slot that runs again has the attempt its claim names
// recorded in its takeover's write (takenOverRecord): a second write, as
// before, was lost when the leader that took the slot over was lost
// within milliseconds. It reports whether the slot was left,
// not started, to the shard's next leader: this term stopped firing while
// its retry waited.
func (r *Runner) redeliver(ctx context.Context, t *coord.Term, d redelivery, sr *slotRun) (left bool) {
	j := d.slot.Job
	if !d.rec.RetryAt.IsZero() {
		if run, left := r.awaitRetry(ctx, t, d, sr); !run {
			return left
		}
	}
	if paused, _ := r.JobState(j.ID); paused {
		r.closeUnrun(t, j, []Record{{ScheduledTime: d.slot.Time, CorrelationID: d.rec.CorrelationID}}, stopPaused)
		return false
	}
	first, reruns := d.rec.takenOver()
	how := claimHow{prev: d.claim, reruns: reruns, lost: r.recordWithTakeover(t, d.slot, d.rec, first)}
	r.runSlotFrom(ctx, t, d.slot, d.rec.CorrelationID, nil, how, first, sr)
	return false
}

// awaitRetry waits until the retry the previous leader left of d's slot
// is due (Record.RetryAt), and reports whether it is to run (and if not,
// whether the slot is left to the shard's next leader), as the backoff
// between attempts on one leader does (S3: it ran at the
// takeover, before its backoff had passed). A pause of the job, or a
// reload that changes or removes it, ends the wait, and the slot, its
// retry not started, is closed with a skip record (closeUnrun), as is a
// slot replaced meanwhile (overlap replace). When this term stops firing
// (a hand-over, a stop) or ends, the claim is left open as it is, due time
// and all: the shard's next leader waits out what is left.
func (r *Runner) awaitRetry(ctx context.Context, t *coord.Term, d redelivery, sr *slotRun) (run, left bool) {
	wait := d.rec.RetryAt.Sub(wallNow())
	if wait <= 0 {
		return true, false
	}
	sr.setPhase(phaseRetry)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var cause error
	select {
	case <-timer.C:
		return true, false
	case <-t.FiringStopped():
		return false, true
	case <-ctx.Done():
		cause = context.Cause(ctx)
	case <-sr.retries.Done():
		cause = context.Cause(sr.retries)
	}
	var stop *retryStop
	if t.Draining() || !errors.As(cause, &stop) || stop == stopStopping {
		return false, true // the next leader decides the slot
	}
	r.log.Warn("retry left by the previous leader not started", "job", d.slot.Job.ID, "scheduled_time", d.slot.Time,
		"attempt", d.rec.Attempt+1, "reason", stop.reason, "detail", stop.detail)
	r.closeUnrun(t, d.slot.Job, []Record{{ScheduledTime: d.slot.Time, CorrelationID: d.rec.CorrelationID}}, stop)
	return false, false
}

// inTurn is the run of a job's re-delivered slots (redo, in slot order),
// one after the other, then next (the catch-up's late slots of the job, or
// nil): registered as one run of the job, it is the job's running attempt
// from the start of the term, so that under overlap forbid no two attempts
// of the job run at once here, and the scheduler's slots due meanwhile are
// skipped as overlaps, as on one leader; under overlap replace, the
// scheduler's next slot ends it, and the slots it had not started are
// closed as replaced (closeUnrun). It waits for homed before the first.
// When the term stops firing, the re-delivered slots not started yet do
// not start, nor do those of next (that a retry left meanwhile, awaitRetry
// or runSlotFrom, would precede): their claims stay open, and the shard's
// next leader runs them in turn (attack 25, W13: a queued slot of next
// ran in the drain, before the retry of an earlier slot left to the next
// leader).
func (r *Runner) inTurn(t *coord.Term, j *Job, redo []redelivery, homed <-chan struct{}, held heldBack, next func(context.Context, *slotRun)) func(context.Context, *slotRun) {
	return func(ctx context.Context, sr *slotRun) {
		<-homed
		var busy []span // of the queued slots a hand-over left, taken from their own time
		if sr.late != nil && next == nil {
			// The slots the scheduler fired while these ran run after
			// them (attack 28, F2: they were skipped as overlaps).
			defer func() { r.runLate(ctx, t, j, sr, busy) }()
		}
		for i, d := range redo {
			if t.Draining() && ctx.Err() == nil {
				return
			}
			if ctx.Err() != nil {
				unrun := make([]Record, 0, len(redo)-i)
				for _, u := range redo[i:] {
					unrun = append(unrun, Record{ScheduledTime: u.slot.Time, CorrelationID: u.rec.CorrelationID})
				}
				r.closeUnrun(t, j, unrun, context.Cause(ctx))
				break
			}
			began := wallNow()
			if r.redeliver(ctx, t, d, sr) {
				return
			}
			if d.rec.Queued && held.handedOver(d.rec.FencingToken) {
				busy = append(busy, span{d.slot.Time, d.slot.Time.Add(wallNow().Sub(began))})
			}
		}
		if next != nil {
			next(ctx, sr) // closes its claims itself if ctx ended
		}
	}
}

// handedOverAll says whether every slot of redo is one a graceful
// hand-over left claimed to run late, queued, never started: a late slot
// the next leader runs as the leader before would have, not an attempt of
// a dead leader run again.
func handedOverAll(redo []redelivery, held heldBack) bool {
	for _, d := range redo {
		if !d.rec.Queued || !held.handedOver(d.rec.FencingToken) {
			return false
		}
	}
	return len(redo) > 0
}

// addWork counts a goroutine that Stop waits for; false once stopped.
func (r *Runner) addWork() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.wg.Add(1)
	return true
}
