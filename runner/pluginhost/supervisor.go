package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// ErrPluginQuarantined means the plugin crashed too often recently; runs
// fail fast until the quarantine ends.
var ErrPluginQuarantined = errors.New("plugin quarantined")

// Restart reasons: the values of pacer_plugin_restarts_total's reason label.
const (
	ReasonCrash     = "crash"     // the process exited on its own
	ReasonHung      = "hung"      // killed: a task ignored cancellation past the grace period
	ReasonUnhealthy = "unhealthy" // killed: health probes failed
	ReasonStart     = "start"     // the process failed to start or handshake
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
	starts       int
	lastReason   string      // why the previous process went away
	consecutive  int         // crashes since the last clean run
	crashes      []time.Time // within the quarantine window
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

	stop     chan struct{} // closes the health prober
	stopOnce sync.Once
	reason   atomic.Pointer[string] // set when we kill it on purpose
}

// alive reports whether the process runs and nobody asked it to stop.
func (i *instance) alive() bool { return i.reason.Load() == nil && !i.client.Exited() }

func (i *instance) kill(reason string) {
	i.reason.CompareAndSwap(nil, &reason)
	i.stopOnce.Do(func() { close(i.stop) })
	i.client.Kill()
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

// instance returns the live process, starting one if needed. It waits out
// a restart backoff (bounded by ctx) and fails fast during quarantine.
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
			until := s.quarantined
			s.h.metrics.unavailable(s.name, true)
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %q crashed %d times within %s; retrying after %s",
				ErrPluginQuarantined, s.name, s.h.opts.QuarantineCrashes, s.h.opts.QuarantineWindow, until.Format(time.RFC3339))
		}
		if wait := s.nextStart.Sub(now); wait > 0 {
			s.mu.Unlock()
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("plugin %q is restarting (backoff %s): %w", s.name, wait.Round(time.Millisecond), context.Cause(ctx))
			}
		}
		// Starting is bounded by StartTimeout, not by the caller's deadline:
		// a run with a short timeout must still be able to start a plugin.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.h.opts.StartTimeout)
		inst, err := s.h.start(sctx, s.name)
		cancel()
		if err != nil {
			s.crashLocked(ReasonStart)
			s.h.metrics.unavailable(s.name, true)
			s.mu.Unlock()
			return nil, err
		}
		if s.starts > 0 {
			s.h.metrics.restart(s.name, s.lastReason)
		}
		s.starts++
		s.inst = inst
		s.h.metrics.up(s.name, true)
		s.h.metrics.unavailable(s.name, false)
		s.h.metrics.quarantined(s.name, false) // a start happens only outside a quarantine
		go s.probe(inst)
		s.mu.Unlock()
		return inst, nil
	}
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
	if reason == "closed" {
		return
	}
	s.log.Warn("plugin process gone", "pid", inst.pid, "reason", reason)
	s.crashLocked(reason)
}

// crashLocked counts a crash, sets the backoff and maybe quarantines.
func (s *supervisor) crashLocked(reason string) {
	now := time.Now()
	o := s.h.opts
	s.lastReason = reason
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
		s.log.Error("plugin quarantined: crashing repeatedly", "crashes", o.QuarantineCrashes,
			"window", o.QuarantineWindow, "until", s.quarantined)
		return
	}
	backoff := o.RestartBackoff << min(s.consecutive-1, 16)
	if backoff > o.MaxRestartBackoff || backoff <= 0 {
		backoff = o.MaxRestartBackoff
	}
	s.nextStart = now.Add(backoff)
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
			_ = s.h.afterDeath(errors.New("plugin process exited"))
			return
		}
		if err := inst.proto.Ping(); err != nil {
			failures++
			s.log.Warn("plugin health probe failed", "pid", inst.pid, "failures", failures, "error", err)
			if failures >= 3 {
				inst.kill(ReasonUnhealthy)
				s.failed(inst)
				_ = s.h.afterDeath(errors.New("plugin process killed"))
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
	Name        string     `json:"name"`
	Path        string     `json:"path,omitempty"`
	Version     string     `json:"version,omitempty"`
	SDKVersion  string     `json:"sdk_version,omitempty"`
	State       string     `json:"state"` // not_started, up, down, quarantined
	PID         int        `json:"pid,omitempty"`
	Restarts    int        `json:"restarts"`
	Quarantined *time.Time `json:"quarantined_until,omitempty"`
	Tasks       []TaskInfo `json:"tasks,omitempty"`
	Error       string     `json:"error,omitempty"`
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
	st := Status{Name: s.name, State: "not_started", Restarts: max(s.starts-1, 0)}
	switch {
	case time.Now().Before(s.quarantined):
		q := s.quarantined
		st.State, st.Quarantined = "quarantined", &q
	case s.inst != nil && s.inst.alive():
		st.State, st.PID = "up", s.inst.pid
	case s.starts > 0:
		st.State = "down"
	}
	if s.inst != nil {
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
