package runner

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
)

// TriggerRequest is the body of a manual trigger request in etcd.
type TriggerRequest struct {
	CorrelationID string    `json:"correlation_id"`
	RequestedAt   time.Time `json:"requested_at"`
	By            string    `json:"by"`
}

// HandleTriggers runs pending manual trigger requests, if this replica
// leads. Each request is claimed (and so consumed) exactly once.
func (r *Runner) HandleTriggers(pending []coord.Trigger) {
	// Forget requests that are gone from etcd: claimed, by us or a
	// previous leader.
	r.mu.Lock()
	r.pending = pending
	for id := range r.triggers {
		if !slices.ContainsFunc(pending, func(tr coord.Trigger) bool { return tr.ID == id }) {
			delete(r.triggers, id)
		}
	}
	r.mu.Unlock()
	t := r.o.Coord.Term()
	if t == nil {
		return
	}
	for _, tr := range pending {
		j, ok := r.Job(tr.Job)
		r.mu.Lock()
		busy := r.triggers[tr.ID]
		if !busy {
			r.triggers[tr.ID] = true
		}
		r.mu.Unlock()
		if busy {
			continue
		}
		var req TriggerRequest
		_ = json.Unmarshal(tr.Body, &req)
		if !ok {
			// The job is gone (config reloaded): consume the request.
			_ = r.o.Coord.ClaimTrigger(t.Context(), t, tr)
			r.log.Warn("trigger for an unknown job dropped", "job", tr.Job, "correlation_id", req.CorrelationID)
			continue
		}
		slot := wallNow().UTC().Truncate(time.Millisecond)
		r.log.Info("manual trigger", "job", j.ID, "correlation_id", req.CorrelationID, "by", req.By)
		r.start(t, Slot{Job: j, Time: slot}, req.CorrelationID, &tr)
	}
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
