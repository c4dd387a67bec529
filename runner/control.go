package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
)

// ErrUnknownJob is returned for a job ID that is not registered.
var ErrUnknownJob = errors.New("unknown job")

// ControlStore is the cluster-wide state job control reads and writes.
type ControlStore interface {
	SetPaused(ctx context.Context, job string, paused bool, note []byte) error
	RequestTrigger(ctx context.Context, job, id string, body []byte) error
	Runs(ctx context.Context, job string, limit int) ([][]byte, error)
	State(ctx context.Context) (coord.ClusterState, error)
}

var _ ControlStore = (*coord.Coordinator)(nil)

// Control is job control and history for the API: every replica can answer,
// and writes go through etcd so every replica agrees.
type Control struct {
	Runner *Runner
	Store  ControlStore
	Node   string
}

// JobView is a job as the API shows it.
type JobView struct {
	ID       string `json:"id"`
	Plugin   string `json:"plugin"`
	Task     string `json:"task"`
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone"`
	Timeout  string `json:"timeout"`
	Overlap  string `json:"overlap"`
	Retries  int    `json:"retries"`
	Misfire  string `json:"misfire"`
	Paused   bool   `json:"paused"`
	Running  int    `json:"running"`
	// Next is the next fire time (RFC 3339, UTC), or "never" when the
	// schedule has none: a job is listed even when it will not fire.
	Next      string      `json:"next"`
	NextFires []time.Time `json:"next_fires"`
}

// NextNever is JobView.Next for a job whose schedule will not fire again.
const NextNever = "never"

func (c *Control) view(j *Job) JobView {
	paused, running := c.Runner.JobState(j.ID)
	fires := schedule.NextN(j.Schedule, wallNow(), 5)
	next := NextNever
	if len(fires) > 0 {
		next = fires[0].UTC().Format(time.RFC3339)
	}
	return JobView{
		ID: j.ID, Plugin: j.Plugin, Task: j.Task, Schedule: j.Spec, Timezone: j.Timezone,
		Timeout: j.Timeout.String(), Overlap: j.Overlap, Retries: j.Retries.Max,
		Misfire: fmt.Sprintf("%s (grace %s)", j.Misfire.Policy, j.Misfire.Grace),
		Paused:  paused, Running: running, Next: next, NextFires: fires,
	}
}

// Jobs lists every job.
func (c *Control) Jobs() []JobView {
	jobs := c.Runner.Jobs()
	out := make([]JobView, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, c.view(j))
	}
	return out
}

// Job shows one job.
func (c *Control) Job(id string) (JobView, error) {
	j, ok := c.Runner.Job(id)
	if !ok {
		return JobView{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	return c.view(j), nil
}

// Triggered is the answer to a trigger request.
type Triggered struct {
	Job           string `json:"job"`
	TriggerID     string `json:"trigger_id"`
	CorrelationID string `json:"correlation_id"`
}

// Trigger asks the leader to run a job now. correlationID may be empty.
func (c *Control) Trigger(ctx context.Context, id, correlationID, by string) (Triggered, error) {
	if _, ok := c.Runner.Job(id); !ok {
		return Triggered{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	if correlationID == "" {
		correlationID = observability.NewCorrelationID()
	}
	tid := observability.NewRunID()
	body, err := json.Marshal(TriggerRequest{CorrelationID: correlationID, RequestedAt: wallNow().UTC(), By: by})
	if err != nil {
		return Triggered{}, err
	}
	if err := c.Store.RequestTrigger(ctx, id, tid, body); err != nil {
		return Triggered{}, err
	}
	return Triggered{Job: id, TriggerID: tid, CorrelationID: correlationID}, nil
}

// SetPaused pauses or resumes a job on every replica.
func (c *Control) SetPaused(ctx context.Context, id string, paused bool, by string) error {
	if _, ok := c.Runner.Job(id); !ok {
		return fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	note, _ := json.Marshal(map[string]any{"by": by, "at": wallNow().UTC()})
	return c.Store.SetPaused(ctx, id, paused, note)
}

// Runs returns a job's latest records, newest first.
func (c *Control) Runs(ctx context.Context, id string, limit int) ([]json.RawMessage, error) {
	if _, ok := c.Runner.Job(id); !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	raw, err := c.Store.Runs(ctx, id, limit)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(raw))
	for i, r := range raw {
		out[i] = r
	}
	return out, nil
}

// Cluster reports leadership as this replica sees it.
func (c *Control) Cluster(ctx context.Context) (coord.ClusterState, error) {
	return c.Store.State(ctx)
}
