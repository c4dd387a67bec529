package runner

// Run records and skip records: what each slot decided, written under
// the fencing guard (Record, record, skipAsync), and the skip reasons.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
)

// Skip reasons: the values of pacer_job_skipped_total's reason label and of
// a skip record's reason.
const (
	SkipOverlap          = "overlap"
	SkipMisfire          = "misfire"
	SkipPaused           = "paused"
	SkipLockLost         = "lock_lost"
	SkipClaimedElsewhere = "claimed_elsewhere"
	SkipTooOld           = "too_old" // before the job's kept claims (a wrong clock): may have run, so not run again
	SkipExpired          = "expired" // a manual trigger not decided within Options.TriggerExpiry
	// SkipNotInJobSet: the leader at the slot's time did not have the job,
	// or had it defined differently (replicas with different configs).
	SkipNotInJobSet = "not_in_job_set"

	// Reasons a retry was not started; the record is the slot's last.
	SkipReloaded  = "reloaded"   // the job was removed or changed by a config reload
	SkipStopping  = "stopping"   // the runner is shutting down
	SkipTreeAlive = "tree_alive" // processes of the previous attempt could not be confirmed dead
)

// Record is what is stored in etcd for an attempt or a skipped slot.
type Record struct {
	Job           string    `json:"job"`
	ScheduledTime time.Time `json:"scheduled_time"`
	RunID         string    `json:"run_id"`
	CorrelationID string    `json:"correlation_id"`
	TraceID       string    `json:"trace_id,omitempty"`
	Node          string    `json:"node"`
	FencingToken  int64     `json:"fencing_token"`
	Attempt       int       `json:"attempt,omitempty"`
	Manual        bool      `json:"manual,omitempty"`
	TriggerID     string    `json:"trigger_id,omitempty"` // the manual trigger request run or skipped
	// State is "running", an outcome, or "skipped".
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"` // why a slot was skipped
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
	Duration string    `json:"duration,omitempty"`
	Error    string    `json:"error,omitempty"`
	Output   string    `json:"output,omitempty"`
	Progress string    `json:"progress,omitempty"`
	// ProcessesLeft names processes of the attempt that could not be
	// confirmed dead when it ended; no retry starts after such an attempt.
	ProcessesLeft string `json:"processes_left,omitempty"`

	// ScheduledUntil and Slots, on a skip record for several slots of the
	// job's schedule (a misfire catch-up): the last of them, and how many
	// there are from ScheduledTime through ScheduledUntil.
	ScheduledUntil time.Time `json:"scheduled_until,omitzero"`
	Slots          int       `json:"slots,omitempty"`

	// Queued, on a claim a catch-up made to run a slot late behind an
	// earlier one of the job, says that it has not started yet: the claim
	// is rewritten without it when it starts, so that a leader that finds
	// it open can tell a slot never started from one cut off mid-run.
	Queued bool `json:"queued,omitempty"`

	// RetryAt, on a claim a leader left open with the slot's next attempt
	// owed (a retry left to the shard's next leader, delivery
	// at-least-once), is when that attempt is due: when the backoff
	// after the failed attempt ends, by the leaving leader's clock. The
	// next leader waits until then (redeliver), as one leader would have.
	RetryAt time.Time `json:"retry_at,omitzero"`

	// Reruns, on a slot's claim (or a trigger request's), counts the
	// slot's attempts so far that ran again an attempt cut off by its
	// leader's going (delivery at-least-once), not a failed one: they do
	// not use up the retry budget. A slot thus gets retries.max + 1
	// attempts that ran to an answer, plus one re-run for each attempt
	// cut off, whichever leaders run them (attack 25, W10: a leader that
	// took a slot over started its retry budget again).
	Reruns int `json:"reruns,omitempty"`

	// claimed, on a claim a catch-up made (claimMissed), is when its
	// claim was written, kept until the run's span starts, for its
	// pacer.claim span. Not stored.
	claimed *claimTimes
}

// takenOver is how a leader that takes over an open claim c goes on: the
// attempt it runs first, and the re-runs counted before that attempt. A
// retry left (RetryAt) counts against the retry budget; an attempt cut
// off is run again, as a re-run, which does not; a claim queued behind an
// earlier slot never started, and runs as attempt 1.
func (c *Record) takenOver() (first, reruns int) {
	switch {
	case c.Queued:
		return max(c.Attempt, 1), c.Reruns
	case c.RetryAt.IsZero():
		return max(c.Attempt, 1) + 1, c.Reruns + 1
	}
	return c.Attempt + 1, c.Reruns
}

// claimTimes is when a claim's write started and ended.
type claimTimes struct{ start, end time.Time }

// record stores an attempt's or skipped slot's record. It uses a fresh
// context: the run's own may be cancelled, but the fencing guard still
// decides whether the write lands.
func (r *Runner) record(t *coord.Term, rec Record, log *slog.Logger) {
	_ = r.write(t, rec, log, func(b []byte) error {
		return r.o.Coord.RecordRun(context.Background(), t, rec.Job, rec.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
	})
}

// write stores rec with put and returns put's last error. A write that
// fails for a reason other than lost leadership or a trigger request or
// slot decided already (etcd slow or electing) is retried while the term
// lives, for up to recordPatience. A record etcd refuses as it is (too
// large) is written again at once without its texts (stripped): its
// outcome is kept, and a slot's claim is closed, never left open.
func (r *Runner) write(t *coord.Term, rec Record, log *slog.Logger, put func([]byte) error) error {
	return r.writeFor(t, rec, log, recordPatience, put)
}

// writeFor is write with its patience: 0 retries while the term lives and
// the runner runs, with one WARN line once recordPatience has passed (a
// slot's last record, or a job's skips: until they are written, the slot
// is not decided, and a later leader finds it so only if the term ends).
func (r *Runner) writeFor(t *coord.Term, rec Record, log *slog.Logger, patience time.Duration, put func([]byte) error) error {
	b, err := encodeRecord(&rec)
	if err != nil {
		log.Error("run record not encodable", "run_id", rec.RunID, "error", err)
		return err
	}
	stripped := false
	give, warned := time.Now().Add(patience), false
	if patience == 0 {
		give = time.Now().Add(recordPatience)
	}
	// Waits end early when the term ends or the runner stops.
	wctx, cancel := context.WithCancel(r.stopCtx)
	defer cancel()
	defer context.AfterFunc(t.Context(), cancel)()
	wait := backoff.New(transientPolicy)
	for {
		if err = put(b); err == nil {
			return nil
		}
		if errors.Is(err, coord.ErrSlotTaken) || errors.Is(err, coord.ErrSlotTooOld) {
			return err // a skip of a slot decided already: the caller says so
		}
		if coord.IsRefused(err) {
			r.o.Metrics.RecordsRefused.Inc()
			if stripped {
				log.Error("run record refused by etcd, its texts cut too: not written", "run_id", rec.RunID, "state", rec.State,
					"bytes", len(b), "error", err)
				return err
			}
			log.Error("run record refused by etcd: written again with its texts cut", "run_id", rec.RunID, "state", rec.State,
				"bytes", len(b), "error", err)
			rec, stripped = strip(rec, len(b), err), true
			if b, err = encodeRecord(&rec); err != nil {
				return err
			}
			continue
		}
		if errors.Is(err, coord.ErrNotLeader) || errors.Is(err, coord.ErrTriggerDecided) || t.Context().Err() != nil ||
			patience > 0 && time.Now().After(give) {
			log.Warn("run record not written", "run_id", rec.RunID, "state", rec.State, "error", err)
			return err
		}
		if patience == 0 && !warned && time.Now().After(give) {
			warned = true
			log.Warn("run record not written yet: retrying while this replica leads", "run_id", rec.RunID, "state", rec.State,
				"scheduled_time", rec.ScheduledTime, "since", recordPatience, "error", err)
		}
		if !backoff.Sleep(wctx, wait.Next()) && r.stopCtx.Err() != nil {
			log.Warn("run record not written: runner stopping", "run_id", rec.RunID, "error", err)
			return err
		}
	}
}

// strip returns rec without the texts that made etcd refuse it (n bytes
// encoded, refused with err): its output and progress are dropped, its
// error and processes_left cut to their first words, after a note that
// says so. Whatever made the record too large, the stripped one is about
// a kilobyte.
func strip(rec Record, n int, err error) Record {
	note := fmt.Sprintf("[run record of %d bytes refused by etcd (%v): output and progress dropped, error cut]", n, err)
	if rec.Error != "" {
		note += " " + truncate(rec.Error, strippedTextBytes)
	}
	rec.Error, rec.Output, rec.Progress = note, "", ""
	rec.ProcessesLeft = truncate(rec.ProcessesLeft, strippedTextBytes)
	return rec
}

// strippedTextBytes is how much of its error and processes_left a
// stripped record keeps.
const strippedTextBytes = 512

// transientPolicy spaces out the tries of a claim or record write that
// failed while etcd was slow or electing a leader.
var transientPolicy = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// recordPatience bounds how long a record write is retried.
var recordPatience = 30 * time.Second // a var for tests

// skipAsync decides that a slot will not run: its skip record and the
// mark that the slot is decided (in the job's claim key) are one write
// (SkipSlot), as a run's claim is, so no later term of the shard, after a
// failover or a hand-over, decides the slot again (runs it, or skips it
// again as missed). A slot found decided already is left as it is; one
// whose term ended before the write landed is the next leader's to
// decide. Counted and logged once decided. Called with r.mu held.
//
// A job's skips are written one after the other, in slot order, by one
// goroutine: while one is being written, the job's later skips with the
// same reason and detail wait as one record (scheduled_until, slots).
// While etcd refuses writes (out of space, attack 16's G7) a job skipped
// every second so has one write retrying, not one a slot, and its records
// are written once etcd takes writes again, however long that took, as
// long as the term lives (its end leaves the slots to the next leader's
// catch-up, which records them).
func (r *Runner) skipAsync(t *coord.Term, s Slot, reason, why string) {
	if q := r.skips[s.Job.ID]; q != nil && q.term == t {
		q.add(s, reason, why)
		return
	}
	q := &skipQueue{term: t, job: s.Job}
	q.add(s, reason, why)
	r.skips[s.Job.ID] = q
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.writeSkips(q)
	}()
}

// skipQueue is a job's skips of one term not yet written, in slot order:
// consecutive ones with the same reason and detail are one record.
type skipQueue struct {
	term  *coord.Term
	job   *Job
	skips []skipRange
}

type skipRange struct {
	reason, why string
	first, last time.Time
	n           int
}

func (q *skipQueue) add(s Slot, reason, why string) {
	if n := len(q.skips); n > 0 {
		if last := &q.skips[n-1]; last.reason == reason && last.why == why && s.Time.After(last.last) {
			last.last = s.Time
			last.n++
			return
		}
	}
	q.skips = append(q.skips, skipRange{reason: reason, why: why, first: s.Time, last: s.Time, n: 1})
}

// writeSkips writes q's skips until none is left.
func (r *Runner) writeSkips(q *skipQueue) {
	t, job := q.term, q.job
	log := r.log.With("job", job.ID)
	for {
		r.mu.Lock()
		if len(q.skips) == 0 {
			if r.skips[job.ID] == q {
				delete(r.skips, job.ID)
			}
			r.mu.Unlock()
			return
		}
		sk := q.skips[0]
		q.skips = q.skips[1:]
		r.mu.Unlock()

		rec := r.skipRecord(t, Slot{Job: job, Time: sk.first}, sk.reason, sk.why)
		if sk.n > 1 {
			rec.ScheduledUntil, rec.Slots = sk.last.UTC(), sk.n
		}
		tries := 0
		err := r.writeFor(t, rec, log, 0, func(b []byte) error {
			tries++
			return r.o.Coord.SkipSlot(context.Background(), t, job.ID, sk.last, rec.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
		})
		if errors.Is(err, coord.ErrSlotTooOld) && tries > 1 {
			// Its first tries failed (etcd refused writes), and a later
			// slot of the job was claimed meanwhile, by this term: no
			// later leader looks back at these slots, so the record is
			// written without a mark.
			err = r.writeFor(t, rec, log, 0, func(b []byte) error {
				return r.o.Coord.RecordRun(context.Background(), t, job.ID, rec.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
			})
		}
		switch {
		case err == nil:
			r.o.Metrics.JobSkipped.WithLabelValues(job.ID, sk.reason).Add(float64(sk.n))
			if sk.n > 1 {
				log.Warn("slot skipped", "scheduled_time", sk.first.UTC(), "scheduled_until", sk.last.UTC(), "slots", sk.n,
					"reason", sk.reason, "detail", sk.why, "correlation_id", rec.CorrelationID)
			} else {
				log.Warn("slot skipped", "scheduled_time", sk.first.UTC(), "reason", sk.reason, "detail", sk.why, "correlation_id", rec.CorrelationID)
			}
		case errors.Is(err, coord.ErrSlotTaken), errors.Is(err, coord.ErrSlotTooOld):
			log.Debug("slot decided already: not skipped", "scheduled_time", sk.last.UTC(), "reason", sk.reason, "error", err)
		}
	}
}

func (r *Runner) skipRecord(t *coord.Term, s Slot, reason, why string) Record {
	now := wallNow().UTC()
	return Record{Job: s.Job.ID, ScheduledTime: s.Time.UTC(), RunID: observability.NewRunID(), Node: r.o.Node,
		CorrelationID: observability.NewCorrelationID(), // of its own, unless the caller's slot or request has one
		FencingToken:  t.Token, State: "skipped", Reason: reason, Error: r.o.Sanitize(why), Start: now, End: now}
}

// truncate keeps at most the first n bytes of s (cut between words, see
// linesplit.KeepWords) and ends it with a note saying how many bytes were cut. A
// plugin that cut its output already ends it with the same note, which is
// kept and whose count grows by what is cut here.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	body, cut := s, int64(0)
	if m := truncatedNote.FindStringSubmatchIndex(s); m != nil {
		if c, err := strconv.ParseInt(s[m[2]:m[3]], 10, 64); err == nil {
			body, cut = s[:m[0]], c
		}
	}
	keep := linesplit.KeepWords(body, n)
	return body[:keep] + fmt.Sprintf("\n[truncated %d bytes]", cut+int64(len(body)-keep))
}

// truncatedNote is the last line of an output that was cut.
var truncatedNote = regexp.MustCompile(`\n\[truncated (\d+) bytes\]$`)
