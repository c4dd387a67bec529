package runner

import (
	"time"

	"github.com/pacerun/pacer/runner/schedule"
)

// Overlap policies: what happens when a slot comes due while the job's
// previous run is still going.
const (
	OverlapForbid  = "forbid"  // skip the new slot, record reason "overlap"
	OverlapAllow   = "allow"   // run both
	OverlapReplace = "replace" // cancel the running one, start the new one
)

// Job is a registered job. Its ID is stable: it names the job's slots in
// etcd, so re-registering a job under the same ID never duplicates a slot.
type Job struct {
	ID       string
	Plugin   string
	Task     string
	Schedule schedule.Schedule
	// Spec and Timezone are the schedule as configured, for display.
	Spec     string
	Timezone string
	Timeout  time.Duration
	Overlap  string
	// MaxConcurrency bounds runs at once under OverlapAllow; 0 = no bound.
	MaxConcurrency int
	Params         map[string]any
	// InheritEnv names the runner's environment variables (NAME or
	// PREFIX_*) the task gets (params.inherit_env).
	InheritEnv []string
	Retries    Retries
	Misfire    Misfire
	// Delivery is what a new leader does with a slot the previous leader
	// claimed and never finished: DeliveryAtMostOnce or DeliveryAtLeastOnce.
	Delivery string
	// Jitter delays each slot's start by a deterministic amount in
	// [0, Jitter); the slot keeps its scheduled time as its identity.
	Jitter time.Duration

	shard int // shard.Of(ID), set by Runner.SetJobs
}

// Retries: a failed attempt (failure, timeout, crash) is retried up to Max
// times, as attempts of the same slot, after exponential backoff with jitter.
type Retries struct {
	Max            int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// Misfire policies: what a new leader does with slots that came due while
// nobody led.
const (
	MisfireSkip = "skip" // record them all as skipped
	MisfireOnce = "once" // run the latest one within the grace window, skip the rest
	MisfireAll  = "all"  // run every one within the grace window, in order
)

// Delivery policies for a slot whose leader died mid-run.
const (
	DeliveryAtMostOnce  = "at-most-once"  // record it as lost
	DeliveryAtLeastOnce = "at-least-once" // run it again under the new token
)

// Misfire is a job's misfire policy.
type Misfire struct {
	Policy string
	Grace  time.Duration
}

// Slot is one scheduled occurrence of a job: the unit of exactly-once.
type Slot struct {
	Job  *Job
	Time time.Time
}
