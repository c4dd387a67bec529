// Package pluginhost runs task plugins for the runner: it finds plugin
// binaries, verifies and starts them through go-plugin over gRPC (one process
// per plugin, shared by concurrent runs up to a limit), calls their tasks,
// streams their logs, progress and spans back, and supervises the processes.
//
// Lifecycle of one plugin (see supervisor.go): the first call starts the
// process (start timeout, optional SHA-256 pin, AutoMTLS, protocol
// negotiation) and asks it to Describe itself. A health prober watches it.
// When it exits or is killed, the next call starts a new one after an
// exponential backoff; after QuarantineCrashes failures within
// QuarantineWindow, calls fail fast for QuarantineFor. Close kills every
// plugin.
//
// Cancellation: when a call's context ends (timeout, leadership lost,
// replaced), the host sends Cancel to the plugin and waits CancelGrace for the
// task to return. A task that ignores cancellation gets its process killed
// (and restarted); the call then fails with ErrPluginKilled.
//
// The plugin process is tied to the runner: on Linux the kernel sends it
// SIGTERM when the runner dies, and the SDK also polls for a new parent.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pacerun/pacer/internal/coalesce"
	"github.com/pacerun/pacer/internal/wireutf8"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Errors a call can fail with, besides the context's own errors.
var (
	ErrPluginNotFound = errors.New("plugin not found")
	ErrPluginCrashed  = errors.New("plugin crashed")
	ErrPluginKilled   = errors.New("plugin killed")
	ErrTaskNotFound   = errors.New("unknown task")
	ErrInvalidParams  = errors.New("invalid params")
	ErrProtocol       = errors.New("plugin protocol error")
)

// Options configure a Host. Zero values take the defaults in parentheses.
type Options struct {
	// Dir holds plugin binaries, each named after its plugin.
	Dir string
	// Paths maps plugin names to explicit binary paths; they win over Dir.
	Paths map[string]string
	// Checksums maps plugin names to "sha256:<hex>"; a binary whose hash
	// differs is refused.
	Checksums map[string]string
	// StartTimeout bounds process start, handshake and Describe (10s).
	StartTimeout time.Duration
	// MaxConcurrency bounds concurrent calls per plugin process (32).
	MaxConcurrency int
	// CancelGrace is how long a cancelled task may take to return before
	// its process is killed (5s).
	CancelGrace time.Duration
	// ProbeInterval is the health-probe period (5s); three failed probes in
	// a row kill the process.
	ProbeInterval time.Duration
	// RestartBackoff is the first restart delay after a crash (500ms),
	// doubling per consecutive crash up to MaxRestartBackoff (30s).
	RestartBackoff, MaxRestartBackoff time.Duration
	// QuarantineCrashes failures within QuarantineWindow (5 in 1m)
	// quarantine a plugin for QuarantineFor (5m).
	QuarantineCrashes int
	QuarantineWindow  time.Duration
	QuarantineFor     time.Duration
	// LogLinesPerSecond and LogBurst rate-limit one run's plugin log lines
	// (100/s, burst 500); LogBytesPerRun caps their volume (1 MiB). Dropped
	// lines are counted and reported once at the end of the run.
	LogLinesPerSecond float64
	LogBurst          int
	LogBytesPerRun    int
	// Logger receives the host's and the plugins' own output. Default: discard.
	Logger *slog.Logger
	// TracerProvider instruments the gRPC calls. Default: no tracing.
	TracerProvider trace.TracerProvider
	// ImportSpan, if set, receives the spans plugins finish, for export.
	ImportSpan func(sdktrace.ReadOnlySpan)
	// Sanitizer cleans what plugins supply: the attributes of their log
	// records, of the JSON lines their processes write to stderr and of
	// the spans they finish, with none of the exemptions meant for the
	// runner's own fields (observability.Sanitizer.PluginAttr). Default:
	// observability.DefaultSanitizer, never none.
	Sanitizer *observability.Sanitizer
	// Sanitize cleans text plugins send (span names, status messages, the
	// stderr a failed start quotes) and the errors the host reports.
	// Default: Sanitizer's String.
	Sanitize func(string) string
	// Metrics, if set, receives pacer_plugin_* metrics.
	Metrics *observability.Metrics
	// InheritEnv names variables of the runner's environment (NAME or
	// PREFIX_*) that plugin processes get besides BaseEnv.
	InheritEnv []string
	// DenyEnv names variables that no plugin process and no task ever gets,
	// whatever asks for them: those holding the API token and the etcd
	// password.
	DenyEnv []string
	// Subreaper makes the host's process a child subreaper (Linux) that
	// kills and reaps what a dead plugin process leaves behind (see
	// orphans.go). Set it only where the host starts every child process
	// of its process, as in "pacer run": every other child is taken for a
	// dead plugin's orphan.
	Subreaper bool
	// TreeTimeout bounds how long a call whose plugin died waits for the
	// processes it left to die after SIGKILL (10s); the call then fails
	// with an error wrapping proctree.ErrTreeAlive.
	TreeTimeout time.Duration
	// DisableRunStream calls every run with its own Run call, also on
	// plugins that offer RunStream (see stream.go): for comparisons, and as
	// a way around a plugin whose RunStream misbehaves.
	DisableRunStream bool
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.StartTimeout, 10*time.Second)
	def(&o.CancelGrace, 5*time.Second)
	def(&o.ProbeInterval, 5*time.Second)
	def(&o.RestartBackoff, 500*time.Millisecond)
	def(&o.MaxRestartBackoff, 30*time.Second)
	def(&o.QuarantineWindow, time.Minute)
	def(&o.QuarantineFor, 5*time.Minute)
	def(&o.TreeTimeout, 10*time.Second)
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = 32
	}
	if o.QuarantineCrashes <= 0 {
		o.QuarantineCrashes = 5
	}
	if o.LogLinesPerSecond <= 0 {
		o.LogLinesPerSecond = 100
	}
	if o.LogBurst <= 0 {
		o.LogBurst = 500
	}
	if o.LogBytesPerRun <= 0 {
		o.LogBytesPerRun = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TracerProvider == nil {
		o.TracerProvider = noop.NewTracerProvider()
	}
	if o.Sanitizer == nil {
		o.Sanitizer = observability.DefaultSanitizer()
	}
	if o.Sanitize == nil {
		o.Sanitize = o.Sanitizer.String
	}
}

// Host starts, calls and supervises plugins. It is safe for concurrent use.
type Host struct {
	opts    Options
	log     *slog.Logger
	metrics hostMetrics
	tracer  trace.Tracer // the client spans of runs on a RunStream

	mu       sync.Mutex
	plugins  map[string]*supervisor
	closed   bool
	expected map[string][]TaskRef // plugin -> the jobs that use it (CheckTasks)

	// See orphans.go.
	spawn     sync.RWMutex         // read: a plugin process starts; write: orphans are swept
	ownMu     sync.Mutex           // guards own, runs and swept
	own       map[int]*instance    // plugin processes started and not reaped yet
	forked    map[int]*procRunner  // plugin processes forked and not reaped yet (process.go)
	runs      map[string]*instance // run ID -> the process running it
	swept     []sweptPID           // processes sweeps killed, for afterDeath's report
	done      chan struct{}        // closed by Close: stops the sweeper
	closing   context.Context      // ended by Close: stops plugin starts in progress
	stopStart context.CancelFunc
	starts    sync.WaitGroup // plugin starts in progress (supervisor.startLocked)
	closeOnce sync.Once
	sweeper   sync.WaitGroup
	looks     coalesce.After[bool] // for orphans after runs (orphanedSince)

	lease atomic.Pointer[leaseSource] // see SetLease
}

// leaseSource is what SetLease set.
type leaseSource struct {
	deadline func() (time.Time, bool)
	every    time.Duration
}

// SetLease bounds the runs of plugins called over RunStream by the
// runner's lease: while a stream has runs, every message on it, and one at
// least every period, tells the plugin how long they may go on
// (pluginv1.Lease: deadline's answer less now). deadline is the instant
// the runner fences itself (false: no lease, nothing is sent). A plugin
// that hears nothing newer cancels the stream's runs when that time has
// passed: a frozen runner cannot cancel them itself. Runs of plugins called
// per run have no such bound. Set it before the first run.
func (h *Host) SetLease(deadline func() (time.Time, bool), every time.Duration) {
	h.lease.Store(&leaseSource{deadline: deadline, every: every})
}

// New returns a Host. It starts nothing until a plugin is first used.
func New(opts Options) *Host {
	opts.defaults()
	h := &Host{opts: opts, log: opts.Logger, metrics: hostMetrics{opts.Metrics}, plugins: map[string]*supervisor{},
		own: map[int]*instance{}, forked: map[int]*procRunner{}, runs: map[string]*instance{}, done: make(chan struct{}),
		tracer: opts.TracerProvider.Tracer("github.com/pacerun/pacer/runner/pluginhost")}
	h.closing, h.stopStart = context.WithCancel(context.Background())
	if h.opts.Subreaper {
		h.enableSubreaper()
	}
	return h
}

func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// addStart counts a plugin start in (starts), unless the host is closed.
func (h *Host) addStart() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.starts.Add(1)
	return true
}

// Discover lists the plugin names available: every explicit path, every
// plugin the jobs use (as of the last CheckTasks), and every executable file
// in Dir whose name is a plugin's, not a backup's or a hidden file's
// (strayName): "shell.orig", "shell~" or ".shell.swp" beside "shell" is not
// a plugin, unless a job names it.
func (h *Host) Discover() ([]string, error) {
	seen := map[string]bool{}
	for name := range h.opts.Paths {
		seen[name] = true
	}
	h.mu.Lock()
	for name := range h.expected {
		seen[name] = true
	}
	h.mu.Unlock()
	entries, err := os.ReadDir(h.opts.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read plugins dir: %w", err)
	}
	for _, e := range entries {
		if strayName(e.Name()) || h.maskedName(e.Name()) != "" {
			continue
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			seen[e.Name()] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// maskedName is why a plugin name the log sanitizer would change cannot
// be a plugin's ("" if it would not): its log lines, metrics and API
// answers would name it differently, and the advice they give (pacer
// plugins restart NAME) could not be followed (attack 32, C3). Jobs cannot
// name such a plugin (config refuses it); a file of such a name in Dir is
// not listed, and a restart of it is refused.
func (h *Host) maskedName(name string) string {
	if out := h.opts.Sanitizer.String(name); out != name {
		return fmt.Sprintf("plugin %q: the log sanitizer masks this name (an address, a token, a card number or an "+
			"observability.sanitize pattern), so logs and metrics could not name it; rename the file", out)
	}
	return ""
}

// strayName reports whether a file name in the plugins directory is not a
// plugin's when no job names it: hidden (".shell.swp"), an editor's backup
// ("shell~"), or a name with an extension ("shell.orig", "shell.bak",
// "http.dpkg-old"). Plugins are named after themselves, without one; a job
// may still name such a file (plugin: hello_python.py), and then it is listed.
func strayName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") || strings.Contains(name, ".")
}

// Path returns the binary path for a plugin name, checking it is executable.
func (h *Host) Path(name string) (string, error) {
	path, ok := h.opts.Paths[name]
	if !ok {
		if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
			return "", fmt.Errorf("%w: invalid plugin name %q", ErrPluginNotFound, name)
		}
		path = filepath.Join(h.opts.Dir, name)
	}
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("%w: %q has no binary at %s (build it, or set plugins.dir or plugins.paths)", ErrPluginNotFound, name, path)
	case err != nil:
		return "", fmt.Errorf("%w: %q: %v", ErrPluginNotFound, name, err)
	case !info.Mode().IsRegular() || info.Mode()&0o111 == 0:
		return "", fmt.Errorf("%w: %q: %s is not an executable file", ErrPluginNotFound, name, path)
	}
	return path, nil
}

// Describe starts the plugin if needed and returns its self-description.
func (h *Host) Describe(ctx context.Context, name string) (*pluginv1.DescribeResponse, error) {
	inst, err := h.supervisor(name).instance(ctx)
	if err != nil {
		return nil, err
	}
	return inst.desc, nil
}

// Status reports every plugin the host knows of: discovered binaries and
// plugins it has started.
func (h *Host) Status() []Status {
	names, _ := h.Discover()
	h.mu.Lock()
	for n := range h.plugins {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	h.mu.Unlock()
	sort.Strings(names)
	out := make([]Status, 0, len(names))
	for _, n := range names {
		out = append(out, h.supervisor(n).statusWithPath())
	}
	return out
}

// start starts a plugin process, checks that it is the plugin that refs
// (the jobs that use it) expect, and returns it. A failure is a
// *StartError saying its cause.
// outputLogger logs a plugin process's stdout or stderr lines, within the
// per-run log rate.
func (h *Host) outputLogger(log *slog.Logger, plugin string, level slog.Level, stream string) *lineLogger {
	var lim *rate.Limiter
	if h.opts.LogLinesPerSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(h.opts.LogLinesPerSecond), h.opts.LogBurst)
	}
	return newLineLogger(log, h.opts.Sanitizer, level, stream, lim, func() { h.metrics.droppedLogs(plugin, 1) })
}

func (h *Host) start(ctx context.Context, name string, refs []TaskRef) (*instance, error) {
	inst, err := h.startProcess(ctx, name)
	if err != nil {
		return nil, startError(name, CauseHandshake, err)
	}
	if err := verifyIdentity(name, inst.path, inst.desc, refs, h.opts.Sanitizer); err != nil {
		h.log.Error("plugin refused: not the plugin the jobs expect", "plugin", name, "path", inst.path, "error", err.Error())
		inst.kill("refused")
		return nil, err
	}
	return inst, nil
}

func (h *Host) startProcess(ctx context.Context, name string) (*instance, error) {
	path, err := h.Path(name)
	if err != nil {
		return nil, startError(name, CauseNotFound, err)
	}
	if _, err := h.secureConfig(name); err != nil {
		return nil, startError(name, CauseChecksum, err)
	}
	if err := h.verifyChecksum(name, path); err != nil {
		return nil, err
	}
	log := h.log.With("plugin", name)
	// StartTimeout bounds it all: process start, handshake and Describe.
	started := time.Now()
	ctx, cancel := context.WithDeadline(ctx, started.Add(h.opts.StartTimeout))
	defer cancel()
	defer context.AfterFunc(h.closing, cancel)()
	// Quoted by a start failure: masked before it is cut (the API and the
	// log show it).
	stderr := &observability.SanitizedTail{Max: 1024, Clean: h.opts.Sanitize}
	var forked atomic.Pointer[procRunner]
	// go-plugin's handshake takes no context: when ctx ends first (the
	// host closes, the caller gives up), killing the process ends it.
	defer context.AfterFunc(ctx, func() {
		if p := forked.Load(); p != nil {
			_ = p.Kill(context.Background())
		}
	})()
	runnerFunc := h.newProcRunner(path, h.processEnv())
	client := plugin.NewClient(&plugin.ClientConfig{
		Stderr:           stderr,
		HandshakeConfig:  pluginv1.Handshake,
		VersionedPlugins: pluginv1.VersionedPlugins(nil),
		// The host starts the process (process.go). A minimal environment,
		// not the runner's (SkipHostEnv): the runner's may hold the API
		// token, the etcd password, cloud credentials. go-plugin adds its
		// handshake variables. The checksum was verified above.
		RunnerFunc: func(l hclog.Logger, spec *exec.Cmd, dir string) (runner.Runner, error) {
			r, err := runnerFunc(l, spec, dir)
			if err == nil {
				forked.Store(r.(*procRunner))
			}
			return r, err
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     h.opts.StartTimeout,
		SkipHostEnv:      true,
		AutoMTLS:         true,
		Logger:           newHCLogger(log, h.opts.Sanitizer),
		SyncStdout:       h.outputLogger(log, name, slog.LevelInfo, "stdout"),
		SyncStderr:       h.outputLogger(log, name, slog.LevelWarn, "stderr"),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(
				otelgrpc.WithTracerProvider(h.opts.TracerProvider),
				otelgrpc.WithPropagators(propagation.TraceContext{}),
				// A RunStream lives as long as its process: each run on it
				// gets its own client span instead (stream.go).
				otelgrpc.WithFilter(filters.Not(filters.FullMethodName(pluginv1.TaskPlugin_RunStream_FullMethodName))),
			)),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(pluginv1.MaxMessageBytes),
				grpc.MaxCallSendMsgSize(pluginv1.MaxMessageBytes),
			),
			grpc.WithStaticStreamWindowSize(pluginv1.StreamWindowBytes),
			grpc.WithStaticConnWindowSize(pluginv1.ConnWindowBytes),
		},
	})
	fail := func(err error) (*instance, error) {
		client.Kill() // the whole tree, and bounded: see procRunner
		ended := ""
		if p := forked.Load(); p != nil {
			ended = p.endedBy() // waited for by now: Kill waits for go-plugin's goroutines
		}
		switch said := stderr.String(); {
		case said != "" && ended != "":
			err = fmt.Errorf("%w; it ended with %s, its stderr with: %q", err, ended, said)
		case said != "":
			err = fmt.Errorf("%w; its stderr ended with: %q", err, said)
		case ended != "":
			err = fmt.Errorf("%w; it ended with %s and wrote nothing to stderr", err, ended)
		}
		return nil, err
	}
	// Bounded by StartTimeout: go-plugin times the handshake out, and
	// its connection does not block.
	rpcClient, err := client.Client()
	if err != nil {
		if ctx.Err() != nil && h.isClosed() {
			return fail(fmt.Errorf("start plugin %q (%s): stopped: the plugin host is closing", name, path))
		}
		if err.Error() == errStartTimeout || ctx.Err() != nil {
			// (What go-plugin says of a process killed at the deadline,
			// "Unrecognized remote plugin message", would mislead.)
			return fail(fmt.Errorf("start plugin %q (%s): no handshake within plugins.start_timeout (%s)", name, path, h.opts.StartTimeout))
		}
		return fail(fmt.Errorf("start plugin %q (%s): %w", name, path, err))
	}
	raw, err := rpcClient.Dispense(pluginv1.PluginName)
	if err != nil {
		return fail(fmt.Errorf("start plugin %q: %w", name, err))
	}
	rpc := raw.(pluginv1.TaskPluginClient)
	t0 := time.Now()
	desc, err := rpc.Describe(ctx, &pluginv1.DescribeRequest{})
	h.metrics.rpc(name, "describe", time.Since(t0))
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("start plugin %q (%s): no answer to Describe within plugins.start_timeout (%s) of the start: %w", name, path, h.opts.StartTimeout, err))
		}
		return fail(fmt.Errorf("start plugin %q: describe: %w", name, err))
	}
	proc := forked.Load()
	pid := proc.PID()
	log.Info("plugin started", "version", desc.GetVersion(), "pid", pid,
		"protocol", client.NegotiatedVersion(), "start_ms", time.Since(started).Milliseconds())
	inst := &instance{client: client, proto: rpcClient, rpc: rpc, desc: desc, pid: pid, proc: proc.proc, path: path, stop: make(chan struct{})}
	h.registered(inst)
	return inst, nil
}

// errStartTimeout is go-plugin's error for a plugin that did not hand
// shake within StartTimeout (go-plugin has no sentinel for it).
const errStartTimeout = "timeout while waiting for plugin to start"

func (h *Host) secureConfig(name string) (*plugin.SecureConfig, error) {
	want, ok := h.opts.Checksums[name]
	if !ok {
		return nil, nil
	}
	hexSum, found := strings.CutPrefix(want, "sha256:")
	sum, err := hex.DecodeString(hexSum)
	if !found || err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin %q: checksum %q must be sha256:<64 hex digits>", name, want)
	}
	return &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}, nil
}

// Run calls a task and waits for its result. When ctx ends first, the task
// is cancelled and given CancelGrace to return; Run then returns the task's
// own answer, or an error wrapping both ErrPluginKilled and ctx's cause if
// the process had to be killed. It returns ErrPluginCrashed if the process
// died, ErrPluginQuarantined while the plugin is quarantined, and the other
// sentinel errors above for the cases they name.
func (h *Host) Run(ctx context.Context, c Call) (*Result, error) {
	sup := h.supervisor(c.Plugin)
	if err := sup.acquire(ctx); err != nil {
		return nil, err
	}
	defer sup.release()
	inst, err := sup.instance(ctx)
	if err != nil {
		return nil, err
	}
	inst.calls.Add(1)
	defer inst.calls.Add(-1)
	params, err := structpb.NewStruct(c.Params)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	if ctx.Err() != nil { // e.g. the deadline passed while the plugin started
		return nil, context.Cause(ctx)
	}
	env := h.taskEnv(c.InheritEnv)
	// A variable holding bytes that are not UTF-8 must not make the
	// request unmarshalable: they become U+FFFD. (Params are valid:
	// structpb refuses anything else.)
	for k, v := range env {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			delete(env, k)
			env[wireutf8.String(k)] = wireutf8.String(v)
		}
	}
	req := &pluginv1.RunRequest{Task: c.Task, Params: params, Context: runContext(c.Info, env)}
	if dl, ok := ctx.Deadline(); ok {
		req.Timeout = durationpb.New(time.Until(dl))
	}

	// The stream outlives ctx by up to CancelGrace: ending ctx cancels the
	// task through the Cancel RPC, not by cutting the stream, so that a
	// task that stops in time still reports how it ended.
	sctx, cut := context.WithCancel(trace.ContextWithSpan(context.WithoutCancel(ctx), trace.SpanFromContext(ctx)))
	defer cut()

	runID := c.Info.RunID
	h.ownMu.Lock()
	h.runs[runID] = inst
	h.ownMu.Unlock()
	ended := sync.OnceFunc(func() {
		h.ownMu.Lock()
		delete(h.runs, runID)
		h.ownMu.Unlock()
	})
	defer ended()

	t0 := time.Now()
	var sc *streamCall // the run on the process's RunStream, if it has one
	if rs := inst.runStream(h, c.Plugin); rs != nil {
		if sc, err = rs.start(sctx, &c, req); err != nil {
			h.metrics.rpc(c.Plugin, "run", time.Since(t0))
			return nil, err
		}
	}
	var killed atomic.Bool
	stopWatch := context.AfterFunc(ctx, func() {
		reason := context.Cause(ctx).Error()
		cctx, cancel := context.WithTimeout(sctx, h.opts.CancelGrace)
		defer cancel()
		if sc != nil {
			sc.cancel(reason)
		} else {
			_, _ = inst.rpc.Cancel(cctx, &pluginv1.CancelRequest{RunId: runID, Reason: reason})
		}
		select {
		case <-cctx.Done():
		case <-sctx.Done():
			return // the call ended
		}
		if sctx.Err() == nil {
			killed.Store(true)
			sup.log.Error("task ignored cancellation; killing the plugin process", "task", c.Task,
				"correlation_id", c.Info.CorrelationID, "job", c.Info.JobID, "run_id", runID,
				"trace_id", trace.SpanContextFromContext(ctx).TraceID().String(), "grace", h.opts.CancelGrace, "pid", inst.pid)
			inst.kill(ReasonHung)
			cut()
		}
	})
	defer stopWatch()

	var res *Result
	if sc != nil {
		res, err = sc.wait(sctx)
	} else {
		res, err = h.stream(sctx, inst, c, req)
	}
	h.metrics.rpc(c.Plugin, "run", time.Since(t0))
	ended() // what the run left is no longer spared
	switch {
	case killed.Load():
		sup.failed(inst)
		return nil, h.afterDeath(inst, runID, fmt.Errorf("%w: task %q did not stop within %s of being cancelled (%w)",
			ErrPluginKilled, c.Task, h.opts.CancelGrace, context.Cause(ctx)))
	case errors.Is(err, ErrPluginCrashed):
		sup.failed(inst)
		err = h.afterDeath(inst, runID, err)
	default:
		if err == nil {
			sup.ok()
		}
		res, err = h.afterRun(c, res, err)
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrPluginCrashed) {
		return nil, fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return res, err
}

// stream runs one Run RPC to its end.
func (h *Host) stream(ctx context.Context, inst *instance, c Call, req *pluginv1.RunRequest) (*Result, error) {
	stream, err := inst.rpc.Run(ctx, req)
	if err != nil {
		return nil, h.callError(inst, c, err)
	}
	logs := newLogLimiter(&h.opts, c.OnLog)
	defer logs.finish(c.Plugin, h.metrics)
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: plugin %q ended the run without a result", ErrProtocol, c.Plugin)
		}
		if err != nil {
			return nil, h.callError(inst, c, err)
		}
		switch e := ev.GetEvent().(type) {
		case *pluginv1.RunEvent_Log:
			logs.log(e.Log)
		case *pluginv1.RunEvent_Progress:
			if c.OnProgress != nil {
				c.OnProgress(progressOf(e.Progress))
			}
		case *pluginv1.RunEvent_Span:
			h.importSpan(c.Plugin, e.Span)
		case *pluginv1.RunEvent_Result:
			r := e.Result
			// The result is the last event: read the end of the stream so
			// the RPC completes cleanly (and its span ends with it).
			if _, err := stream.Recv(); err != io.EOF {
				return nil, fmt.Errorf("%w: plugin %q sent events after the result", ErrProtocol, c.Plugin)
			}
			return resultOf(r), nil
		default:
			return nil, fmt.Errorf("%w: plugin %q sent an unknown event", ErrProtocol, c.Plugin)
		}
	}
}

// callError turns a gRPC failure into one of the package's errors.
func (h *Host) callError(inst *instance, c Call, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.Canceled, codes.Internal:
		if err := inst.crashed(c); err != nil {
			return err
		}
	}
	return statusError(c, st)
}

// crashed returns ErrPluginCrashed for c when inst is gone: killed (the
// runs it had besides the one that made us kill it), or exited, which a
// broken connection is the first sign of: the process gets a moment to be
// reaped.
func (inst *instance) crashed(c Call) error {
	if r := inst.reason.Load(); r != nil {
		if *r == ReasonRestart {
			return fmt.Errorf("%w: plugin %q was restarted by an operator during task %q", ErrPluginCrashed, c.Plugin, c.Task)
		}
		return fmt.Errorf("%w: plugin %q was killed (%s) during task %q", ErrPluginCrashed, c.Plugin, *r, c.Task)
	}
	if inst.client.Exited() || waitExited(inst.client, 500*time.Millisecond) {
		return fmt.Errorf("%w: plugin %q exited during task %q", ErrPluginCrashed, c.Plugin, c.Task)
	}
	return nil
}

// statusError is callError for a status the plugin itself answered with.
func statusError(c Call, st *status.Status) error {
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrTaskNotFound, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrInvalidParams, strings.TrimPrefix(st.Message(), ErrInvalidParams.Error()+": "))
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: plugin %q task %q: message over the %d-byte limit: %s", ErrProtocol, c.Plugin, c.Task, pluginv1.MaxMessageBytes, st.Message())
	}
	return fmt.Errorf("plugin %q task %q: %s: %s", c.Plugin, c.Task, st.Code(), st.Message())
}

// waitExited gives a dying plugin process a moment to be reaped, so that a
// connection reset caused by a crash is reported as the crash.
func waitExited(c *plugin.Client, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.Exited() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// Close stops every plugin process and waits for them to exit.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	h.stopStart()
	sups := make([]*supervisor, 0, len(h.plugins))
	for _, s := range h.plugins {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	h.starts.Wait() // ended by stopStart; a process started meanwhile is killed
	var wg sync.WaitGroup
	for _, s := range sups {
		wg.Go(s.close)
	}
	wg.Wait()
	// The plugins killed what they started as they stopped; anything a
	// plugin that was killed left behind is this process's to end.
	if killed, err := h.sweep(h.opts.TreeTimeout); err != nil {
		h.log.Error("processes of stopped plugins still alive", "error", err)
	} else if len(killed) > 0 {
		h.log.Warn("killed processes stopped plugins left behind", "pids", killed)
	}
	h.closeOnce.Do(func() { close(h.done) })
	h.sweeper.Wait()
	return nil
}
