package runner

import (
	"container/heap"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/pacerun/pacer/runner/schedule"
)

// Scheduler tracks every job's next fire time in a min-heap and calls fire
// for each slot as it comes due. One goroutine and one timer serve all jobs.
type Scheduler struct {
	fire   func(Slot)
	onMiss func(Missed)
	now    func() time.Time // the wall clock
	mono   func() time.Time // a reading of the monotonic clock
	// onStepBack, if set, hears of a wall clock stepped back by d.
	onStepBack func(d time.Duration)
	// onNever, if set, hears of each job the scheduler stops tracking
	// because its schedule has no fire time after after: when the jobs are
	// set (fired false), or once its last slot fired (fired true).
	onNever func(j *Job, after time.Time, fired bool)

	mu     sync.Mutex
	jobs   entryHeap
	popped []*entry // scratch for fireDue
	wake   chan struct{}
	// The clocks at the last fireDue, to notice the wall clock stepping back.
	lastWall, lastMono time.Time
}

// A wall clock that falls behind the monotonic clock by more than
// stepTolerance between two looks has been stepped back; maxWait bounds how
// long the scheduler sleeps without looking.
const (
	stepTolerance = time.Second
	maxWait       = time.Minute
)

// NewScheduler returns a Scheduler that calls fire (which must not block)
// for each due slot, and onMiss (if not nil) with a job's slots that came
// and went while the scheduler could not run.
func NewScheduler(fire func(Slot), onMiss func(Missed)) *Scheduler {
	return &Scheduler{fire: fire, onMiss: onMiss, now: wallNow, mono: time.Now, wake: make(chan struct{}, 1)}
}

// Missed is a job's slots that came and went while the scheduler could
// not fire them: after the slot it fired late, Slots (oldest first, at most
// maxMissedSlots of them), N in all. ClockJumped says the wall clock was
// stepped ahead meanwhile (the slots are not due in true time yet);
// otherwise the process could not run (SIGSTOP, a long GC, CPU starvation).
type Missed struct {
	Job         *Job
	Slots       []time.Time
	N           int
	ClockJumped bool
}

// maxMissedSlots bounds the slot times a Missed lists.
const maxMissedSlots = maxCatchUp

type never struct {
	job   *Job
	after time.Time
	fired bool
}

type entry struct {
	job  *Job
	next time.Time
}

type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// Set replaces the scheduled jobs. Slots are computed from now on: a job
// is never fired for a time before Set was called. A job with no fire time
// after now is reported to onNever rather than scheduled.
func (s *Scheduler) Set(jobs []*Job) {
	now := s.now()
	var nevers []never
	s.mu.Lock()
	s.jobs = s.jobs[:0]
	for _, j := range jobs {
		if next := j.Schedule.Next(now); !next.IsZero() {
			s.jobs = append(s.jobs, &entry{job: j, next: next})
		} else {
			nevers = append(nevers, never{job: j, after: now})
		}
	}
	heap.Init(&s.jobs)
	s.mu.Unlock()
	s.kick()
	s.reportNever(nevers)
}

// Add schedules jobs besides the ones scheduled already (a job with the
// same ID is replaced), each from its first fire time at or after from. A
// from in the past makes that slot due at once: a replica that starts
// leading a shard adds its jobs from the instant its misfire catch-up
// stopped looking, so no slot falls between the two.
func (s *Scheduler) Add(jobs []*Job, from time.Time) {
	if len(jobs) == 0 {
		return
	}
	ids := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		ids[j.ID] = true
	}
	var nevers []never
	s.mu.Lock()
	s.jobs = slices.DeleteFunc(s.jobs, func(e *entry) bool { return ids[e.job.ID] })
	for _, j := range jobs {
		if next := j.Schedule.Next(from.Add(-time.Nanosecond)); !next.IsZero() {
			s.jobs = append(s.jobs, &entry{job: j, next: next})
		} else {
			nevers = append(nevers, never{job: j, after: from})
		}
	}
	heap.Init(&s.jobs)
	s.mu.Unlock()
	s.kick()
	s.reportNever(nevers)
}

// Remove stops scheduling the jobs drop returns true for.
func (s *Scheduler) Remove(drop func(*Job) bool) {
	s.mu.Lock()
	s.jobs = slices.DeleteFunc(s.jobs, func(e *entry) bool { return drop(e.job) })
	heap.Init(&s.jobs)
	s.mu.Unlock()
	s.kick()
}

// Len returns how many jobs are scheduled.
func (s *Scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) reportNever(ns []never) {
	if s.onNever == nil {
		return
	}
	for _, n := range ns {
		s.onNever(n.job, n.after, n.fired)
	}
}

// Run fires slots until ctx is done.
func (s *Scheduler) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := s.fireDue()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.wake:
		}
	}
}

// fireDue fires every due slot and returns how long to wait for the next.
// Each slot is fired as it comes off the heap; next fire times are computed
// after the whole batch has fired, so the last of 10,000 simultaneous slots
// does not wait for 9,999 schedule computations. fire must not block.
func (s *Scheduler) fireDue() time.Duration {
	var misses []Missed
	var nevers []never
	now, mono := s.now(), s.mono()
	s.mu.Lock()
	// Time.Sub uses the monotonic readings when both times have one (as
	// time.Now's do), which would hide the step: compare wall readings.
	back := mono.Sub(s.lastMono) - time.Duration(now.UnixNano()-s.lastWall.UnixNano())
	stepped := !s.lastWall.IsZero() && back > stepTolerance
	jumped := !s.lastWall.IsZero() && -back > stepTolerance // stepped ahead
	if stepped {
		// The wall clock was stepped back (NTP correcting a clock that ran
		// ahead): compute next slots from the corrected time, or the jobs
		// would wait out the whole step. Slots this re-lives that already
		// ran find their claims taken, or too old to claim. A slot that
		// was already due stays due.
		for _, e := range s.jobs {
			if n := e.job.Schedule.Next(now); n.Before(e.next) {
				e.next = n
			}
		}
		s.jobs = slices.DeleteFunc(s.jobs, func(e *entry) bool {
			if e.next.IsZero() {
				nevers = append(nevers, never{job: e.job, after: now})
			}
			return e.next.IsZero()
		})
		heap.Init(&s.jobs)
	}
	s.lastWall, s.lastMono = now, mono
	fired := s.popped[:0]
	for len(s.jobs) > 0 && !s.jobs[0].next.After(now) {
		e := heap.Pop(&s.jobs).(*entry)
		s.fire(Slot{Job: e.job, Time: e.next})
		fired = append(fired, e)
	}
	for _, e := range fired {
		// Slots that fell due while the process could not fire (a long
		// pause) are not fired in a burst; they are reported as missed.
		next, m := e.job.Schedule.Next(e.next), Missed{Job: e.job, ClockJumped: jumped}
		for !next.IsZero() && !next.After(now) {
			if s.onMiss != nil && len(m.Slots) < maxMissedSlots {
				m.Slots = append(m.Slots, next)
			}
			next, m.N = e.job.Schedule.Next(next), m.N+1
		}
		if m.N > 0 && s.onMiss != nil {
			misses = append(misses, m)
		}
		if next.IsZero() {
			nevers = append(nevers, never{job: e.job, after: e.next, fired: true})
		} else {
			e.next = next
			s.jobs = append(s.jobs, e)
		}
	}
	if len(fired) > 0 {
		heap.Init(&s.jobs) // O(n) once, rather than O(k log n) pushes
	}
	clear(fired)
	s.popped = fired
	wait := maxWait // look at the clocks at least this often
	if len(s.jobs) > 0 {
		wait = min(wait, s.jobs[0].next.Sub(now))
	}
	s.mu.Unlock()
	if stepped && s.onStepBack != nil {
		s.onStepBack(back)
	}
	for _, m := range misses {
		s.onMiss(m)
	}
	s.reportNever(nevers)
	return wait
}

// never is called by the scheduler for a job it stops tracking because the
// job's schedule has no fire time after after. The job stays registered
// (the API and `pacer jobs` show next: never); this says so, loudly unless
// it is a one-off job that just fired, or one whose time has passed but
// that a leader's catch-up may still run late (oneOffLate).
func (r *Runner) never(j *Job, after time.Time, fired bool) {
	_, oneOff := j.Schedule.(schedule.At)
	switch {
	case oneOff && fired:
		r.log.Info("one-off job fired; it has no further fire times", "job", j.ID, "schedule", j.Spec)
	case schedule.NeverFires(j.Schedule):
		r.log.Warn("job will never fire: no date matches its schedule (next: never); fix the schedule",
			"job", j.ID, "schedule", j.Spec, "timezone", j.Timezone)
	case oneOff && oneOffLate(j, after):
		// Not "never": the next leader's catch-up may run it late
		// (attack 25, W4). It warns if it finds the slot is not its to
		// run (the job came after its time).
		r.log.Info("one-off job's time has passed; unless it ran already, a leader's catch-up decides it under the misfire policy (next: never)",
			"job", j.ID, "schedule", j.Spec, "misfire", j.Misfire.Policy, "grace", j.Misfire.Grace)
	case oneOff:
		r.log.Warn("job will never fire: its one-off time has passed (next: never)",
			"job", j.ID, "schedule", j.Spec)
	default:
		r.log.Warn("job will not fire again: its schedule gives no fire time after this (next: never)",
			"job", j.ID, "schedule", j.Spec, "timezone", j.Timezone, "after", after.UTC().Format(time.RFC3339))
	}
}

// oneOffLate reports whether j is a one-off whose time has passed by now
// but whose slot a leader's catch-up may still run late: its misfire
// policy is not skip and its time is within the misfire grace (and, what
// only the catch-up can tell, the slot came due while a leader had the
// job and was never claimed).
func oneOffLate(j *Job, now time.Time) bool {
	at, ok := j.Schedule.(schedule.At)
	return ok && j.Misfire.Policy != MisfireSkip && !time.Time(at).After(now) && now.Sub(time.Time(at)) <= j.Misfire.Grace
}
