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
	Timeout  time.Duration
	Overlap  string
	Params   map[string]any
}

// Slot is one scheduled occurrence of a job: the unit of exactly-once.
type Slot struct {
	Job  *Job
	Time time.Time
}
