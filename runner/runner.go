package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/shard"
	"github.com/pacerun/pacer/sdk/proctree"
)

// Coordinator is what the Runner needs from cluster coordination.
type Coordinator interface {
	// TermOf returns the current term of a shard, or nil when this replica
	// does not lead it; Terms every current term.
	TermOf(shard int) *coord.Term
	Terms() []*coord.Term
	// TakeHandOver reads and removes the mark the shard's previous leader
	// left when it handed the shard over to t's.
	TakeHandOver(ctx context.Context, t *coord.Term) (coord.HandOver, bool, error)
	Claim(ctx context.Context, t *coord.Term, job string, slot time.Time, claim []byte) error
	Reclaim(ctx context.Context, t *coord.Term, job string, slot time.Time, prev, claim []byte) error
	ClaimRecording(ctx context.Context, t *coord.Term, job string, slot time.Time, claim []byte, runID string, rec []byte) error
	SkipSlot(ctx context.Context, t *coord.Term, job string, slot time.Time, runID string, rec []byte) error
	RecordRun(ctx context.Context, t *coord.Term, job, runID string, rec []byte, keep int, maxAge time.Duration) error
	FinishSlot(ctx context.Context, t *coord.Term, job string, slot time.Time, runID string, rec []byte, keep int, maxAge time.Duration) error
	CloseSlot(ctx context.Context, t *coord.Term, job string, slot time.Time) error
	// Claims returns the claims of every job of the term's shard, as its
	// leader knows them.
	Claims(ctx context.Context, t *coord.Term) (map[string]coord.JobClaims, error)
	SlotValue(ctx context.Context, job string, slot time.Time) ([]byte, error)
	RunTrigger(ctx context.Context, t *coord.Term, tr coord.Trigger, claim []byte) (int64, error)
	SkipTrigger(ctx context.Context, t *coord.Term, tr coord.Trigger, runID string, rec []byte, keep int, maxAge time.Duration) error
	FinishTrigger(ctx context.Context, t *coord.Term, job, id string, rev int64, runID string, rec []byte, keep int, maxAge time.Duration) error
	GetTrigger(ctx context.Context, job, id string) (coord.Trigger, bool, error)
	// StoredJobs and ForgetJob find and remove the keys of removed jobs.
	StoredJobs(ctx context.Context, withRuns bool) ([]string, error)
	ForgetJob(ctx context.Context, t *coord.Term, job string) error
}

// TaskRunner runs one task attempt in a plugin.
type TaskRunner interface {
	Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error)
}

var (
	_ Coordinator = (*coord.Coordinator)(nil)
	_ TaskRunner  = (*pluginhost.Host)(nil)
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
)

// Options configure a Runner.
type Options struct {
	Node    string
	Coord   Coordinator
	Tasks   TaskRunner
	Logger  *slog.Logger
	Metrics *observability.Metrics
	Tracer  trace.Tracer
	// Sanitize cleans text that leaves the runner (records, span attributes).
	// Default: observability.DefaultSanitizer's, never none.
	Sanitize func(string) string
	// MaxOutputBytes bounds the output kept in a run record. Default 64 KiB.
	MaxOutputBytes int
	// KeepRuns is how many records are kept per job (default 100), and
	// MaxRunAge how long (default 30 days).
	KeepRuns  int
	MaxRunAge time.Duration
	// TriggerExpiry is how long a manual trigger request may wait to be
	// decided (no leader, or a job the leader does not have) before it is
	// recorded as skipped, reason expired. Default DefaultTriggerExpiry.
	TriggerExpiry time.Duration
	// JobSets, if set, keeps which job set each leader ran when: this
	// runner records it while leading, and reads it to give missed slots
	// their true reason (jobset.go).
	JobSets JobSetStore
	// OnJobSet, if set, hears of the job set after every SetJobs.
	OnJobSet func(coord.JobSet)
	// ReplaceWait bounds how long a slot that replaces a running one
	// (overlap: replace, or a manual trigger of such a job) waits for the
	// replaced attempt to end, so that no process of it is alive when the
	// new one starts. Past it, or when the replaced attempt's processes
	// could not be confirmed dead, the new slot does not run: it is
	// recorded as skipped, reason tree_alive. Default 30s; longer than
	// the plugin host's cancel grace plus its tree timeout.
	ReplaceWait time.Duration
	// SweepInterval is how often the leader looks for the keys of jobs
	// that are no longer configured, and removes those it found at the
	// look before (sweep.go). Default 5m.
	SweepInterval time.Duration
	// JobSetsAgree, if set, says whether every live replica runs this
	// replica's job set. While they do not, the sweep removes nothing: a
	// job missing here may be another replica's (cluster.job_set_mismatch
	// warn, or a config change rolled out one replica at a time), and
	// that replica may lead next.
	JobSetsAgree func() bool
	// Shards is the number of shards (cluster.shards); below 1 means 1.
	// The runner schedules only the jobs of the shards it leads.
	Shards int
}

// DefaultTriggerExpiry is Options.TriggerExpiry's default.
const DefaultTriggerExpiry = 10 * time.Minute

// Runner fires slots: claim, run (with retries), record.
type Runner struct {
	o     Options
	log   *slog.Logger
	sched *Scheduler

	stopCtx  context.Context // cancelled to abort every run
	stopRuns context.CancelFunc
	stopping context.Context // cancelled when Stop is called
	stop     context.CancelFunc

	mu       sync.Mutex
	stopped  bool
	jobs     map[string]*Job
	sorted   []*Job       // jobs by ID
	jobSet   coord.JobSet // of jobs
	paused   map[string]bool
	running  map[string]map[string]*slotRun // job ID -> key -> the slot's run
	triggers map[string]int64               // trigger ID -> token of the term deciding or running it (trigger.go)
	retiring map[string][]*Job              // removed by a reload while running: series to delete
	// pausesRead: SetPaused was called (the pause flags were read from
	// etcd at least once); until then whether a job is paused is unknown.
	pausesRead bool
	// home is, by shard, the term whose jobs' series this replica exports:
	// a job's metrics live on the leader of its shard (metrics.go).
	home    map[int]*coord.Term
	unhomed map[string]bool // jobs whose series go when their running runs end
	pending []coord.Trigger // trigger requests as last seen in etcd
	wg      sync.WaitGroup

	timeoutCauses sync.Map // time.Duration -> error (timeoutCause)

	// smu guards scheduled and every change of the scheduler's jobs. It is
	// never taken with mu held (the scheduler calls Fire, which takes mu,
	// with its own lock held).
	smu sync.Mutex
	// scheduled holds, by shard, the term whose jobs are in the scheduler:
	// a term's jobs join it when its catch-up is done, and leave when it
	// ends.
	scheduled map[int]*coord.Term
	// caughtUp holds, by shard, the term whose catch-up is done (guarded by
	// mu, as Fire reads it): a slot fires only under that term, so no claim
	// of the scheduler's comes before the catch-up's of an earlier slot.
	caughtUp map[int]*coord.Term

	triggerWaits map[string]bool // trigger IDs waiting for their job, logged once
	triggerTimer *time.Timer     // decides again when a waiting request expires
	triggerWake  time.Time       // when triggerTimer fires

	sweepOnce sync.Once // the sweep of removed jobs' keys starts with the first term
}

// slotRun is a slot being run: its attempts and the wait between them.
type slotRun struct {
	cancel context.CancelCauseFunc // ends the running attempt and the retries
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
}

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

// New returns a Runner. Call Start to begin scheduling.
func New(o Options) *Runner {
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = 64 << 10
	}
	if o.KeepRuns <= 0 {
		o.KeepRuns = 100
	}
	if o.MaxRunAge <= 0 {
		o.MaxRunAge = 30 * 24 * time.Hour
	}
	if o.TriggerExpiry <= 0 {
		o.TriggerExpiry = DefaultTriggerExpiry
	}
	if o.ReplaceWait <= 0 {
		o.ReplaceWait = 30 * time.Second
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Minute
	}
	if o.Shards < 1 {
		o.Shards = 1
	}
	if o.Sanitize == nil {
		o.Sanitize = observability.DefaultSanitizer().String
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		// A private registry nobody scrapes: a Runner without metrics
		// (tests, tools) still counts, it just is not read.
		o.Metrics = observability.MustNewMetrics("")
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopping, stop := context.WithCancel(context.Background())
	r := &Runner{o: o, log: o.Logger, stopCtx: ctx, stopRuns: cancel, stopping: stopping, stop: stop,
		jobs: map[string]*Job{}, paused: map[string]bool{},
		running: map[string]map[string]*slotRun{}, triggers: map[string]int64{}, triggerWaits: map[string]bool{},
		retiring: map[string][]*Job{}, scheduled: map[int]*coord.Term{}, caughtUp: map[int]*coord.Term{}, home: map[int]*coord.Term{}, unhomed: map[string]bool{}}
	r.sched = NewScheduler(r.Fire, r.missed)
	r.sched.onStepBack = func(d time.Duration) {
		r.log.Warn("wall clock stepped back; every job's next slot computed again from the new time",
			"step", d.Round(time.Millisecond))
	}
	// A job that will never fire is reported by SetJobs, whether or not
	// this replica leads its shard; the scheduler reports a one-off job
	// that fired.
	r.sched.onNever = func(j *Job, after time.Time, fired bool) {
		if fired {
			r.never(j, after, fired)
		}
	}
	return r
}

// SetJobs replaces the jobs, by ID; a job that stays keeps its slots, so
// no slot runs twice. The scheduler gets those of the shards this replica
// leads. A removed job's running attempts are cancelled; a changed job's
// run to their end. Neither gets another attempt: their pending retries
// are recorded as skipped (reason "reloaded").
func (r *Runner) SetJobs(jobs []*Job) {
	m := make(map[string]*Job, len(jobs))
	set := JobSetOf(jobs, r.o.Shards)
	r.mu.Lock()
	for _, j := range jobs {
		j.shard = shard.Of(j.ID, r.o.Shards)
		if old, ok := r.jobs[j.ID]; ok && sameJob(old, j) {
			j = old // unchanged: its slots in progress may retry
		}
		m[j.ID] = j
	}
	sorted := make([]*Job, 0, len(m))
	for _, j := range m {
		sorted = append(sorted, j)
	}
	slices.SortFunc(sorted, func(a, b *Job) int { return cmpString(a.ID, b.ID) })
	for id, old := range r.jobs {
		j, ok := m[id]
		switch {
		case !ok:
			for _, sr := range r.running[id] {
				sr.stopRetry(stopRemoved)
				sr.cancel(stopRemoved)
			}
		case j != old:
			for _, sr := range r.running[id] {
				sr.stopRetry(stopChanged)
			}
		}
	}
	old := r.jobs
	r.jobs, r.sorted = m, sorted
	changed := set.Fingerprint != r.jobSet.Fingerprint
	r.jobSet = set
	r.exportPausedLocked(old)
	list := make([]*Job, 0, len(m))
	for _, j := range jobs {
		list = append(list, m[j.ID])
		if r.homeLocked(m[j.ID].shard) {
			r.initJobMetrics(m[j.ID])
		}
	}
	for _, j := range old {
		r.retireLocked(j)
	}
	r.mu.Unlock()
	now := wallNow()
	for _, j := range list {
		if j.Schedule.Next(now).IsZero() {
			r.never(j, now, false)
		}
	}
	r.smu.Lock()
	r.sched.Set(slices.DeleteFunc(list, func(j *Job) bool { return r.scheduled[j.shard] == nil }))
	r.o.Metrics.ScheduledJobs.Set(float64(r.sched.Len()))
	r.smu.Unlock()
	r.decideTriggers() // requests that waited for a job added now
	if r.o.OnJobSet != nil {
		r.o.OnJobSet(set)
	}
	if changed && r.o.JobSets != nil {
		// A new epoch of every term: the leader's job set changed.
		since := wallNow()
		for _, t := range r.o.Coord.Terms() {
			r.spawn(func() { r.recordEpoch(t, set, since) })
		}
	}
}

// sameJob reports whether a reload left a job as it was.
func sameJob(a, b *Job) bool {
	x, y := *a, *b
	x.Schedule, y.Schedule = nil, nil // Spec and Timezone say the same
	return reflect.DeepEqual(x, y)
}

// shardJobs returns the jobs of a shard, sorted by ID.
func (r *Runner) shardJobs(n int) []*Job {
	return slices.DeleteFunc(r.Jobs(), func(j *Job) bool { return j.shard != n })
}

// Shard returns the shard of a job ID.
func (r *Runner) Shard(job string) int { return shard.Of(job, r.o.Shards) }

// Scheduled returns how many jobs the scheduler holds: those of the shards
// this replica leads.
func (r *Runner) Scheduled() int { return r.sched.Len() }

// exportPausedLocked sets pacer_job_paused for every job of the shards
// this replica leads and drops the per-job gauges of jobs that were
// removed, so that no alert keeps firing on a job that no longer exists
// (the last-success timestamp of a removed job would make it look stale
// forever).
func (r *Runner) exportPausedLocked(old map[string]*Job) {
	m := r.o.Metrics
	for id := range old {
		if _, ok := r.jobs[id]; !ok {
			m.JobPaused.DeleteLabelValues(id)
			m.LastSuccess.DeleteLabelValues(id)
		}
	}
	for id, j := range r.jobs {
		if !r.homeLocked(j.shard) {
			continue
		}
		v := 0.0
		if r.paused[id] {
			v = 1
		}
		m.JobPaused.WithLabelValues(id).Set(v)
	}
}

// Jobs returns the registered jobs, sorted by ID.
func (r *Runner) Jobs() []*Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sorted)
}

// Job returns a registered job.
func (r *Runner) Job(id string) (*Job, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j, ok := r.jobs[id]
	return j, ok
}

// JobState is what the runner knows of a job right now.
func (r *Runner) JobState(id string) (paused bool, running int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.paused[id], len(r.running[id])
}

// PausesRead reports whether the pause flags were read from etcd: until
// then (a replica that has not reached etcd) no job is known to be paused
// or active.
func (r *Runner) PausesRead() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pausesRead
}

// SetPaused replaces the set of paused jobs (kept in sync from etcd). A
// paused job's running attempts go on; its pending retries do not start
// (each is recorded as skipped, reason "paused").
func (r *Runner) SetPaused(p map[string]bool) {
	r.mu.Lock()
	r.paused, r.pausesRead = p, true
	r.exportPausedLocked(nil)
	for id, paused := range p {
		if paused {
			for _, sr := range r.running[id] {
				sr.stopRetry(stopPaused)
			}
		}
	}
	r.mu.Unlock()
}

// OnTransition hears of each term that starts (OnTerm, in its own
// goroutine) or ends (its shard's jobs leave the scheduler).
func (r *Runner) OnTransition(leading bool, t *coord.Term) {
	if leading {
		go r.OnTerm(t)
		return
	}
	r.mu.Lock()
	if r.caughtUp[t.Shard] == t {
		delete(r.caughtUp, t.Shard)
	}
	r.mu.Unlock()
	r.smu.Lock()
	if r.scheduled[t.Shard] == t {
		delete(r.scheduled, t.Shard)
		r.sched.Remove(func(j *Job) bool { return j.shard == t.Shard })
		total := r.sched.Len()
		r.o.Metrics.ScheduledJobs.Set(float64(total))
		r.log.Info("shard's jobs unscheduled", "shard", t.Shard, "scheduled", total)
	}
	r.smu.Unlock()
	r.leaveHome(t)
}

// OnTerm is called when this replica starts leading a shard: it applies
// the misfire policies of the shard's jobs (CatchUp), then schedules them
// from the instant the catch-up stopped looking, so no slot falls between
// the two, and runs trigger requests of the shard that waited for a leader.
func (r *Runner) OnTerm(t *coord.Term) {
	// The job set it leads with is recorded in the background: it only
	// explains missed slots to a later leader of the shard, and must not
	// hold up this one.
	set := r.JobSet()
	r.spawn(func() { r.recordEpoch(t, set, t.Since) })
	// The series of the shard's jobs are made while the catch-up's claims
	// are written (making 10,000 jobs' series takes longer than their
	// first claims), before anything is counted or run.
	start := wallNow()
	r.catchUp(t, start, func() { r.makeHome(t) })
	r.smu.Lock()
	if t.Context().Err() == nil && r.o.Coord.TermOf(t.Shard) == t {
		r.mu.Lock()
		r.caughtUp[t.Shard] = t
		r.mu.Unlock()
		r.scheduled[t.Shard] = t
		jobs := r.shardJobs(t.Shard)
		r.sched.Add(jobs, start)
		total := r.sched.Len()
		r.o.Metrics.ScheduledJobs.Set(float64(total))
		r.log.Info("shard's jobs scheduled", "shard", t.Shard, "jobs", len(jobs), "scheduled", total)
	}
	r.smu.Unlock()
	r.decideTriggers()
	r.sweepOnce.Do(func() {
		if r.addWork() {
			go func() {
				defer r.wg.Done()
				r.sweep()
			}()
		}
	})
}

// WaitIdle waits until no run of the shard's jobs is in progress here, or
// ctx ends. A replica handing a shard over calls it (coord Options.Drain).
func (r *Runner) WaitIdle(ctx context.Context, t *coord.Term) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		n := 0
		for id, runs := range r.running {
			if shard.Of(id, r.o.Shards) == t.Shard {
				n += len(runs)
			}
		}
		r.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			r.log.Warn("handing a shard over with runs still going", "shard", t.Shard, "runs", n)
			return
		case <-tick.C:
		}
	}
}

// spawn runs fn in a goroutine that Stop waits for, unless the runner is
// stopped.
func (r *Runner) spawn(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.wg.Go(fn)
}

// Start runs the scheduler until ctx is done.
func (r *Runner) Start(ctx context.Context) { r.sched.Run(ctx) }

// Stop stops firing new slots, records pending retries as skipped (reason
// "stopping") and waits for running attempts to finish. When ctx ends
// first, the remaining attempts are cancelled and Stop waits for them to
// return.
func (r *Runner) Stop(ctx context.Context) {
	if r.o.Coord != nil {
		for _, t := range r.o.Coord.Terms() {
			t.StopFiring() // from now on, the hand-over marks say
		}
	}
	r.mu.Lock()
	r.stopped = true
	if r.triggerTimer != nil {
		r.triggerTimer.Stop()
	}
	for _, runs := range r.running {
		for _, sr := range runs {
			sr.stopRetry(stopStopping)
		}
	}
	r.mu.Unlock()
	r.stop()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("drain timeout: cancelling running runs")
		r.stopRuns()
		<-done
	}
}

// missed is called by the scheduler when it could not fire for a while.
func (r *Runner) missed(j *Job, n int) {
	r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipMisfire).Add(float64(n))
	r.log.Warn("slots missed while the scheduler could not run", "job", j.ID, "missed", n)
}

// Fire starts a slot if this replica leads its shard and is not handing
// the shard over (the next leader runs the slots held back meanwhile). It
// never blocks.
func (r *Runner) Fire(s Slot) {
	t := r.o.Coord.TermOf(s.Job.shard)
	if t == nil || t.Draining() {
		return
	}
	r.mu.Lock()
	caughtUp := r.caughtUp[t.Shard] == t
	r.mu.Unlock()
	if !caughtUp {
		// The term's catch-up decides the slots due before it is done, and
		// the scheduler gets the shard's jobs from then on (OnTerm).
		r.log.Debug("slot of a shard whose catch-up is not done: left to it", "job", s.Job.ID, "scheduled_time", s.Time)
		return
	}
	r.start(t, s, "", nil)
}

// start applies pause and overlap policies and launches a slot's attempts.
// A manual trigger (tr != nil) has no scheduled slot to claim: deciding
// its request is its exactly-once guard, and it runs even while the job is
// paused.
func (r *Runner) start(t *coord.Term, s Slot, correlationID string, tr *trigger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	skip := r.skipAsync
	if tr != nil {
		skip = func(t *coord.Term, s Slot, reason, why string) { r.skipTriggerLocked(t, s, tr, reason, why) }
	}
	if r.paused[s.Job.ID] && tr == nil {
		skip(t, s, SkipPaused, "job is paused")
		return
	}
	var replaced []*slotRun
	if n := len(r.running[s.Job.ID]); n > 0 {
		switch s.Job.Overlap {
		case OverlapAllow:
			if s.Job.MaxConcurrency > 0 && n >= s.Job.MaxConcurrency {
				skip(t, s, SkipOverlap, fmt.Sprintf("%d runs already running (max_concurrency)", n))
				return
			}
		case OverlapReplace:
			for _, sr := range r.running[s.Job.ID] {
				sr.stopRetry(errReplaced)
				sr.cancel(errReplaced)
				replaced = append(replaced, sr)
			}
		default:
			skip(t, s, SkipOverlap, "previous run still running")
			return
		}
	}
	if correlationID == "" {
		correlationID = observability.NewCorrelationID()
	}
	ctx, sr, done := r.trackLocked(t, s.Job.ID)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer done()
		// Every process an attempt starts is gone before the next
		// attempt starts, a replacing one included.
		if len(replaced) > 0 {
			stop := awaitReplaced(ctx, replaced, r.o.ReplaceWait)
			if stop == nil && ctx.Err() != nil {
				stop = &retryStop{SkipOverlap, "replaced by a newer slot (overlap: replace) before it started"}
				if errors.Is(context.Cause(ctx), errLeadershipLost) || r.stopCtx.Err() != nil {
					return // unclaimed: the next leader decides the slot
				}
			}
			if stop != nil {
				r.mu.Lock()
				if !r.stopped {
					skip(t, s, stop.reason, stop.detail)
				}
				r.mu.Unlock()
				return
			}
		}
		r.runSlot(ctx, t, s, correlationID, tr, sr)
	}()
}

// trackLocked registers a slot's run in r.running, where overlap policies,
// pauses, reloads and Stop find it, and returns its context (ended by Stop's
// drain timeout, the end of the term, or replace) and the func that
// unregisters it. Called with r.mu held.
func (r *Runner) trackLocked(t *coord.Term, job string) (context.Context, *slotRun, func()) {
	key := observability.NewRunID() // identifies this slot's run in r.running
	ctx, cancel := context.WithCancelCause(r.stopCtx)
	stop := context.AfterFunc(t.Context(), func() { cancel(errLeadershipLost) })
	sr := &slotRun{cancel: cancel, attempt: make(chan struct{}, 1)}
	sr.retries, sr.stopRetry = context.WithCancelCause(context.Background())
	if r.running[job] == nil {
		r.running[job] = map[string]*slotRun{}
	}
	r.running[job][key] = sr
	return ctx, sr, func() {
		stop()
		cancel(nil)
		sr.stopRetry(nil)
		r.mu.Lock()
		delete(r.running[job], key)
		if len(r.running[job]) == 0 {
			delete(r.running, job)
			r.runEndedLocked(job)
		}
		r.mu.Unlock()
	}
}

// runTracked runs slots a new term found (the misfire catch-up's, or a
// slot the previous leader left running) on the calling goroutine, as one
// of the job's runs registered like a scheduled one: run gets its context
// and its retries. The caller counts it in r.wg.
func (r *Runner) runTracked(t *coord.Term, j *Job, run func(ctx context.Context, sr *slotRun)) {
	r.mu.Lock()
	ctx, sr, done := r.trackLocked(t, j.ID)
	// A reload between the term's look at the jobs and now was not seen.
	switch cur, ok := r.jobs[j.ID]; {
	case !ok:
		sr.stopRetry(stopRemoved)
	case cur != j:
		sr.stopRetry(stopChanged)
	}
	r.mu.Unlock()
	defer done()
	run(ctx, sr)
}

// goTracked is runTracked on a goroutine of its own; false once stopped.
func (r *Runner) goTracked(t *coord.Term, j *Job, run func(ctx context.Context, sr *slotRun)) bool {
	if !r.addWork() {
		return false
	}
	go func() {
		defer r.wg.Done()
		r.runTracked(t, j, run)
	}()
	return true
}

// Causes of a slot's context ending, other than the runner's own stop.
var (
	errLeadershipLost = errors.New("leadership lost")
	errReplaced       = &retryStop{SkipOverlap, "replaced by a newer slot (overlap: replace)"}
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
}

// runSlot claims a slot (or decides to run a trigger request) and runs its
// attempts.
func (r *Runner) runSlot(ctx context.Context, t *coord.Term, s Slot, correlationID string, tr *trigger, sr *slotRun) {
	first := 1
	if tr != nil {
		first = tr.first
	}
	r.runSlotFrom(ctx, t, s, correlationID, tr, claimHow{}, first, sr)
}

// claimHow is how runSlotFrom gets its slot's claim: a fresh claim (the
// zero value), a claim the catch-up made before (claimed), or the takeover
// of an older term's open claim (prev, delivery at-least-once).
type claimHow struct {
	claimed *Record
	prev    []byte
}

// runSlotFrom runs a slot's attempts from attempt first.
func (r *Runner) runSlotFrom(ctx context.Context, t *coord.Term, s Slot, correlationID string, tr *trigger, how claimHow, first int, sr *slotRun) {
	job := s.Job
	if d := jitterFor(job, s.Time); d > 0 && tr == nil {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
	}
	base := Record{Job: job.ID, ScheduledTime: s.Time.UTC(), CorrelationID: correlationID, Node: r.o.Node,
		FencingToken: t.Token, Manual: tr != nil}
	if tr != nil {
		base.TriggerID = tr.ID
	}
	log := r.log.With("correlation_id", correlationID, "job", job.ID)

	claim := base
	claim.State, claim.Start, claim.RunID, claim.Attempt = "running", wallNow().UTC(), observability.NewRunID(), first
	if how.claimed != nil {
		claim.RunID = how.claimed.RunID
	}
	// The first attempt's span starts before the claim, so the claim is
	// its child; a slot whose claim fails leaves that span, in error.
	firstAttempt := &attemptRun{slot: s, term: t, runID: claim.RunID, correlationID: correlationID, number: first}
	spanCtx, firstSpan := r.startRunSpan(ctx, firstAttempt)
	var err error
	switch {
	case how.claimed != nil: // claimed already
	case how.prev != nil:
		var b []byte
		if b, err = json.Marshal(claim); err == nil {
			err = r.o.Coord.Reclaim(spanCtx, t, job.ID, s.Time, how.prev, b)
		}
	default:
		err = r.claim(spanCtx, t, s, claim, tr)
	}
	if err != nil {
		reason := SkipLockLost
		switch {
		case errors.Is(err, coord.ErrSlotTaken), errors.Is(err, coord.ErrTriggerDecided):
			reason = SkipClaimedElsewhere
		case errors.Is(err, coord.ErrSlotTooOld):
			reason = SkipTooOld
		}
		firstSpan.SetAttributes(attribute.String("pacer.skip_reason", reason))
		firstSpan.SetStatus(codes.Error, "slot not claimed: "+err.Error())
		firstSpan.End()
		r.o.Metrics.JobSkipped.WithLabelValues(job.ID, reason).Inc()
		if reason == SkipClaimedElsewhere {
			// Another replica (or this one, in a race with misfire
			// catch-up) has the slot: nothing to record, it will.
			log.Debug("slot already claimed", "scheduled_time", s.Time)
			return
		}
		if reason == SkipTooOld {
			// Not silent: a record says why, though the slot may also
			// have a record of the run it had long ago.
			log.Warn("slot not run: older than the claims the cluster keeps, so it may have run; is a replica's clock wrong?",
				"scheduled_time", s.Time, "reason", reason, "error", err)
			r.record(t, r.skipRecord(t, s, reason, err.Error()), log)
			return
		}
		log.Warn("slot not run: claim failed", "scheduled_time", s.Time, "reason", reason, "error", err)
		return
	}

	var final Record
	var prev trace.SpanContext
	for attempt := first; ; attempt++ {
		sr.attempt <- struct{}{} // free unless a replacing slot is looking
		if attempt == first {
			final, prev = r.execute(spanCtx, firstSpan, firstAttempt, base)
		} else {
			a := &attemptRun{slot: s, term: t, runID: observability.NewRunID(), correlationID: correlationID, number: attempt, prev: prev}
			actx, span := r.startRunSpan(ctx, a)
			if tr != nil {
				r.reclaimTrigger(actx, t, tr, claim, a, log)
			}
			final, prev = r.execute(actx, span, a, base)
		}
		sr.attemptEnded(final)
		retry := final.State == observability.OutcomeFailure || final.State == observability.OutcomeTimeout ||
			final.State == observability.OutcomeCrashed
		if !retry || attempt > job.Retries.Max+first-1 || ctx.Err() != nil || t.Context().Err() != nil {
			break
		}
		r.record(t, final, log) // this attempt's; the last one is recorded with the slot's result
		if stop := r.retryStopped(s, tr, sr, final); stop != nil {
			final = r.retrySkipped(t, final, attempt+1, stop, log)
			break
		}
		wait := retryPolicy(job.Retries).Delay(attempt)
		log.Info("retrying", "attempt", attempt+1, "after", wait.Round(time.Millisecond), "previous_outcome", final.State)
		sleepUntilStopped(ctx, sr.retries, wait)
		if stop := r.retryStopped(s, tr, sr, final); stop != nil {
			final = r.retrySkipped(t, final, attempt+1, stop, log)
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	if tr != nil { // the request's claim ends with the run's last record
		r.write(t, final, log, func(b []byte) error {
			return r.o.Coord.FinishTrigger(context.Background(), t, job.ID, tr.ID, tr.rev, final.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
		})
		return
	}
	r.write(t, final, log, func(b []byte) error {
		return r.o.Coord.FinishSlot(context.Background(), t, job.ID, s.Time, final.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
	})
}

// reclaimTrigger makes a running trigger request's claim name attempt a,
// so that the run's row ("pacer runs", /api/v1/runs) shows the attempt
// that runs, not the first. A failure is only logged: the claim still
// holds the run, and its end is recorded either way.
func (r *Runner) reclaimTrigger(ctx context.Context, t *coord.Term, tr *trigger, claim Record, a *attemptRun, log *slog.Logger) {
	claim.RunID, claim.Attempt, claim.Start = a.runID, a.number, wallNow().UTC()
	req := tr.req
	req.Claim = &claim
	b, err := json.Marshal(req)
	if err == nil {
		cur := tr.Trigger
		cur.Revision = tr.rev
		var rev int64
		if rev, err = r.o.Coord.RunTrigger(ctx, t, cur, b); err == nil {
			tr.rev = rev
			return
		}
	}
	log.Warn("manual trigger's claim not updated to the attempt that runs", "attempt", a.number, "error", err)
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

// claim claims a slot (or decides to run a trigger request). A failure that is
// neither "taken" nor "not the leader" (etcd slow, electing, unreachable) is
// retried while the term lives, so a slot is not lost to a blip: if the
// term ends instead, the next leader's misfire catch-up finds the slot
// unclaimed. A retry that finds the slot taken checks whether the taken
// claim is this one, whose first attempt landed after all.
func (r *Runner) claim(ctx context.Context, t *coord.Term, s Slot, rec Record, tr *trigger) error {
	ctx, span := r.o.Tracer.Start(ctx, "pacer.claim", trace.WithAttributes(
		attribute.String("pacer.job.id", s.Job.ID), attribute.Int64("pacer.fencing_token", t.Token)))
	defer span.End()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// ctx ends with the term (Fire cancels it, catch-up runs on the term's).
	wait := backoff.New(transientPolicy)
	for try := 1; ; try++ {
		if tr != nil {
			err = r.claimTrigger(ctx, t, tr, rec, try)
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

// claimedBy reports whether a stored slot record is the claim of runID.
func claimedBy(stored []byte, runID string) bool {
	var rec Record
	return json.Unmarshal(stored, &rec) == nil && rec.RunID == runID
}

// attemptRun is one try at running a slot.
type attemptRun struct {
	slot          Slot
	term          *coord.Term
	runID         string
	correlationID string
	number        int
	prev          trace.SpanContext // the previous attempt's span, linked
}

// startRunSpan starts an attempt's root span, pacer.run, linked to the
// previous attempt's. Its attributes are set only when the span is
// recorded: building them costs every run, and a span nobody records (no
// exporter) keeps none.
func (r *Runner) startRunSpan(ctx context.Context, a *attemptRun) (context.Context, trace.Span) {
	job := a.slot.Job
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal)}
	if a.prev.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: a.prev,
			Attributes: []attribute.KeyValue{attribute.String("pacer.link", "previous attempt")}}))
	}
	ctx, span := r.o.Tracer.Start(ctx, "pacer.run", opts...)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("pacer.job.id", job.ID),
			attribute.String("pacer.run.id", a.runID),
			attribute.String("pacer.correlation_id", r.o.Sanitize(a.correlationID)),
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

// execute runs one attempt under its started span, ends the span and
// records the attempt. It returns the record and the span's context.
func (r *Runner) execute(ctx context.Context, span trace.Span, a *attemptRun, base Record) (Record, trace.SpanContext) {
	job := a.slot.Job
	start, began := time.Now(), wallNow() // for the duration; for the record and the lag
	defer span.End()
	traceID := span.SpanContext().TraceID().String()
	// The run's fields, as attributes (slog.Logger.With would box each
	// value and build a slice of them on every run).
	log := slog.New(r.log.Handler().WithAttrs([]slog.Attr{
		slog.String("correlation_id", a.correlationID), slog.String("job", job.ID), slog.String("run_id", a.runID),
		slog.String("trace_id", traceID), slog.String("span_id", span.SpanContext().SpanID().String()),
	}))
	rec := base
	rec.RunID, rec.TraceID, rec.Attempt, rec.State, rec.Start = a.runID, traceID, a.number, "running", began.UTC()

	if a.number == 1 {
		observability.ObserveWithTrace(r.o.Metrics.ScheduleLag.WithLabelValues(job.ID), began.Sub(a.slot.Time).Seconds(), traceID)
	}
	running := r.o.Metrics.JobRunning.WithLabelValues(job.ID)
	running.Inc()
	defer running.Dec()
	log.LogAttrs(ctx, slog.LevelInfo, "run started", slog.String("plugin", job.Plugin), slog.String("task", job.Task),
		slog.Time("scheduled_time", a.slot.Time.UTC()), slog.Int("attempt", a.number), slog.Int("shard", a.term.Shard),
		slog.Int64("fencing_token", a.term.Token), slog.Int64("lag_ms", began.Sub(a.slot.Time).Milliseconds()))

	var progress string
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
		OnLog: func(l pluginhost.LogRecord) { pluginLog(log, job.Plugin, l) },
		OnProgress: func(p pluginhost.Progress) {
			progress = fmt.Sprintf("%.0f%% %s", p.Percent, p.Message)
			log.Info("run progress", "percent", p.Percent, "progress", p.Message)
		},
	})
	outcome, errText := classifyAt(rctx, res, err, time.Now())
	elapsed := time.Since(start)

	rec.State, rec.End, rec.Duration, rec.Error = outcome, wallNow().UTC(), elapsed.Round(time.Millisecond).String(), r.o.Sanitize(errText)
	rec.Progress = r.o.Sanitize(progress)
	if res != nil {
		rec.Output = r.o.Sanitize(truncate(res.Output, r.o.MaxOutputBytes))
		rec.ProcessesLeft = r.o.Sanitize(res.ProcessesLeft)
	}
	if errors.Is(err, proctree.ErrTreeAlive) {
		rec.ProcessesLeft = r.o.Sanitize(err.Error())
	}
	r.o.Metrics.JobRuns.WithLabelValues(job.ID, job.Plugin, outcome).Inc()
	observability.ObserveWithTrace(r.o.Metrics.JobRunDuration.WithLabelValues(job.ID, job.Plugin), elapsed.Seconds(), traceID)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("pacer.outcome", outcome))
	}
	if outcome == observability.OutcomeSuccess {
		r.o.Metrics.LastSuccess.WithLabelValues(job.ID).SetToCurrentTime()
		span.SetStatus(codes.Ok, "")
		log.LogAttrs(ctx, slog.LevelInfo, "run finished", slog.String("outcome", outcome),
			slog.Int64("duration_ms", elapsed.Milliseconds()), slog.Int("attempt", a.number))
	} else {
		span.SetStatus(codes.Error, r.o.Sanitize(errText))
		log.Warn("run finished", "outcome", outcome, "duration_ms", elapsed.Milliseconds(), "attempt", a.number, "error", errText)
	}
	return rec, span.SpanContext()
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
// lives, for up to recordPatience.
func (r *Runner) write(t *coord.Term, rec Record, log *slog.Logger, put func([]byte) error) error {
	b, err := json.Marshal(rec)
	if err != nil {
		log.Error("run record not encodable", "run_id", rec.RunID, "error", err)
		return err
	}
	give := time.Now().Add(recordPatience)
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
		if errors.Is(err, coord.ErrNotLeader) || errors.Is(err, coord.ErrTriggerDecided) || t.Context().Err() != nil || time.Now().After(give) {
			log.Warn("run record not written", "run_id", rec.RunID, "state", rec.State, "error", err)
			return err
		}
		if !backoff.Sleep(wctx, wait.Next()) && r.stopCtx.Err() != nil {
			log.Warn("run record not written: runner stopping", "run_id", rec.RunID, "error", err)
			return err
		}
	}
}

// transientPolicy spaces out the tries of a claim or record write that
// failed while etcd was slow or electing a leader.
var transientPolicy = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// recordPatience bounds how long a record write is retried.
const recordPatience = 30 * time.Second

// skipAsync decides that a slot will not run: its skip record and the
// mark that the slot is decided (in the job's claim key) are one write
// (SkipSlot), as a run's claim is, so no later term of the shard, after a
// failover or a hand-over, decides the slot again (runs it, or skips it
// again as missed). A slot found decided already is left as it is; one
// whose term ended before the write landed is the next leader's to
// decide. Counted and logged once decided. Called with r.mu held.
func (r *Runner) skipAsync(t *coord.Term, s Slot, reason, why string) {
	rec := r.skipRecord(t, s, reason, why)
	log := r.log.With("job", s.Job.ID)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.write(t, rec, log, func(b []byte) error {
			return r.o.Coord.SkipSlot(context.Background(), t, s.Job.ID, s.Time, rec.RunID, b)
		})
		switch {
		case err == nil:
			r.o.Metrics.JobSkipped.WithLabelValues(s.Job.ID, reason).Inc()
			log.Warn("slot skipped", "scheduled_time", s.Time.UTC(), "reason", reason, "detail", why)
		case errors.Is(err, coord.ErrSlotTaken), errors.Is(err, coord.ErrSlotTooOld):
			log.Debug("slot decided already: not skipped", "scheduled_time", s.Time.UTC(), "reason", reason, "error", err)
		}
	}()
}

func (r *Runner) skipRecord(t *coord.Term, s Slot, reason, why string) Record {
	now := wallNow().UTC()
	return Record{Job: s.Job.ID, ScheduledTime: s.Time.UTC(), RunID: observability.NewRunID(), Node: r.o.Node,
		FencingToken: t.Token, State: "skipped", Reason: reason, Error: why, Start: now, End: now}
}

// classify maps an attempt's result to an outcome and an error text.
func classify(ctx context.Context, res *pluginhost.Result, err error) (string, string) {
	return classifyAt(ctx, res, err, time.Now())
}

// classifyAt is classify for an attempt whose call returned at ended: an
// attempt whose timeout had passed by then timed out, whatever the task
// answered (a task that ignored its cancellation and returned success).
func classifyAt(ctx context.Context, res *pluginhost.Result, err error, ended time.Time) (string, string) {
	late := errors.Is(ctx.Err(), context.DeadlineExceeded) || pastDeadlineAt(ctx, ended)
	switch {
	case err == nil && res.TaskError == "" && late:
		why := "the timeout passed" // its timer may not have fired yet
		if c := context.Cause(ctx); c != nil {
			why = c.Error()
		}
		return observability.OutcomeTimeout, why + "; the task went on past it and reported success"
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
	case errors.Is(err, pluginhost.ErrPluginCrashed):
		return observability.OutcomeCrashed, err.Error()
	case late:
		// E.g. the timeout passed while the attempt waited for a free
		// slot of its plugin, or for the plugin to start.
		return observability.OutcomeTimeout, err.Error()
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
func sleepUntilStopped(ctx, retries context.Context, d time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(retries, cancel)()
	backoff.Sleep(ctx, d)
}

// retryPolicy spaces out a job's attempts: exponential from
// InitialBackoff (1s if unset), capped at MaxBackoff (no doubling if
// unset), with up to 20 % random jitter so retries of many jobs spread out.
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

// truncate keeps at most the first n bytes of s (cut at a character
// boundary) and ends it with a note saying how many bytes were cut. A
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
	keep := min(n, len(body))
	for keep > 0 && keep < len(body) && !utf8.RuneStart(body[keep]) {
		keep--
	}
	return body[:keep] + fmt.Sprintf("\n[truncated %d bytes]", cut+int64(len(body)-keep))
}

// truncatedNote is the last line of an output that was cut.
var truncatedNote = regexp.MustCompile(`\n\[truncated (\d+) bytes\]$`)

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
