package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pacerun/pacer/internal/stack"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/shard"
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
	ReclaimRecording(ctx context.Context, t *coord.Term, job string, slot time.Time, prev, claim []byte, runID string, rec []byte, keep int, maxAge time.Duration) error
	ClaimRecording(ctx context.Context, t *coord.Term, job string, slot time.Time, claim []byte, runID string, rec []byte, keep int, maxAge time.Duration) error
	SkipSlot(ctx context.Context, t *coord.Term, job string, slot time.Time, runID string, rec []byte, keep int, maxAge time.Duration) error
	RecordRun(ctx context.Context, t *coord.Term, job, runID string, rec []byte, keep int, maxAge time.Duration) error
	// FinishSlot and FinishTrigger also keep succeeded (when the run ended,
	// if it succeeded; zero if not) as the job's last success in its claim
	// key: the shard's next leader exports it (JobClaims.LastSuccess).
	FinishSlot(ctx context.Context, t *coord.Term, job string, slot time.Time, runID string, rec []byte, succeeded time.Time, keep int, maxAge time.Duration) error
	CloseSlot(ctx context.Context, t *coord.Term, job string, slot time.Time) error
	// Claims returns the claims of every job of the term's shard, as its
	// leader knows them.
	Claims(ctx context.Context, t *coord.Term) (map[string]coord.JobClaims, error)
	SlotValue(ctx context.Context, job string, slot time.Time) ([]byte, error)
	RunTrigger(ctx context.Context, t *coord.Term, tr coord.Trigger, claim []byte, records ...coord.StoredRun) (int64, error)
	SkipTrigger(ctx context.Context, t *coord.Term, tr coord.Trigger, runID string, rec []byte, keep int, maxAge time.Duration) error
	FinishTrigger(ctx context.Context, t *coord.Term, job, id string, rev int64, runID string, rec []byte, succeeded time.Time, keep int, maxAge time.Duration) error
	GetTrigger(ctx context.Context, job, id string) (coord.Trigger, bool, error)
	// Runs returns up to limit of a job's records, newest first (the
	// held-back slots of an overlap-forbid job are decided against them).
	Runs(ctx context.Context, job string, limit int) ([][]byte, error)
	// HasRun says whether a record of a job's run is stored (the attempt
	// an older term left running is recorded by the leader that takes it
	// over only if its own leader did not record it).
	HasRun(ctx context.Context, job, runID string) (bool, error)
	// PauseHistory returns the stretches each job was paused (the catch-up
	// decides a missed slot by whether its job was paused at its time).
	PauseHistory(ctx context.Context) (map[string][]coord.Pause, error)
	// StoredJobs and ForgetJob find and remove the keys of removed jobs.
	StoredJobs(ctx context.Context, withRuns bool) ([]string, error)
	ForgetJob(ctx context.Context, t *coord.Term, job string) error
	// RequestedJobs and ForgetIdleJob find the jobs with trigger requests
	// or receipts, and remove the aged records and receipts of one.
	RequestedJobs(ctx context.Context) ([]string, error)
	ForgetIdleJob(ctx context.Context, t *coord.Term, job string, maxAge time.Duration, receiptAt func([]byte) time.Time) (bool, error)
	// PruneIdle removes a job's records older than maxAge (and beyond
	// keep) when they were not pruned for maxAge/10; it reports whether
	// it read etcd.
	PruneIdle(ctx context.Context, job string, keep int, maxAge time.Duration) bool
}

// TaskRunner runs one task attempt in a plugin.
type TaskRunner interface {
	Run(ctx context.Context, c pluginhost.Call) (*pluginhost.Result, error)
}

var (
	_ Coordinator = (*coord.Coordinator)(nil)
	_ TaskRunner  = (*pluginhost.Host)(nil)
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
	// MaxErrorBytes bounds a run record's error and processes_left, and
	// MaxProgressBytes the message of its progress (the last the task
	// reported): texts the plugin controls, cut as the output is. They
	// bound the same texts in the run's log lines and span. Defaults 16 KiB
	// and 4 KiB.
	MaxErrorBytes    int
	MaxProgressBytes int
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
	// ClusterJobSet, if set, returns the fingerprint of the cluster's job
	// set (the one most live replicas hold). A reload that gives a job back
	// a definition dropped earlier records the slots of it missed meanwhile
	// only when the reloaded set is the cluster's: those slots were the
	// cluster's, not a definition this replica alone is trying again.
	ClusterJobSet func() string
	// Shards is the number of shards (cluster.shards); below 1 means 1.
	// The runner schedules only the jobs of the shards it leads.
	Shards int
	// PausesFresh, if set, says whether the pause flags last read from
	// etcd can still be trusted: this replica heard from etcd lately.
	// While it says no, PausesRead is false (jobs' state is unknown).
	PausesFresh func() bool
}

// DefaultTriggerExpiry is Options.TriggerExpiry's default.
const DefaultTriggerExpiry = 10 * time.Minute

// Runner fires slots: claim, run (with retries), record.
type Runner struct {
	o     Options
	log   *slog.Logger
	sched *Scheduler

	stopCtx  context.Context // cancelled to abort every run
	claiming *startGate      // slots fired whose claims are not in yet
	stopRuns context.CancelCauseFunc
	stopping context.Context // cancelled when Stop is called
	stop     context.CancelFunc

	// neverTold holds the jobs (as defined now) whose next: never has
	// been logged, so that a reload that leaves a job unchanged does not
	// log it again.
	neverMu   sync.Mutex
	neverTold map[*Job]bool

	mu      sync.Mutex
	stopped bool
	jobs    map[string]*Job
	sorted  []*Job       // jobs by ID
	jobSet  coord.JobSet // of jobs
	paused  map[string]bool
	running map[string]map[string]*slotRun // job ID -> key -> the slot's run
	// skips holds, per job, the skips that wait for an earlier skip of
	// the job to be written (skipAsync).
	skips    map[string]*skipQueue
	triggers map[string]int64  // trigger ID -> token of the term deciding or running it (trigger.go)
	retiring map[string][]*Job // removed by a reload while running: series to delete

	// shardRuns counts, by shard, the runs in running of the shard's jobs;
	// idle holds, by shard, the channel WaitIdle waits on, closed (and
	// removed) when the shard's count falls to 0. Neither keeps a shard
	// with no run.
	shardRuns map[int]int
	idle      map[int]chan struct{}

	// pausesRead: SetPaused was called (the pause flags were read from
	// etcd) and PausesLost was not called since; otherwise whether a job
	// is paused is unknown.
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

	// By job ID (guarded by mu): when this replica dropped earlier
	// definitions of the job (by their hash), for the slots a diverged job
	// set left undecided (diverged.go).
	dropped map[string]map[string]time.Time
}

// New returns a Runner. Call Start to begin scheduling.
func New(o Options) *Runner {
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = 64 << 10
	}
	if o.MaxErrorBytes <= 0 {
		o.MaxErrorBytes = 16 << 10
	}
	if o.MaxProgressBytes <= 0 {
		o.MaxProgressBytes = 4 << 10
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
	ctx, cancel := context.WithCancelCause(context.Background())
	stopping, stop := context.WithCancel(context.Background())
	r := &Runner{o: o, log: o.Logger, stopCtx: ctx, stopRuns: cancel, stopping: stopping, stop: stop, claiming: newStartGate(startGateWait),
		jobs: map[string]*Job{}, paused: map[string]bool{},
		running: map[string]map[string]*slotRun{}, skips: map[string]*skipQueue{}, triggers: map[string]int64{}, triggerWaits: map[string]bool{},
		shardRuns: map[int]int{}, idle: map[int]chan struct{}{},
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
			r.neverMu.Lock()
			defer r.neverMu.Unlock()
			if r.neverTold == nil {
				r.neverTold = map[*Job]bool{}
			}
			r.neverTold[j] = true
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
	back := r.noteDefinitionsLocked(r.jobSet, set, wallNow())
	prev := r.jobSet
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
	// Once per definition: a reload that leaves such a job as it was does
	// not log it again (every reload repeated every never-firing job).
	r.neverMu.Lock()
	told := map[*Job]bool{}
	for _, j := range list {
		if j.Schedule.Next(now).IsZero() {
			if !r.neverTold[j] {
				r.never(j, now, false)
			}
			told[j] = true
		}
	}
	r.neverTold = told
	r.neverMu.Unlock()
	r.smu.Lock()
	r.sched.Set(slices.DeleteFunc(list, func(j *Job) bool { return r.scheduled[j.shard] == nil }))
	r.o.Metrics.ScheduledJobs.Set(float64(r.sched.Len()))
	clusters := r.o.ClusterJobSet != nil && r.o.ClusterJobSet() == set.Fingerprint
	if r.o.ClusterJobSet != nil && !clusters {
		back = nil // this replica's own change, not a return to the cluster's set
	}
	for id, from := range back { // a definition given back: the slots it missed meanwhile
		if t := r.scheduled[m[id].shard]; t != nil && r.o.JobSets != nil {
			j := m[id]
			r.spawn(func() { r.decideDroppedWindow(t, j, set.Jobs[id], from, now) })
		}
	}
	if clusters && changed && r.o.JobSets != nil {
		// Definitions new to this replica that the cluster switched to
		// before it got them: their slots since the switch, in the shards
		// it leads.
		late := map[*coord.Term][]*Job{}
		for id, hash := range set.Jobs {
			if _, given := back[id]; given || prev.Jobs[id] == hash {
				continue
			}
			if t := r.scheduled[m[id].shard]; t != nil {
				late[t] = append(late[t], m[id])
			}
		}
		for t, jobs := range late {
			r.spawn(func() { r.decideSwitchWindow(t, jobs, set, now) })
		}
	}
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
		if r.homeLocked(j.shard) {
			r.exportPausedJobLocked(id)
		}
	}
}

// exportPausedJobLocked sets pacer_job_paused of one job whose shard's
// series are here. r.mu is held.
func (r *Runner) exportPausedJobLocked(id string) {
	v := 0.0
	if r.paused[id] {
		v = 1
	}
	r.o.Metrics.JobPaused.WithLabelValues(id).Set(v)
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

// PausesRead reports whether this replica has a current view of the pause
// flags: it read them from etcd, its watch of them has not broken since
// (PausesLost), and Options.PausesFresh (if set) says it still hears from
// etcd. Otherwise (a replica that has not reached etcd, or is cut off from
// it) no job is known to be paused or active.
func (r *Runner) PausesRead() bool {
	r.mu.Lock()
	read := r.pausesRead
	r.mu.Unlock()
	return read && (r.o.PausesFresh == nil || r.o.PausesFresh())
}

// PausesLost says the watch of the pause flags broke: the flags last set
// may be stale until SetPaused is called again. Jobs go on being scheduled
// by them meanwhile; only their reported state is unknown.
func (r *Runner) PausesLost() {
	r.mu.Lock()
	r.pausesRead = false
	r.mu.Unlock()
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
		if r.addWork() {
			go func() {
				defer r.wg.Done()
				r.ageRecords()
			}()
		}
	})
}

// WaitIdle waits until no run of the shard's jobs is in progress here, or
// ctx ends. A replica handing a shard over calls it (coord Options.Drain).
// It waits on the shard's count of runs, which trackLocked keeps: nothing
// is polled, and no job's shard computed, while it waits.
func (r *Runner) WaitIdle(ctx context.Context, t *coord.Term) {
	r.mu.Lock()
	if r.shardRuns[t.Shard] == 0 {
		r.mu.Unlock()
		return
	}
	idle := r.idle[t.Shard]
	if idle == nil {
		idle = make(chan struct{})
		r.idle[t.Shard] = idle
	}
	r.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		r.mu.Lock()
		n := r.shardRuns[t.Shard]
		r.mu.Unlock()
		if n > 0 {
			r.log.Warn("handing a shard over with runs still going", "shard", t.Shard, "runs", n)
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
// return: each is recorded canceled, and under delivery at-least-once its
// slot is left open for the shard's next leader to run again
// (leftForNextLeader).
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
		r.stopRuns(errDrainTimeout)
		<-done
	}
}

// missed is called by the scheduler for slots of a job it could not fire
// in time; it fired the slot before them late. When the process could not
// run (SIGSTOP, a long GC, CPU starvation, shorter than the lease: the
// term lives on, so no catch-up will look at them), they are missed slots
// like those of a failover, and get the job's misfire policy: within
// grace, "all" runs them late (up to maxCatchUpRuns); the others, and all
// of them under "once" and "skip", are recorded skipped (reason misfire,
// or paused for a paused job) in one record, the latest marked decided
// with it, so that none is missed in silence (attack 13, J3). Slots a wall
// clock stepped ahead skipped are only counted and logged, as before: they
// are not due in true time yet.
func (r *Runner) missed(m Missed) {
	j := m.Job
	if m.ClockJumped {
		r.o.Metrics.JobSkipped.WithLabelValues(j.ID, SkipMisfire).Add(float64(m.N))
		r.log.Warn("slots missed while the scheduler could not run", "job", j.ID, "missed", m.N, "clock_jumped", true)
		return
	}
	t := r.o.Coord.TermOf(j.shard)
	if t == nil || t.Draining() {
		return // the shard's next leader decides them
	}
	now := wallNow()
	paused, _ := r.JobState(j.ID)
	var run []time.Time
	skipped := m.Slots
	if !paused && j.Misfire.Policy == MisfireAll {
		inGrace := func(s time.Time) bool { return now.Sub(s) <= j.Misfire.Grace }
		for len(skipped) > 0 && len(run) < maxCatchUpRuns && inGrace(skipped[0]) {
			run, skipped = append(run, skipped[0]), skipped[1:]
		}
	}
	reason := SkipMisfire
	if paused {
		reason = SkipPaused
	}
	r.log.Warn("slots missed while the scheduler could not run", "job", j.ID, "missed", m.N,
		"policy", j.Misfire.Policy, "grace", j.Misfire.Grace, "running", len(run), "skipping", m.N-len(run), "reason", reason)
	for _, s := range run {
		r.Fire(Slot{Job: j, Time: s})
	}
	if len(skipped) == 0 {
		return
	}
	why := "the scheduler could not run at the scheduled time (the process was stopped or starved; misfire policy " + j.Misfire.Policy + ")"
	if paused {
		why = "job is paused; the scheduler could not run at the scheduled time"
	}
	rec := r.slotsRecord(t, j, skipped, reason, why)
	count := m.N - len(run)
	if count > len(skipped) { // more than maxMissedSlots: the record counts them all
		rec.Slots = count
	}
	last := m.Slots[len(m.Slots)-1]
	if !r.addWork() {
		return
	}
	go func() {
		defer r.wg.Done()
		log := r.log.With("job", j.ID)
		err := r.write(t, rec, log, func(b []byte) error {
			return r.o.Coord.SkipSlot(context.Background(), t, j.ID, last, rec.RunID, b, r.o.KeepRuns, r.o.MaxRunAge)
		})
		switch {
		case err == nil:
			r.o.Metrics.JobSkipped.WithLabelValues(j.ID, reason).Add(float64(count))
		case errors.Is(err, coord.ErrSlotTaken), errors.Is(err, coord.ErrSlotTooOld):
			log.Debug("missed slots decided already: not recorded again", "scheduled_time", last.UTC(), "error", err)
		}
	}()
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
		skip = func(t *coord.Term, s Slot, reason, why string) { r.skipTriggerLocked(t, s, tr, reason, why, 0) }
	}
	if r.paused[s.Job.ID] && tr == nil {
		skip(t, s, SkipPaused, "job is paused")
		return
	}
	var replaced []*slotRun
	if n := len(r.running[s.Job.ID]); n > 0 {
		switch s.Job.Overlap {
		case OverlapAllow:
			if why := atMaxConcurrency(s.Job, n); why != "" {
				skip(t, s, SkipOverlap, why)
				return
			}
		case OverlapReplace:
			for _, sr := range r.running[s.Job.ID] {
				sr.stopRetry(errReplaced)
				sr.cancel(errReplaced)
				replaced = append(replaced, sr)
			}
		default:
			if q := r.lateQueueLocked(s.Job.ID); q != nil && tr == nil {
				q.slots = append(q.slots, s)
				return
			}
			detail := "previous run still running"
			for _, sr := range r.running[s.Job.ID] {
				detail = sr.overlapDetail()
			}
			skip(t, s, SkipOverlap, detail)
			return
		}
	}
	if correlationID == "" {
		correlationID = observability.NewCorrelationID()
	}
	ctx, sr, done := r.trackLocked(t, s.Job.ID)
	if tr == nil && lateJitter(jitterFor(s.Job, s.Time), s.Time) > 0 {
		sr.setPhase(phaseJitter)
	} else {
		sr.setPhase(phaseClaiming)
	}
	claimed := r.claiming.add()
	sr.claimed = claimed
	r.wg.Add(1)
	go func() {
		// Its stack at once (package stack): the claim, the plugin call
		// and the record go deep (etcd serves them in this process).
		stack.Grow()
		defer r.wg.Done()
		defer done()
		defer claimed()
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

// atMaxConcurrency returns why a slot of j, an overlap allow job with n
// runs going, does not start (its max_concurrency is reached), or "" if it
// may start. It is the one decision of allow: for a slot the scheduler
// fires (start) and for the slots a catch-up runs late (admitLate) alike.
func atMaxConcurrency(j *Job, n int) string {
	if j.MaxConcurrency > 0 && n >= j.MaxConcurrency {
		return fmt.Sprintf("%d runs already running (max_concurrency)", n)
	}
	return ""
}

// lateQueueLocked returns the queue of job's run of slots a hand-over held
// back that takes the scheduler's slots (a forbid job's: an allow job's
// held-back slots each run at once, in a run of their own), when that is
// the job's only run; nil if there is none. Called with r.mu held.
func (r *Runner) lateQueueLocked(job string) *lateQueue {
	if len(r.running[job]) != 1 {
		return nil
	}
	for _, sr := range r.running[job] {
		if sr.late != nil && !sr.late.closed {
			return sr.late
		}
	}
	return nil
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
	// Counted under the shard WaitIdle asks for; cluster.shards is not
	// reloaded, so the run ends in the shard it started in.
	sh := shard.Of(job, r.o.Shards)
	r.shardRuns[sh]++
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
		if r.shardRuns[sh]--; r.shardRuns[sh] == 0 {
			delete(r.shardRuns, sh)
			if idle := r.idle[sh]; idle != nil {
				close(idle) // every WaitIdle of the shard returns
				delete(r.idle, sh)
			}
		}
		r.mu.Unlock()
	}
}

// tracked registers a run of slots a new term found (the misfire
// catch-up's, or slots the previous leader left running) as one of j's
// runs, like a scheduled one (trackLocked): from its return, the overlap
// policy counts it. The run gets its context and its retries; the caller
// calls done when it ends, and counts it in r.wg.
func (r *Runner) tracked(t *coord.Term, j *Job) (context.Context, *slotRun, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.trackedLocked(t, j)
}

// trackedLocked is tracked with r.mu held.
func (r *Runner) trackedLocked(t *coord.Term, j *Job) (context.Context, *slotRun, func()) {
	ctx, sr, done := r.trackLocked(t, j.ID)
	// A reload between the term's look at the jobs and now was not seen.
	switch cur, ok := r.jobs[j.ID]; {
	case !ok:
		sr.stopRetry(stopRemoved)
	case cur != j:
		sr.stopRetry(stopChanged)
	}
	return ctx, sr, done
}

// goTracked runs run, tracked, on a goroutine of its own; false once stopped.
// The run is registered before it returns: a slot the scheduler fires
// after that finds it (under overlap forbid, the slot is skipped).
func (r *Runner) goTracked(t *coord.Term, j *Job, run func(ctx context.Context, sr *slotRun)) bool {
	if !r.addWork() {
		return false
	}
	ctx, sr, done := r.tracked(t, j)
	go func() {
		defer r.wg.Done()
		defer done()
		run(ctx, sr)
	}()
	return true
}

// Causes of a slot's context ending, other than the runner's own stop.
var (
	errLeadershipLost = errors.New("leadership lost")
	// errDrainTimeout ends the runs still going when Stop's drain ends.
	errDrainTimeout = errors.New("the runner is stopping and its drain timeout passed")
	errReplaced     = &retryStop{SkipOverlap, "replaced by a newer slot (overlap: replace)"}
)

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
