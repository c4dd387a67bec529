package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/sdk/pluginv1"
	"github.com/pacerun/pacer/sdk/proctree"
)

// ErrPluginQuarantined means the plugin failed too often recently; runs
// fail fast until the quarantine ends or an operator restarts the plugin.
var ErrPluginQuarantined = errors.New("plugin quarantined")

// ErrPluginBusy means a restart was refused because runs are in progress.
var ErrPluginBusy = errors.New("plugin busy")

// Restart reasons: the values of pacer_plugin_restarts_total's reason label.
const (
	ReasonCrash     = "crash"     // the process exited on its own
	ReasonHung      = "hung"      // killed: a task ignored cancellation past the grace period
	ReasonUnhealthy = "unhealthy" // killed: health probes failed
	ReasonStart     = "start"     // the process failed to start or handshake
	ReasonRestart   = "restart"   // an operator restarted it (pacer plugins restart)
)

// supervisor owns one plugin's process: it starts it, watches it, restarts
// it with backoff, and quarantines it when it crash-loops.
//
//	     first use            exits / killed            backoff over
//	none ────────► up ───────────────────────► down ───────────────► up
//	                ▲                            │ N crashes in window
//	                └─── quarantine over ─── quarantined (runs fail fast)
type supervisor struct {
	h    *Host
	name string
	log  *slog.Logger
	sem  chan struct{} // concurrency limit

	mu           sync.Mutex
	inst         *instance
	starting     *pendingStart // the start in progress; nil: none
	starts       int           // processes installed
	restarts     int           // attempts to replace a process that went away (RESTARTS)
	lastReason   string        // why the previous process (or attempt) went away; "" once a replacement is counted
	lastCause    string        // cause of the last failure (Cause*), for operators
	lastErr      string        // and what it said
	consecutive  int           // crashes since the last clean run
	crashes      []time.Time   // within the quarantine window
	nextStart    time.Time
	quarantined  time.Time   // quarantined until
	unquarantine *time.Timer // clears pacer_plugin_quarantined when the quarantine ends
}

// instance is one plugin process.
type instance struct {
	client *plugin.Client
	proto  plugin.ClientProtocol
	rpc    pluginv1.TaskPluginClient
	desc   *pluginv1.DescribeResponse
	pid    int
	proc   proctree.Process // the process as started: signals reach it, not a process that reused its ID
	path   string
	calls  atomic.Int32 // runs in progress

	stop     chan struct{} // closes the health prober
	stopOnce sync.Once
	reason   atomic.Pointer[string] // set when we kill it on purpose

	smu    sync.Mutex
	rs     *runStream // the open RunStream (stream.go), nil until a run opens one
	perRun bool       // it refused RunStream: call Run per run
}

// alive reports whether the process runs and nobody asked it to stop.
func (i *instance) alive() bool { return i.reason.Load() == nil && !i.client.Exited() }

// killGrace bounds how long a plugin process asked to stop (go-plugin's
// Shutdown call, then its own wait) may take before it gets SIGKILL: longer
// than the SDKs take to drain their runs (3 s) and end what the runs
// started (2 s).
const killGrace = 10 * time.Second

// kill stops the process and waits until it is gone. go-plugin's Kill asks
// the process to shut down and waits for the answer without a bound, so a
// process that cannot answer would hold the caller forever: one that was
// stopped (SIGSTOP, a frozen cgroup), or killed for not answering (hung,
// unhealthy), gets SIGKILL at once; any other gets killGrace to exit.
func (i *instance) kill(reason string) {
	i.reason.CompareAndSwap(nil, &reason)
	i.stopOnce.Do(func() { close(i.stop) })
	if reason == ReasonHung || reason == ReasonUnhealthy || i.stopped() {
		i.sigkill()
	} else {
		t := time.AfterFunc(killGrace, i.sigkill)
		defer t.Stop()
	}
	i.client.Kill()
}

// stopped reports whether the process is stopped by a signal or traced.
func (i *instance) stopped() bool {
	p, err := proctree.Read(i.pid)
	return err == nil && i.proc.Same() && (p.State == 'T' || p.State == 't')
}

// sigkill kills the process, if it is still the one started.
func (i *instance) sigkill() {
	if i.client.Exited() {
		return
	}
	_ = i.proc.Signal(syscall.SIGKILL)
}

// ping checks the process's health service, waiting up to timeout (go-plugin's
// Ping waits without a bound, forever for a stopped process).
func (i *instance) ping(timeout time.Duration) error {
	gc, ok := i.proto.(*plugin.GRPCClient)
	if !ok {
		return i.proto.Ping()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(gc.Conn).Check(ctx, &healthpb.HealthCheckRequest{Service: plugin.GRPCServiceName})
	return err
}

func (h *Host) supervisor(name string) *supervisor {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.plugins[name]
	if !ok {
		s = &supervisor{h: h, name: name, log: h.log.With("plugin", name), sem: make(chan struct{}, h.opts.MaxConcurrency)}
		h.plugins[name] = s
	}
	return s
}

// acquire takes a concurrency slot, waiting while the plugin is saturated.
func (s *supervisor) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a free slot of plugin %q (max %d concurrent runs): %w", s.name, cap(s.sem), context.Cause(ctx))
	}
}

func (s *supervisor) release() { <-s.sem }

// pendingStart is a plugin process being started: done is closed when the
// start has ended, with inst or err.
type pendingStart struct {
	done chan struct{}
	inst *instance
	err  error
}

// instance returns the live process, starting one if needed. It waits out
// a restart backoff, or a start (its own or another call's), bounded by
// ctx, and fails fast during quarantine. No lock is held while a process
// starts.
func (s *supervisor) instance(ctx context.Context) (*instance, error) {
	for {
		s.mu.Lock()
		if s.h.isClosed() {
			s.mu.Unlock()
			return nil, errors.New("plugin host is closed")
		}
		if s.inst != nil && s.inst.alive() {
			inst := s.inst
			s.mu.Unlock()
			return inst, nil
		}
		if s.inst != nil {
			s.exitedLocked(s.inst)
		}
		now := time.Now()
		if now.Before(s.quarantined) {
			err := s.quarantineErrorLocked()
			s.h.metrics.unavailable(s.name, true)
			s.mu.Unlock()
			return nil, err
		}
		if wait := s.nextStart.Sub(now); wait > 0 {
			s.mu.Unlock()
			if !backoff.Sleep(ctx, wait) {
				return nil, fmt.Errorf("plugin %q is restarting (backoff %s): %w", s.name, wait.Round(time.Millisecond), context.Cause(ctx))
			}
			continue
		}
		p, mine := s.starting, false
		if p == nil {
			if p = s.startLocked(ctx); p == nil {
				s.mu.Unlock()
				return nil, errors.New("plugin host is closed")
			}
			mine = true
		}
		// Wait for the start, not holding s.mu, which Status needs.
		s.mu.Unlock()
		select {
		case <-p.done:
			if mine {
				return p.inst, p.err
			}
		case <-ctx.Done():
			// The start goes on, for the next run: a run's timeout
			// bounds its wait, not the start (StartTimeout does).
			return nil, fmt.Errorf("waiting for plugin %q to start: %w", s.name, context.Cause(ctx))
		}
	}
}

// startLocked starts the plugin's process on a goroutine of its own, which
// Close waits for, and returns the start; nil once the host is closed.
// Called with s.mu held.
func (s *supervisor) startLocked(ctx context.Context) *pendingStart {
	if !s.h.addStart() {
		return nil
	}
	p := &pendingStart{done: make(chan struct{})}
	s.starting = p
	s.replacingLocked()
	// Starting is bounded by StartTimeout, not by the caller's deadline:
	// a run with a short timeout must still be able to start a plugin.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.h.opts.StartTimeout)
	go func() {
		defer s.h.starts.Done()
		inst, err := s.h.start(sctx, s.name, s.h.expectedFor(s.name))
		cancel()
		p.inst, p.err = s.started(inst, err)
		close(p.done)
	}()
	return p
}

// started makes the process a start made the plugin's, or notes the
// start's failure, and returns what the run that started it gets.
func (s *supervisor) started(inst *instance, err error) (*instance, error) {
	s.mu.Lock()
	s.starting = nil
	if err == nil && s.h.isClosed() {
		s.mu.Unlock()
		inst.kill("closed")
		return nil, errors.New("plugin host is closed")
	}
	if err != nil {
		s.crashLocked(ReasonStart, causeOf(err), err.Error())
		s.h.metrics.unavailable(s.name, true)
		s.mu.Unlock()
		return nil, err
	}
	s.installLocked(inst)
	s.mu.Unlock()
	return inst, nil
}

// replacingLocked counts an attempt to start a process in place of one
// that went away, when it begins, so that one that fails (a binary that is
// missing, not executable, another plugin, or never hands shake) counts as
// much as one that comes up: each attempt counts once, by why the process
// or attempt before it went away (crash, hung, unhealthy, start, restart).
// A plugin that has never had a process replaces nothing: its failed first
// starts show in pacer_plugin_unavailable, not here.
func (s *supervisor) replacingLocked() {
	if s.starts == 0 || s.lastReason == "" {
		return
	}
	s.h.metrics.restart(s.name, s.lastReason)
	s.restarts++
	s.lastReason = ""
}

// installLocked makes inst the plugin's process.
func (s *supervisor) installLocked(inst *instance) {
	s.starts++
	s.lastReason = ""
	s.inst = inst
	s.lastCause, s.lastErr = "", ""
	s.h.metrics.up(s.name, true)
	s.h.metrics.unavailable(s.name, false)
	s.h.metrics.quarantined(s.name, false) // a start happens only outside a quarantine
	go s.probe(inst)
}

// adopt makes inst, started and checked by CheckTasks, the plugin's
// process if it has none and is not quarantined; otherwise inst is stopped.
func (s *supervisor) adopt(inst *instance) {
	s.mu.Lock()
	if (s.inst == nil || !s.inst.alive()) && !time.Now().Before(s.quarantined) && !s.h.isClosed() {
		if s.inst != nil {
			s.exitedLocked(s.inst)
		}
		s.replacingLocked() // the check's start replaces a process that went away
		s.installLocked(inst)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	inst.kill("closed")
}

// quarantineErrorLocked says why the plugin is quarantined and how to end it.
func (s *supervisor) quarantineErrorLocked() error {
	return fmt.Errorf("%w: %q failed %d times within %s, the last time because %s (%s); runs fail fast until %s, or run \"pacer plugins restart %s\" once it is fixed",
		ErrPluginQuarantined, s.name, s.h.opts.QuarantineCrashes, s.h.opts.QuarantineWindow, causeText[s.lastCause], s.lastErr,
		s.quarantined.Format(time.RFC3339), s.name)
}

// exitedLocked records that inst is gone, as a crash unless we killed it.
func (s *supervisor) exitedLocked(inst *instance) {
	if s.inst != inst {
		return
	}
	s.inst = nil
	s.h.metrics.up(s.name, false)
	inst.stopOnce.Do(func() { close(inst.stop) })
	reason := ReasonCrash
	if r := inst.reason.Load(); r != nil {
		reason = *r
	} else {
		// It exited on its own: release the client's connection too.
		// (Fast: there is no process left to wait for.)
		inst.client.Kill()
	}
	switch reason {
	case "closed":
		return
	case ReasonRestart:
		s.lastReason = reason
		return
	}
	s.log.Warn("plugin process gone", "pid", inst.pid, "reason", reason)
	cause, what := CauseCrashed, "exited on its own"
	switch reason {
	case ReasonHung:
		cause, what = CauseHung, "was killed: a task ignored cancellation"
	case ReasonUnhealthy:
		cause, what = CauseUnhealthy, "was killed: health probes failed"
	}
	s.crashLocked(reason, cause, fmt.Sprintf("process %d %s", inst.pid, what))
}

// crashLocked counts a failure (reason: the metric's label; cause and
// text: what operators see), sets the backoff and maybe quarantines.
func (s *supervisor) crashLocked(reason, cause, text string) {
	now := time.Now()
	o := s.h.opts
	// The text may hold what the plugin wrote to stderr or stdout (a start
	// failure quotes it): it is kept sanitized, as every place it leaves
	// the runner (the API's last_error, /readyz, pacer plugins) shows it.
	text = o.Sanitize(text)
	s.lastReason, s.lastCause, s.lastErr = reason, cause, text
	s.consecutive++
	cut := 0
	for cut < len(s.crashes) && now.Sub(s.crashes[cut]) > o.QuarantineWindow {
		cut++
	}
	s.crashes = append(s.crashes[cut:], now)
	if len(s.crashes) >= o.QuarantineCrashes {
		s.quarantined = now.Add(o.QuarantineFor)
		s.h.metrics.quarantined(s.name, true)
		if s.unquarantine != nil {
			s.unquarantine.Stop()
		}
		s.unquarantine = time.AfterFunc(o.QuarantineFor, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !time.Now().Before(s.quarantined) {
				s.h.metrics.quarantined(s.name, false)
			}
		})
		s.crashes = nil
		s.consecutive = 0
		s.log.Error("plugin quarantined: failing repeatedly", "failures", o.QuarantineCrashes,
			"window", o.QuarantineWindow, "until", s.quarantined, "cause", cause, "last_error", text)
		return
	}
	s.nextStart = now.Add(backoff.Policy{Initial: o.RestartBackoff, Max: o.MaxRestartBackoff}.Delay(s.consecutive))
}

// ok records a run that ended without a process failure.
func (s *supervisor) ok() {
	s.mu.Lock()
	s.consecutive = 0
	s.mu.Unlock()
}

// failed reports that inst broke during a call.
func (s *supervisor) failed(inst *instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !inst.alive() {
		s.exitedLocked(inst)
	}
}

// probe health-checks inst until it stops: an exit is noticed without
// waiting for the next run, and a process that stops answering is killed.
func (s *supervisor) probe(inst *instance) {
	t := time.NewTicker(s.h.opts.ProbeInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-inst.stop:
			return
		case <-t.C:
		}
		if inst.client.Exited() {
			s.failed(inst)
			_ = s.h.afterDeath(inst, "", errors.New("plugin process exited"))
			return
		}
		if err := inst.ping(s.h.opts.ProbeInterval); err != nil {
			failures++
			s.log.Warn("plugin health probe failed", "pid", inst.pid, "failures", failures, "error", err)
			if failures >= 3 {
				inst.kill(ReasonUnhealthy)
				s.failed(inst)
				_ = s.h.afterDeath(inst, "", errors.New("plugin process killed"))
				return
			}
			continue
		}
		failures = 0
	}
}

// close kills the process for good.
func (s *supervisor) close() {
	s.mu.Lock()
	inst := s.inst
	s.inst = nil
	if s.unquarantine != nil {
		s.unquarantine.Stop()
	}
	s.mu.Unlock()
	if inst != nil {
		inst.kill("closed")
		s.h.metrics.up(s.name, false)
		s.log.Info("plugin stopped", "pid", inst.pid)
	}
}

// Status describes a plugin for operators.
type Status struct {
	Name       string `json:"name"`
	Path       string `json:"path,omitempty"`
	Version    string `json:"version,omitempty"`
	SDKVersion string `json:"sdk_version,omitempty"`
	State      string `json:"state"` // not_started, up, down, quarantined
	PID        int    `json:"pid,omitempty"`
	// Restarts counts attempts to replace a process that went away,
	// failed ones included: the sum of pacer_plugin_restarts_total.
	Restarts int `json:"restarts"`
	// Transport is how the host calls the running process's tasks:
	// "run_stream" (many runs over one stream) or "per_run" (one call each).
	Transport   string     `json:"transport,omitempty"`
	Quarantined *time.Time `json:"quarantined_until,omitempty"`
	Tasks       []TaskInfo `json:"tasks,omitempty"`
	Error       string     `json:"error,omitempty"`
	// Cause and LastError say why the plugin last failed (to start, or
	// its process went away) while it is not up: one of the Cause
	// constants, and the error.
	Cause     string `json:"cause,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// TaskInfo describes one task of a plugin.
type TaskInfo struct {
	Name         string `json:"name"`
	Description  string `json:"description,omitempty"`
	ParamsSchema string `json:"params_schema,omitempty"`
}

func (s *supervisor) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.name, State: "not_started", Restarts: s.restarts}
	up := s.inst != nil && s.inst.alive()
	switch {
	case time.Now().Before(s.quarantined):
		q := s.quarantined
		st.State, st.Quarantined = "quarantined", &q
	case up:
		st.State, st.PID = "up", s.inst.pid
	case s.starts > 0 || s.lastCause != "":
		st.State = "down"
	}
	if !up {
		st.Cause, st.LastError = s.lastCause, s.lastErr
	}
	// A process that is gone says nothing about what the next one offers.
	if up {
		st.Transport = s.inst.transport(s.h)
		st.Version, st.SDKVersion = s.inst.desc.GetVersion(), s.inst.desc.GetSdkVersion()
		for _, t := range s.inst.desc.GetTasks() {
			st.Tasks = append(st.Tasks, TaskInfo{Name: t.GetName(), Description: t.GetDescription(), ParamsSchema: t.GetParamsSchemaJson()})
		}
	}
	return st
}

// Quarantined lists the plugins in quarantine now.
func (h *Host) Quarantined() []string {
	h.mu.Lock()
	sups := make([]*supervisor, 0, len(h.plugins))
	for _, s := range h.plugins {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	var out []string
	for _, s := range sups {
		s.mu.Lock()
		if time.Now().Before(s.quarantined) {
			out = append(out, s.name)
		}
		s.mu.Unlock()
	}
	slices.Sort(out)
	return out
}

// quarantineErrMax bounds the error QuarantineProblem quotes per plugin: an
// identity error can list every config reference of the plugin's jobs (the
// whole text is in Status).
const quarantineErrMax = 160

// QuarantineProblem says which plugins are in quarantine now and each one's
// real cause ("plugin shell quarantined (cause identity: <its error, cut
// short>)"), or returns nil. A quarantine follows repeated failures of any
// kind, not only crashes: a wrong or missing binary is never started at all.
func (h *Host) QuarantineProblem() error {
	h.mu.Lock()
	sups := make([]*supervisor, 0, len(h.plugins))
	for _, s := range h.plugins {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	slices.SortFunc(sups, func(a, b *supervisor) int { return strings.Compare(a.name, b.name) })
	var parts []string
	for _, s := range sups {
		s.mu.Lock()
		if time.Now().Before(s.quarantined) {
			parts = append(parts, fmt.Sprintf("plugin %s quarantined (cause %s: %s)", s.name, s.lastCause, shorten(s.lastErr, quarantineErrMax)))
		}
		s.mu.Unlock()
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("%s; see \"pacer plugins\" for the whole error, and run \"pacer plugins restart NAME\" once it is fixed", strings.Join(parts, "; "))
}

// shorten cuts s to at most n runes, marking the cut with "…".
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimRight(string(r[:n-1]), " ,;:") + "…"
}

// Restart stops the plugin's process, forgets its quarantine, backoff and
// failures, and starts a new process at once, checked against the jobs
// that use it. It refuses while runs are in progress (ErrPluginBusy) unless
// force is set; then those runs fail as crashed. It returns the plugin's
// status afterwards, and the start's error if it failed.
func (h *Host) Restart(ctx context.Context, name string, force bool) (Status, error) {
	if h.isClosed() {
		return Status{}, errors.New("plugin host is closed")
	}
	h.mu.Lock()
	s, known := h.plugins[name]
	h.mu.Unlock()
	if !known {
		if why := h.maskedName(name); why != "" {
			return Status{}, fmt.Errorf("%w: %s", ErrPluginNotFound, why)
		}
		if _, err := h.Path(name); err != nil {
			return Status{}, err // nothing to start: leave no trace
		}
		s = h.supervisor(name)
	}
	s.mu.Lock()
	old := s.inst
	if old != nil && old.alive() && old.calls.Load() > 0 && !force {
		n := old.calls.Load()
		s.mu.Unlock()
		return s.statusWithPath(), fmt.Errorf("%w: %d runs of plugin %q in progress; retry when they end, or force the restart (they then fail)", ErrPluginBusy, n, name)
	}
	s.inst = nil
	s.quarantined, s.nextStart, s.crashes, s.consecutive = time.Time{}, time.Time{}, nil, 0
	if s.unquarantine != nil {
		s.unquarantine.Stop()
	}
	h.metrics.quarantined(name, false)
	if s.starts > 0 {
		s.lastReason = ReasonRestart
	}
	s.mu.Unlock()
	if old != nil {
		s.log.Info("plugin restart requested: stopping the process", "pid", old.pid)
		old.kill(ReasonRestart)
		h.metrics.up(name, false)
		_, _ = h.sweep(h.opts.TreeTimeout)
	}
	_, err := s.instance(ctx)
	if err == nil {
		s.log.Info("plugin restarted")
	}
	return s.statusWithPath(), err
}

func (s *supervisor) statusWithPath() Status {
	st := s.status()
	if p, err := s.h.Path(s.name); err == nil {
		st.Path = p
	} else {
		st.Error = s.h.opts.Sanitize(err.Error())
	}
	return st
}
