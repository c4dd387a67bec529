package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

// ErrUnknownJob is returned for a job ID that is not registered.
var ErrUnknownJob = errors.New("unknown job")

// ErrIdempotencyMismatch is returned for an idempotency key that an earlier
// request of another kind (trigger, pause, resume) used on the same job.
var ErrIdempotencyMismatch = errors.New("idempotency key already used")

// ControlStore is the cluster-wide state job control reads and writes.
type ControlStore interface {
	SetPaused(ctx context.Context, job string, paused bool, note []byte, idem coord.Idempotency) (coord.Applied, error)
	RequestTrigger(ctx context.Context, job, id string, body []byte, idem coord.Idempotency, lim coord.TriggerLimits) (coord.Applied, error)
	Triggers(ctx context.Context, job string) ([]coord.Trigger, error)
	RunsBefore(ctx context.Context, job, before string, limit int) ([]coord.StoredRun, error)
	State(ctx context.Context) (coord.ClusterState, error)
}

var _ ControlStore = (*coord.Coordinator)(nil)

// Control is job control and history for the API: every replica can answer,
// and writes go through etcd so every replica agrees.
//
// Mutating calls (Trigger, SetPaused) are idempotent: each stores a receipt
// under its idempotency key (the caller's, or one made for it and returned)
// in the same etcd transaction as its effect, so a call repeated with the
// same key takes effect once. When etcd does not answer, a call keeps
// trying for up to Settle to learn its outcome; if it still cannot tell
// whether its write landed, it says so (State "unconfirmed") instead of
// failing, because a failure invites a retry that could apply it twice.
type Control struct {
	Runner *Runner
	Store  ControlStore
	Node   string
	// TriggerLimits bound the trigger requests kept in etcd (pending or
	// running); zero values take DefaultTriggerLimits'.
	TriggerLimits coord.TriggerLimits
	// KeepReceipts is how many idempotency receipts a job keeps (the
	// newest); default 100.
	KeepReceipts int
	// Settle bounds how long a mutating call keeps trying when etcd does
	// not answer; default 10s.
	Settle time.Duration
	// Members, if set, reports the live replicas' job sets.
	Members Members
}

// Members is what Control shows of the replicas' membership.
type Members interface {
	View() coord.JobSetView
}

var _ Members = (*coord.Membership)(nil)

// DefaultTriggerLimits are the trigger request bounds by default.
var DefaultTriggerLimits = coord.TriggerLimits{PerJob: 100, Total: 1000}

// States of a mutating call's answer.
const (
	StateAccepted    = "accepted"    // a trigger request is stored
	StateApplied     = "applied"     // a pause or resume took effect
	StateUnconfirmed = "unconfirmed" // etcd did not confirm in time: it may or may not have taken effect, once at most
)

// StatePending is the state of a stored trigger request not yet decided,
// as Runs shows it.
const StatePending = "pending"

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
	State    string `json:"state"` // active or paused; unknown before the pause flags were read from etcd
	Paused   bool   `json:"paused"`
	Running  int    `json:"running"`
	// Shard is the job's shard in the cluster: its leader runs the job.
	// On a replica whose cluster.shards is not the cluster's, it is
	// computed with the cluster's count (as /api/v1/cluster's shard_count),
	// and ShardHere is the shard under this replica's own count.
	Shard     int  `json:"shard"`
	ShardHere *int `json:"shard_here,omitempty"`
	// Next is the next fire time (RFC 3339, UTC), or "never" when the
	// schedule has none: a job is listed even when it will not fire.
	Next      string      `json:"next"`
	NextFires []time.Time `json:"next_fires"`
}

// NextNever is JobView.Next for a job whose schedule will not fire again.
const NextNever = "never"

// clusterShards is the cluster's shard count when the membership knows it
// differs from this replica's, else 0.
func (c *Control) clusterShards() int {
	if cs, ok := c.Members.(interface{ ClusterShards() int }); ok {
		if n := cs.ClusterShards(); n > 0 && n != c.Runner.o.Shards {
			return n
		}
	}
	return 0
}

// view shows j; clusterShards is c.clusterShards().
func (c *Control) view(j *Job, clusterShards int) JobView {
	paused, running := c.Runner.JobState(j.ID)
	fires := schedule.NextN(j.Schedule, wallNow(), 5)
	next := NextNever
	if len(fires) > 0 {
		next = fires[0].UTC().Format(time.RFC3339)
	}
	state := JobActive
	switch {
	case !c.Runner.PausesRead():
		state = JobUnknown
	case paused:
		state = JobPaused
	}
	v := JobView{State: state,
		ID: j.ID, Plugin: j.Plugin, Task: j.Task, Schedule: j.Spec, Timezone: j.Timezone,
		Timeout: j.Timeout.String(), Overlap: j.Overlap, Retries: j.Retries.Max,
		Misfire: fmt.Sprintf("%s (grace %s)", j.Misfire.Policy, j.Misfire.Grace),
		Paused:  paused, Running: running, Next: next, NextFires: fires, Shard: c.Runner.Shard(j.ID),
	}
	if clusterShards > 0 {
		here := v.Shard
		v.Shard, v.ShardHere = shard.Of(j.ID, clusterShards), &here
	}
	return v
}

// Jobs lists every job.
func (c *Control) Jobs() []JobView {
	jobs := c.Runner.Jobs()
	out := make([]JobView, 0, len(jobs))
	cs := c.clusterShards()
	for _, j := range jobs {
		out = append(out, c.view(j, cs))
	}
	return out
}

// Job shows one job.
func (c *Control) Job(id string) (JobView, error) {
	j, ok := c.Runner.Job(id)
	if !ok {
		return JobView{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	return c.view(j, c.clusterShards()), nil
}

// Triggered is the answer to a trigger request.
type Triggered struct {
	Job           string `json:"job"`
	TriggerID     string `json:"trigger_id"`
	CorrelationID string `json:"correlation_id"`
	// IdempotencyKey is the request's key: the caller's, or the one made
	// for it. Repeating the request with it never stores it twice.
	IdempotencyKey string `json:"idempotency_key"`
	State          string `json:"state"` // StateAccepted or StateUnconfirmed
	// Replayed says the answer is an earlier request's, with the same key.
	Replayed bool   `json:"replayed,omitempty"`
	Detail   string `json:"detail,omitempty"`
	// Warning says the request was stored but the cluster does not have
	// the job: this replica's job set differs from the cluster's, and the
	// job is only here.
	Warning string `json:"warning,omitempty"`
}

// receipt is what an idempotent call stores under its key.
type receipt struct {
	Op            string    `json:"op"`   // trigger, pause or resume
	Call          string    `json:"call"` // this call's own ID, to tell a replay from our own earlier try
	TriggerID     string    `json:"trigger_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	At            time.Time `json:"at"`
	// Body is the digest of the request's body (WithBodyDigest): a key
	// reused with another body is refused, not replayed.
	Body string `json:"body,omitempty"`
}

type bodyDigestKey struct{}

// WithBodyDigest returns ctx carrying the digest of a mutating request's
// body (the API's, of its canonical JSON): Trigger, SetPaused store it in
// the request's receipt, and a request repeated with the same idempotency
// key but another body fails with ErrIdempotencyMismatch, as an API such
// as Stripe's answers (422), rather than being answered as the first.
func WithBodyDigest(ctx context.Context, digest string) context.Context {
	return context.WithValue(ctx, bodyDigestKey{}, digest)
}

func bodyDigest(ctx context.Context) string {
	d, _ := ctx.Value(bodyDigestKey{}).(string)
	return d
}

// sameBody reports whether a replayed receipt was stored for the same body
// (receipts stored before digests were kept match any body).
func (r receipt) sameBody(ctx context.Context) bool {
	return r.Body == "" || r.Body == bodyDigest(ctx)
}

// Trigger asks the leader to run a job now, once per idempotency key.
// correlationID and idemKey may be empty. by says who asks; it is stored
// through the runner's sanitizer (Options.Sanitize), as it is logged: the
// API puts the caller's User-Agent in it, which may hold anything (attack
// 23, U11).
func (c *Control) Trigger(ctx context.Context, id, correlationID, by, idemKey string) (Triggered, error) {
	if _, ok := c.Runner.Job(id); !ok {
		return Triggered{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	by = c.Runner.o.Sanitize(by)
	if correlationID == "" {
		correlationID = observability.NewCorrelationID()
	}
	tid := observability.NewRunID()
	if idemKey == "" {
		idemKey = "pacer-" + tid
	}
	now := wallNow().UTC()
	body, err := json.Marshal(TriggerRequest{CorrelationID: correlationID, RequestedAt: now, By: by})
	if err != nil {
		return Triggered{}, err
	}
	rc, err := json.Marshal(receipt{Op: "trigger", Call: tid, TriggerID: tid, CorrelationID: correlationID, At: now, Body: bodyDigest(ctx)})
	if err != nil {
		return Triggered{}, err
	}
	idem := coord.Idempotency{Key: idemKey, Receipt: rc, Keep: c.keepReceipts()}
	lim := c.triggerLimits()
	out := Triggered{Job: id, TriggerID: tid, CorrelationID: correlationID, IdempotencyKey: idemKey, State: StateAccepted}
	a, err := c.settle(ctx, func(ctx context.Context) (coord.Applied, error) {
		return c.Store.RequestTrigger(ctx, id, tid, body, idem, lim)
	})
	c.countTrigger(a, tid, err)
	if u := (*unconfirmed)(nil); errors.As(err, &u) {
		out.State = StateUnconfirmed
		out.Detail = fmt.Sprintf("etcd did not confirm the trigger request within %s (%v): it may or may not have been stored, "+
			"and runs at most once. To find out, repeat the request with header Idempotency-Key: %s (it is never stored twice), "+
			"or look for trigger %s in pacer runs %s -o json", c.settleTime(), u.cause, idemKey, tid, id)
		return out, nil
	}
	if err != nil {
		return Triggered{}, err
	}
	if a.Replayed {
		var prev receipt
		if err := json.Unmarshal(a.Receipt, &prev); err != nil || prev.Op != "trigger" {
			return Triggered{}, fmt.Errorf("%w for %s of job %q at %s; use a new key for a new request",
				ErrIdempotencyMismatch, orUnknown(prev.Op), id, prev.At.Format(time.RFC3339))
		}
		if !prev.sameBody(ctx) {
			return Triggered{}, fmt.Errorf("%w for a trigger of job %q with another request body at %s; use a new key for a new request",
				ErrIdempotencyMismatch, id, prev.At.Format(time.RFC3339))
		}
		if prev.Call != tid { // another request's; else ours, which landed on an earlier try
			out.TriggerID, out.CorrelationID, out.Replayed = prev.TriggerID, prev.CorrelationID, true
		}
	}
	out.Warning = c.notInCluster(id)
	return out, nil
}

// notInCluster says, when this replica's job set differs from the
// cluster's and the cluster's lacks job, that the request will not run;
// "" otherwise.
func (c *Control) notInCluster(job string) string {
	if c.Members == nil {
		return ""
	}
	v := c.Members.View()
	if v.JobSetAgreed || v.Difference == nil || !slices.Contains(v.Difference.OnlyHere, job) {
		return ""
	}
	if t := c.leads(job); t != nil {
		// It still leads the job's shard (its job set's difference not
		// settled yet): it runs the request unless it steps down first
		// (attack 19, P7: the warning said "does not run", and it ran).
		return fmt.Sprintf("job %q is in this replica's config but not in the cluster's job set (this replica's differs): "+
			"this replica leads the job's shard for now and runs the request, unless it stops leading first (it does once the "+
			"difference has lasted cluster.job_set_settle); a request it does not run is recorded as skipped, reason expired, "+
			"after triggers.expire_after (%s); see pacer runs %s", job, c.Runner.o.TriggerExpiry, job)
	}
	return fmt.Sprintf("job %q is in this replica's config but not in the cluster's job set (this replica's differs): "+
		"the leader does not have it, so the request does not run and is recorded as skipped, reason expired, after triggers.expire_after (%s); "+
		"see pacer runs %s", job, c.Runner.o.TriggerExpiry, job)
}

// leads returns this replica's live term of job's shard, or nil.
func (c *Control) leads(job string) *coord.Term {
	if c.Runner.o.Coord == nil {
		return nil
	}
	if t := c.Runner.o.Coord.TermOf(c.Runner.Shard(job)); t != nil && t.Context().Err() == nil && !t.Draining() {
		return t
	}
	return nil
}

// countTrigger counts a trigger request's result in
// pacer_trigger_requests_total.
func (c *Control) countTrigger(a coord.Applied, tid string, err error) {
	m := c.Runner.o.Metrics
	if m == nil {
		return
	}
	var full *coord.LimitError
	result := observability.TriggerAccepted
	switch {
	case errors.As(err, new(*unconfirmed)):
		result = observability.TriggerUnconfirmed
	case errors.As(err, &full) && full.PerJob:
		result = observability.TriggerRefusedJob
	case errors.As(err, &full):
		result = observability.TriggerRefusedCluster
	case err != nil:
		result = observability.TriggerNotStored
	case a.Replayed:
		var prev receipt
		if json.Unmarshal(a.Receipt, &prev) == nil && prev.Call == tid {
			break // ours, found on a later try
		}
		result = observability.TriggerReplayed
	}
	m.TriggerRequests.WithLabelValues(result).Inc()
}

// Paused is the answer to a pause or resume request.
type Paused struct {
	Job            string `json:"job"`
	Paused         bool   `json:"paused"`
	IdempotencyKey string `json:"idempotency_key"`
	State          string `json:"state"` // StateApplied or StateUnconfirmed
	Replayed       bool   `json:"replayed,omitempty"`
	Detail         string `json:"detail,omitempty"`
}

// SetPaused pauses or resumes a job on every replica, once per idempotency
// key (idemKey may be empty). by is stored sanitized, as Trigger's.
func (c *Control) SetPaused(ctx context.Context, id string, paused bool, by, idemKey string) (Paused, error) {
	if _, ok := c.Runner.Job(id); !ok {
		return Paused{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	by = c.Runner.o.Sanitize(by)
	op := map[bool]string{true: "pause", false: "resume"}[paused]
	call := observability.NewRunID()
	if idemKey == "" {
		idemKey = "pacer-" + call
	}
	now := wallNow().UTC()
	// The note's "at" is the pause's or resume's time in the job's pause
	// history (coord/pauses.go), which the catch-up decides missed slots by.
	note, _ := json.Marshal(map[string]any{"by": by, "at": now})
	rc, _ := json.Marshal(receipt{Op: op, Call: call, At: now, Body: bodyDigest(ctx)})
	idem := coord.Idempotency{Key: idemKey, Receipt: rc, Keep: c.keepReceipts()}
	out := Paused{Job: id, Paused: paused, IdempotencyKey: idemKey, State: StateApplied}
	a, err := c.settle(ctx, func(ctx context.Context) (coord.Applied, error) {
		return c.Store.SetPaused(ctx, id, paused, note, idem)
	})
	if u := (*unconfirmed)(nil); errors.As(err, &u) {
		out.State = StateUnconfirmed
		out.Detail = fmt.Sprintf("etcd did not confirm the %s within %s (%v): it may or may not have taken effect. "+
			"To find out, repeat the request with header Idempotency-Key: %s (it never takes effect twice), or see pacer jobs",
			op, c.settleTime(), u.cause, idemKey)
		return out, nil
	}
	if err != nil {
		return Paused{}, err
	}
	if a.Replayed {
		var prev receipt
		if err := json.Unmarshal(a.Receipt, &prev); err != nil || prev.Op != op {
			return Paused{}, fmt.Errorf("%w for %s of job %q at %s; use a new key for a new request",
				ErrIdempotencyMismatch, orUnknown(prev.Op), id, prev.At.Format(time.RFC3339))
		}
		if !prev.sameBody(ctx) {
			return Paused{}, fmt.Errorf("%w for a %s of job %q with another request body at %s; use a new key for a new request",
				ErrIdempotencyMismatch, op, id, prev.At.Format(time.RFC3339))
		}
		out.Replayed = prev.Call != call
	}
	return out, nil
}

// unconfirmed is the outcome of a call whose write may have landed: etcd
// never confirmed or refuted it within Settle. cause is the error that made
// the outcome unknown.
type unconfirmed struct{ cause error }

func (u *unconfirmed) Error() string { return "unconfirmed: " + u.cause.Error() }

// settle runs an idempotent write until its outcome is known, for up to
// Settle. An error that says nothing was stored (coord.ErrNotStored) is
// returned at once for a bound reached, else after the last try; once a
// try's outcome was unknown, only a success or a replay settles it (a
// later "not stored" does not prove the unknown write will not land), and
// if neither comes the result is an *unconfirmed.
func (c *Control) settle(ctx context.Context, write func(context.Context) (coord.Applied, error)) (coord.Applied, error) {
	ctx, cancel := context.WithTimeout(ctx, c.settleTime())
	defer cancel()
	var unknown error // the first error after which the outcome was unknown
	wait := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: time.Second})
	for {
		a, err := write(ctx)
		if err == nil {
			return a, nil
		}
		var full *coord.LimitError
		if errors.As(err, &full) && unknown == nil {
			return a, err
		}
		if unknown == nil && !errors.Is(err, coord.ErrNotStored) {
			unknown = err
		}
		if !backoff.Sleep(ctx, wait.Next()) {
			if unknown != nil {
				return coord.Applied{}, &unconfirmed{cause: unknown}
			}
			return coord.Applied{}, err
		}
	}
}

func (c *Control) settleTime() time.Duration {
	if c.Settle > 0 {
		return c.Settle
	}
	return 10 * time.Second
}

func (c *Control) keepReceipts() int {
	if c.KeepReceipts > 0 {
		return c.KeepReceipts
	}
	return 100
}

func (c *Control) triggerLimits() coord.TriggerLimits {
	l := c.TriggerLimits
	if l.PerJob <= 0 {
		l.PerJob = DefaultTriggerLimits.PerJob
	}
	if l.Total <= 0 {
		l.Total = DefaultTriggerLimits.Total
	}
	return l
}

func orUnknown(op string) string {
	if op == "" {
		return "an unknown request"
	}
	return "a " + op
}

// ClusterView is the cluster as this replica sees it: leadership, and each
// live replica's job set and whether it is the cluster's.
//
// Members (the contract's list of names) are the replicas with a key in
// any election, the leader first, then every other live replica the
// membership records know, each once; Replicas says of each whether it is
// a candidate, which shards it leads and, if it is not a candidate, why.
type ClusterView struct {
	coord.ClusterState
	*coord.JobSetView
	// JobsState is "known" while this replica has a current view of the
	// jobs' pause flags, else "unknown" (cut off from etcd: the jobs'
	// states it would report may be stale).
	JobsState string `json:"jobs_state,omitempty"`
	// Error, set when etcd could not be read, says why; the rest is then
	// what this replica knows by itself (its node, the shards it leads now,
	// its last contact with etcd, its keepalive age, the replicas as it
	// last saw them).
	Error string `json:"error,omitempty"`
}

// Cluster reports leadership and job sets as this replica sees them. When
// etcd cannot be read it returns, with the error, the view filled with
// what this replica knows by itself.
func (c *Control) Cluster(ctx context.Context) (ClusterView, error) {
	st, err := c.Store.State(ctx)
	v := ClusterView{ClusterState: st}
	if c.Runner != nil {
		v.JobsState = "known"
		if !c.Runner.PausesRead() {
			v.JobsState = "unknown"
		}
	}
	if err != nil {
		v.Error = err.Error()
	}
	if c.Members != nil {
		js := c.Members.View()
		v.JobSetView = &js
		if err == nil {
			v.mergeReplicas()
		} else {
			v.cutOff(err)
		}
	}
	return v, err
}

// cutOff marks the view of a replica that cannot read etcd: it may not
// lead now (it cannot campaign, and it fences itself a lease TTL after its
// last acknowledged keepalive at most), and says why, also in its own row.
func (v *ClusterView) cutOff(err error) {
	since := "it started (never heard from it)"
	if !v.LastContact.IsZero() {
		since = v.LastContact.UTC().Format(time.RFC3339Nano) + " (its last contact)"
	}
	why := fmt.Sprintf("cannot reach etcd since %s: %v; it cannot campaign, and stops leading a lease TTL after its last acknowledged keepalive at most",
		since, err)
	v.MayLead, v.NotLeading = false, why
	self := slices.IndexFunc(v.Replicas, func(r coord.ReplicaView) bool { return r.Unpublished })
	if self < 0 {
		self = slices.IndexFunc(v.Replicas, func(r coord.ReplicaView) bool { return r.Node == v.Node })
	}
	if self >= 0 {
		r := &v.Replicas[self]
		r.Candidate, r.LeadsShards = false, slices.Clone(v.ShardsLed)
		if !r.Unpublished {
			r.Reason = why
		}
	}
}

// mergeReplicas makes Members the union of the election holders and the
// live membership records, each once, and fills each replica's shards; a
// replica in an election without a member record is added to Replicas.
func (v *ClusterView) mergeReplicas() {
	leads := map[string][]int{}
	for _, s := range v.Shards {
		if s.Leader != "" {
			leads[s.Leader] = append(leads[s.Leader], s.Shard)
		}
	}
	recorded := map[string]bool{}
	for i := range v.Replicas {
		r := &v.Replicas[i]
		recorded[r.Node] = true
		if r.Unpublished {
			// This replica under a node name another one publishes: the
			// elections' keys of that name are the other's.
			r.LeadsShards = []int{}
			continue
		}
		r.LeadsShards = append([]int{}, leads[r.Node]...)
		if !slices.Contains(v.Members, r.Node) {
			v.Members = append(v.Members, r.Node)
		}
	}
	for _, n := range v.Members {
		if !recorded[n] {
			v.Replicas = append(v.Replicas, coord.ReplicaView{MemberRecord: coord.MemberRecord{Node: n},
				LeadsShards: append([]int{}, leads[n]...), Reason: coord.ReasonNoRecord})
		}
	}
}
