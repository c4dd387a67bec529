// Package fxmodule wires the runner's parts together with go.uber.org/fx. It
// is the only package besides cmd/pacer that imports fx: every part it wires
// has a plain constructor and can be built without it.
//
// Start order (stop runs in reverse): tracer provider, the data-dir lock
// (embedded etcd only), plugin host (which starts every plugin the jobs use
// and checks their tasks and params, so a bad job fails the start before
// anything else happens), embedded etcd, etcd client (of the embedded
// etcd: in the process, filled in once it is up), etcd monitor,
// coordinator, runner, HTTP API. So on SIGTERM the API stops first,
// then the runner drains its runs, the coordinator resigns, the etcd client
// and server close, plugins are stopped, and spans are flushed.
package fxmodule

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/pacerun/pacer/internal/duration"
	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// Params are what the caller supplies.
type Params struct {
	Config *config.Config
	// ConfigPath names the config file in error messages.
	ConfigPath string
	// ConfigData is the content Config was parsed from: a file that
	// differs from it when the runner starts watching is applied.
	ConfigData []byte
	Version    string
	LogOutput  io.Writer
	// Subreaper makes the process a child subreaper that kills and reaps
	// what a dead plugin leaves behind (pluginhost.Options.Subreaper).
	// "pacer run" sets it; leave it off in a process that starts other
	// child processes, such as a test binary.
	Subreaper bool
}

// PluginHostOptions are the plugin host settings a config asks for. The
// variables holding the API token and the etcd password are never passed to
// plugins or tasks.
func PluginHostOptions(cfg *config.Config) pluginhost.Options {
	var deny []string
	for _, v := range []string{cfg.HTTP.TokenEnv, cfg.Cluster.Etcd.PasswordEnv} {
		if v != "" {
			deny = append(deny, v)
		}
	}
	return pluginhost.Options{
		Dir: cfg.Plugins.Dir, Paths: cfg.Plugins.Paths, Checksums: cfg.Plugins.Checksums,
		StartTimeout: cfg.Plugins.StartTimeout, MaxConcurrency: cfg.Plugins.MaxConcurrency,
		CancelGrace: cfg.Plugins.CancelGrace, InheritEnv: cfg.Plugins.InheritEnv, DenyEnv: deny,
	}
}

// TaskRefs lists the tasks cfg's jobs use, located in the config file down
// to the line of each key.
func TaskRefs(path string, cfg *config.Config) []pluginhost.TaskRef {
	refs := make([]pluginhost.TaskRef, 0, len(cfg.Jobs))
	for i := range cfg.Jobs {
		j := &cfg.Jobs[i]
		refs = append(refs, pluginhost.TaskRef{
			File: path, Job: fmt.Sprintf("jobs[%d]", i), Line: j.KeyLine,
			Plugin: j.Plugin, Task: j.Task, Params: j.Params,
		})
	}
	return refs
}

// ErrJobsRefused wraps the start-up error of a config whose jobs the
// plugins refuse: a plugin that cannot be started, an unknown task, or
// params that do not fit the task's schema. It is a config error.
var ErrJobsRefused = errors.New("the plugins refuse the config's jobs")

// Options returns the fx options for a runner application.
func Options(p Params) fx.Option {
	return fx.Options(
		fx.Supply(p),
		fx.Provide(
			func(p Params) *config.Config { return p.Config },
			NewSanitizer,
			newLogger,
			newMetrics,
			newTracing,
			newDataDirLock,
			newEtcdClient,
			newMonitor,
			newPluginHost,
			func() *termHook { return &termHook{} },
			newMembership,
			newCoordinator,
			newRunner,
			newAPI,
		),
		fx.WithLogger(func(log *slog.Logger) fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: log.With("component", "fx")}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		// Constructed in start order (separate invokes: one invoke's
		// parameters are not built in a guaranteed order); fx stops in
		// reverse.
		fx.Invoke(func(*dataDirLock) {}),
		fx.Invoke(func(*pluginhost.Host) {}),
		fx.Invoke(func(*clientv3.Client) {}),
		fx.Invoke(func(*coord.Membership) {}),
		fx.Invoke(func(*coord.Coordinator) {}),
		fx.Invoke(func(*runner.Runner) {}),
		fx.Invoke(func(*api.Server) {}),
	)
}

// NewSanitizer is the sanitizer cfg asks for (observability.sanitize): the
// runner's log, traces and errors pass it, and pacer validate's check of the
// jobs' params masks what it would.
func NewSanitizer(cfg *config.Config) (*observability.Sanitizer, error) {
	o := observability.SanitizerOptions{RedactKeys: cfg.Observability.Sanitize.RedactKeys}
	for _, p := range cfg.Observability.Sanitize.Patterns {
		o.Patterns = append(o.Patterns, observability.Pattern{Name: p.Name, Regex: p.Regex})
	}
	return observability.NewSanitizer(o)
}

// newLogger writes the log through a LogQueue: a log output that blocks
// (a pipe nobody reads) loses lines, counted and reported, and holds up
// nothing else. The queue is flushed last of all on stop, for at most
// logFlushTimeout.
func newLogger(lc fx.Lifecycle, p Params, cfg *config.Config, s *observability.Sanitizer) (*slog.Logger, *observability.LogQueue, error) {
	level, err := observability.ParseLevel(cfg.Observability.Log.Level)
	if err != nil {
		return nil, nil, err
	}
	build := func(w io.Writer) (*slog.Logger, error) {
		log, err := observability.NewLogger(w, level, cfg.Observability.Log.Format, s)
		if err != nil {
			return nil, err
		}
		return log.With("node", cfg.Node.Name), nil
	}
	if _, err := build(io.Discard); err != nil {
		return nil, nil, err
	}
	q := observability.NewLogQueue(p.LogOutput, observability.LogQueueOptions{
		MaxBytes: int(cfg.Observability.Log.QueueBytes),
		Notice:   func(w io.Writer) *slog.Logger { l, _ := build(w); return l },
	})
	log, _ := build(q)
	// Appended first (the logger is the first part built), so run last.
	lc.Append(fx.StopHook(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, logFlushTimeout)
		defer cancel()
		// Given up: nothing more is said, to an output that takes nothing.
		_ = q.Close(ctx)
	}))
	return log, q, nil
}

// logFlushTimeout bounds how long a stopping runner waits for its log
// output to take the lines queued, and how long a process about to end
// (etcd's fatal error) waits for it to take its last lines.
const logFlushTimeout = 2 * time.Second

// flushLog waits, up to logFlushTimeout, until q's output has taken the
// lines queued so far.
func flushLog(q *observability.LogQueue) error {
	ctx, cancel := context.WithTimeout(context.Background(), logFlushTimeout)
	defer cancel()
	return q.Flush(ctx)
}

func newMetrics(p Params, cfg *config.Config, q *observability.LogQueue) (*observability.Metrics, error) {
	m, err := observability.NewMetrics(p.Version)
	if err != nil {
		return nil, err
	}
	if err := m.WatchLogQueue(q); err != nil {
		return nil, err
	}
	m.Leader.WithLabelValues(cfg.Node.Name).Set(0)
	return m, nil
}

func newTracing(lc fx.Lifecycle, p Params, cfg *config.Config, log *slog.Logger, s *observability.Sanitizer) (*observability.Tracing, trace.TracerProvider, error) {
	t := cfg.Observability.Tracing
	// OpenTelemetry's own errors (a failed export) become JSON log lines,
	// sanitized and rate-limited, not plain text from package log.
	otel.SetErrorHandler(observability.NewOTelErrorHandler(log.With("component", "tracing"), otelErrorEvery))
	observability.RouteOTelLogs(log.With("component", "tracing", "source", "opentelemetry"))
	tr, err := observability.NewTracing(context.Background(), observability.TracingOptions{
		Exporter: t.Exporter, Endpoint: t.Endpoint, Insecure: t.Insecure,
		Protocol: t.Protocol, Headers: t.Headers, Sanitizer: s,
		SampleRatio: ptrOr(t.SampleRatio, 1), Version: p.Version, Node: cfg.Node.Name,
	})
	if err != nil {
		return nil, nil, err
	}
	lc.Append(fx.StopHook(func(ctx context.Context) error {
		// Bounded: a collector that is down must not hold up the exit.
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("flush spans: %w", err)
		}
		return nil
	}))
	return tr, tr.Provider, nil
}

// otelErrorEvery is the most often an OpenTelemetry error is logged.
const otelErrorEvery = 30 * time.Second

// dataDirLock is held on cluster.data_dir while an embedded etcd uses it;
// leases is the journal of the etcd leases granted under it.
type dataDirLock struct{ leases *etcdembed.LeaseJournal }

// newDataDirLock locks the embedded etcd's data directory first of all, so
// that a second runner on it fails at once, naming the first, before it
// starts any plugin.
func newDataDirLock(lc fx.Lifecycle, cfg *config.Config, log *slog.Logger) (*dataDirLock, error) {
	if len(cfg.Cluster.Etcd.Endpoints) > 0 {
		return &dataDirLock{}, nil
	}
	unlock, err := etcdembed.LockDataDir(cfg.Cluster.DataDir)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(unlock))
	leases, err := etcdembed.OpenLeaseJournal(cfg.Cluster.DataDir, log)
	if err != nil {
		unlock()
		return nil, err
	}
	return &dataDirLock{leases: leases}, nil
}

// etcdTLSCheck says why the TLS handshake with an external etcd fails
// (coord.TLSCheck); nil for the embedded etcd, or without TLS.
type etcdTLSCheck func(context.Context) error

func newEtcdClient(lc fx.Lifecycle, cfg *config.Config, log *slog.Logger, q *observability.LogQueue, lock *dataDirLock) (*clientv3.Client, etcdTLSCheck, error) {
	e := cfg.Cluster.Etcd
	if len(e.Endpoints) == 0 {
		return newEmbeddedClient(lc, cfg, log, q, lock), nil, nil
	}
	cc, err := coord.ClientConfig(coord.ClientOptions{
		Endpoints: e.Endpoints, DialTimeout: e.DialTimeout, Username: e.Username, PasswordEnv: e.PasswordEnv, PasswordFile: e.PasswordFile,
		CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	check := coord.TLSCheck(cc)
	cli, err := clientv3.New(cc)
	if err != nil {
		if check != nil {
			if p := check(context.Background()); p != nil {
				err = fmt.Errorf("%w (%v)", err, p)
			}
		}
		if cc.Username != "" {
			// With a user, the client authenticates before anything else,
			// and gives up after the dial timeout.
			return nil, nil, fmt.Errorf("cluster.etcd: cannot authenticate as %q at %s within cluster.etcd.dial_timeout (%s): %w",
				cc.Username, strings.Join(e.Endpoints, ", "), e.DialTimeout, err)
		}
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	lc.Append(fx.StopHook(cli.Close))
	return cli, check, nil
}

// newEmbeddedClient starts the embedded etcd and returns the runner's
// client of it, which calls its server in this process: no gRPC, HTTP/2 or
// socket on either side of a claim or a record (the member still listens
// on its client URL, for other replicas and the CLI). The client is made
// now, for the parts built after it; it gets its KV, Lease, Watcher … when
// etcd is up, before any of them starts. Every lease it is granted is
// recorded in the data directory first, and a killed predecessor's are
// revoked before anything else uses etcd. It closes before the member.
func newEmbeddedClient(lc fx.Lifecycle, cfg *config.Config, log *slog.Logger, q *observability.LogQueue, lock *dataDirLock) *clientv3.Client {
	if e := cfg.Cluster.Etcd; e.Username != "" || e.TLS.CAFile != "" || e.TLS.CertFile != "" {
		// (They never worked here: the client authenticated before the
		// member was up, and the member serves plain HTTP.)
		log.Warn("cluster.etcd's username and tls settings are for cluster.etcd.endpoints: the runner calls its embedded etcd in its own process, without them")
	}
	cli := etcdembed.NewClient(coord.ClientLogger(log))
	var emb *etcdembed.Embedded
	em := cfg.Cluster.Embedded
	if em.Exposed() {
		log.Warn("the embedded etcd has no authentication and other machines can reach it (cluster.embedded.insecure_no_auth), "+
			"so anyone who can connect can read and write Pacer's keys; use an external etcd with authentication to prevent it",
			"client_url", em.ClientURL, "peer_url", em.PeerURL)
	}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) (err error) {
			emb, err = etcdembed.Start(ctx, etcdembed.Options{
				Name: cfg.Node.Name, Dir: filepath.Join(cfg.Cluster.DataDir, "etcd"),
				ClientURL: em.ClientURL, PeerURL: em.PeerURL, ClientKey: em.ClientKey, PeerKey: em.PeerKey,
				QuotaBytes: em.QuotaBytes, Logger: log,
				// etcd ends the process after a fatal error (a full
				// disk): the lines that say why are written first.
				SyncLog: func() error { return flushLog(q) },
			})
			if err != nil {
				return err
			}
			emb.Connect(cli, lock.leases)
			log.Info("embedded etcd ready", "endpoint", emb.Endpoint(), "data_dir", cfg.Cluster.DataDir, "quota_bytes", em.QuotaBytes)
			return nil
		},
		OnStop: func(context.Context) error {
			emb.Close()
			return nil
		},
	})
	lc.Append(fx.StopHook(func() error { return etcdembed.CloseClient(cli) }))
	lc.Append(fx.StartHook(func(ctx context.Context) error {
		revokePrevious(ctx, lock.leases, cli, cfg.Cluster.Etcd.RequestTimeout, log)
		return nil
	}))
	return cli
}

// revokePrevious revokes the leases a runner killed on this data directory
// left, before this one publishes its record or campaigns: their keys (its
// member record under this node name, its election key) go at once,
// instead of when the leases expire, a TTL and an election timeout after
// the embedded etcd restarted. Failing that, it waits for them as before.
func revokePrevious(ctx context.Context, j *etcdembed.LeaseJournal, cli *clientv3.Client, timeout time.Duration, log *slog.Logger) {
	if len(j.Previous()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n, err := j.RevokePrevious(ctx, cli)
	if err != nil {
		log.Warn("cannot revoke the leases of the previous runner on this data directory; waiting for them to expire", "error", err)
		return
	}
	if n > 0 {
		log.Info("revoked the leases of the previous runner on this data directory (it did not stop cleanly)", "leases", n)
	}
}

func newPluginHost(lc fx.Lifecycle, p Params, cfg *config.Config, log *slog.Logger, tr *observability.Tracing,
	m *observability.Metrics, s *observability.Sanitizer) (*pluginhost.Host, error) {
	o := PluginHostOptions(cfg)
	o.Logger, o.TracerProvider, o.ImportSpan = log.With("component", "pluginhost"), tr.Provider, tr.ImportSpan
	o.Sanitizer, o.Metrics, o.Subreaper = s, m, p.Subreaper
	h := pluginhost.New(o)
	// Refuse a job with an unknown plugin or task, or bad params, before
	// anything is scheduled: start each plugin and ask it.
	lc.Append(fx.StartHook(func(ctx context.Context) error {
		if err := h.CheckTasks(ctx, TaskRefs(p.ConfigPath, cfg)); err != nil {
			return fmt.Errorf("%w:\n%w", ErrJobsRefused, err)
		}
		return nil
	}))
	lc.Append(fx.StopHook(h.Close))
	return h, nil
}

// termHook lets the runner, built after the coordinator, hear of terms
// that start and end, and drain a shard's runs when it is handed over.
type termHook struct {
	mu    sync.Mutex
	fn    func(leading bool, t *coord.Term)
	drain func(context.Context, *coord.Term)
}

func (h *termHook) set(fn func(bool, *coord.Term), drain func(context.Context, *coord.Term)) {
	h.mu.Lock()
	h.fn, h.drain = fn, drain
	h.mu.Unlock()
}

func (h *termHook) waitIdle(ctx context.Context, t *coord.Term) {
	h.mu.Lock()
	drain := h.drain
	h.mu.Unlock()
	if drain != nil {
		drain(ctx, t)
	}
}

func (h *termHook) call(leading bool, t *coord.Term) {
	h.mu.Lock()
	fn := h.fn
	h.mu.Unlock()
	if fn != nil {
		fn(leading, t)
	}
}

// jobSetsAgree says whether every live replica runs this one's job set.
func jobSetsAgree(v coord.JobSetView) bool {
	if !v.JobSetAgreed {
		return false
	}
	for _, rep := range v.Replicas {
		if !rep.Agrees {
			return false
		}
	}
	return true
}

// newMembership publishes this replica's member record and decides whether
// its job set is the cluster's (the coordinator's gate). It starts before
// the coordinator and stops after it: the record goes when the replica does.
func newMembership(lc fx.Lifecycle, p Params, cfg *config.Config, cli *clientv3.Client, log *slog.Logger,
	m *observability.Metrics, tlsCheck etcdTLSCheck) *coord.Membership {
	rec := coord.MemberRecord{Version: p.Version, Started: time.Now().UTC(), Shards: cfg.Cluster.Shards}
	rec.Config, rec.ConfigSHA256, rec.ConfigModTime = configFile(p.ConfigPath)
	ms := coord.NewMembership(coord.MembershipOptions{
		SessionLease: true, // the coordinator's session holds the record (Options.Members)
		Client:       cli, Cluster: cfg.Cluster.Name, Node: cfg.Node.Name, LeaseTTL: cfg.Cluster.LeaseTTL,
		RequestTimeout: cfg.Cluster.Etcd.RequestTimeout, Settle: cfg.Cluster.JobSetSettle, Mismatch: cfg.Cluster.JobSetMismatch,
		Record: rec, JobSet: runner.JobSetOf(Jobs(cfg), cfg.Cluster.Shards), Logger: log.With("component", "members"), Metrics: m,
		TLSCheck: tlsCheck,
	})
	goUntilStop(lc, "membership", ms.Run)
	return ms
}

// goUntilStop runs run in its own goroutine from the application's start
// until it stops: the stop cancels run's context and waits for it to
// return, as long as the stop's own context allows; what names it in the
// error when it does not return in time.
func goUntilStop(lc fx.Lifecycle, what string, run func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				run(ctx)
			}()
			return nil
		},
		OnStop: func(stop context.Context) error {
			cancel()
			select {
			case <-done:
				return nil
			case <-stop.Done():
				return fmt.Errorf("%s did not stop: %w", what, stop.Err())
			}
		},
	})
}

// configFile names the config file, with its SHA-256 and modification time
// now, for the member record.
func configFile(path string) (string, string, time.Time) {
	if path == "" {
		return "", "", time.Time{}
	}
	b, err := config.ReadFile(path)
	if err != nil {
		return path, "", time.Time{}
	}
	var mtime time.Time
	if fi, err := os.Stat(path); err == nil {
		mtime = fi.ModTime()
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:]), mtime
}

// newMonitor watches the etcd member this replica talks to (metrics,
// pacer status, readiness) and keeps an embedded one compact. What it
// shows first is a look taken once the membership has written this
// replica's own keys.
func newMonitor(lc fx.Lifecycle, cfg *config.Config, cli *clientv3.Client, log *slog.Logger, m *observability.Metrics,
	ms *coord.Membership) *coord.Monitor {
	e := cfg.Cluster.Etcd
	// The client's TLS settings, for a member's /metrics (its quota, when
	// etcd < 3.6 does not report it); newEtcdClient has checked them.
	var tc *tls.Config
	if len(e.Endpoints) > 0 {
		if cc, err := coord.ClientConfig(coord.ClientOptions{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile}); err == nil {
			tc = cc.TLS
		}
	}
	mon := coord.NewMonitor(coord.MonitorOptions{
		Client: cli, Cluster: cfg.Cluster.Name, Metrics: m, Logger: log.With("component", "etcd-monitor"),
		Registered:     ms.Registered(),
		RequestTimeout: e.RequestTimeout, TLS: tc,
		Embedded: len(e.Endpoints) == 0, DataDir: cfg.Cluster.DataDir,
		// The in-process client of the embedded etcd has no endpoints.
		Endpoint: cfg.Cluster.Embedded.ClientURL,
	})
	goUntilStop(lc, "etcd monitor", mon.Run)
	return mon
}

func newCoordinator(lc fx.Lifecycle, cfg *config.Config, cli *clientv3.Client, log *slog.Logger, m *observability.Metrics,
	tp trace.TracerProvider, hook *termHook, ms *coord.Membership, mon *coord.Monitor, tlsCheck etcdTLSCheck) *coord.Coordinator {
	node := cfg.Node.Name
	m.Shards.Set(float64(cfg.Cluster.Shards))
	for n := range cfg.Cluster.Shards {
		m.ShardLeader.WithLabelValues(strconv.Itoa(n)).Set(0)
	}
	m.ShardsLed.WithLabelValues(node).Set(0)
	var led atomic.Int64
	c := coord.New(coord.Options{
		Members: ms, Roster: ms,
		Client: cli, Cluster: cfg.Cluster.Name, Node: node, LeaseTTL: cfg.Cluster.LeaseTTL,
		RequestTimeout: cfg.Cluster.Etcd.RequestTimeout, Logger: log.With("component", "coord"), Metrics: m,
		Tracer: tp.Tracer("github.com/pacerun/pacer/runner/coord"), TLSCheck: tlsCheck,
		Gate: ms, Shards: cfg.Cluster.Shards, Settle: cfg.Cluster.ShardSettle, DrainTimeout: cfg.Shutdown.DrainTimeout,
		Drain:              hook.waitIdle,
		CompactionInterval: cfg.Cluster.Etcd.CompactionInterval, Monitor: mon,
		OnTransition: func(leading bool, t *coord.Term) {
			shard := strconv.Itoa(t.Shard)
			if leading {
				m.ShardLeader.WithLabelValues(shard).Set(1)
				m.ShardsLed.WithLabelValues(node).Set(float64(led.Add(1)))
				m.ShardTransitions.WithLabelValues("acquired").Inc()
			} else {
				m.ShardLeader.WithLabelValues(shard).Set(0)
				m.ShardsLed.WithLabelValues(node).Set(float64(led.Add(-1)))
				event := "lost"
				if coord.HandedOver(context.Cause(t.Context())) {
					event = "handed_over"
				}
				m.ShardTransitions.WithLabelValues(event).Inc()
			}
			if t.Shard == 0 { // shard 0's leader is the cluster's leader
				if leading {
					m.Leader.WithLabelValues(node).Set(1)
					m.LeaderChanges.WithLabelValues("acquired").Inc()
				} else {
					m.Leader.WithLabelValues(node).Set(0)
					m.LeaderChanges.WithLabelValues("lost").Inc()
				}
			}
			hook.call(leading, t)
		},
	})
	goUntilStop(lc, "coordinator", func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() { shardSeries(ctx, ms, m.ShardLeader, cfg.Cluster.Shards, time.Second) })
		_ = c.Run(ctx)
		wg.Wait()
	})
	return c
}

// shardCounter is what shardSeries needs of the membership.
type shardCounter interface {
	ClusterShards() int
	MayLead() (ok bool, why error, changed <-chan struct{})
}

// shardSeries keeps this replica's pacer_shard_leader series to shards that
// exist: while its cluster.shards is not the cluster's (and it may not
// lead), it exports none, rather than a 0 for each of its own count's
// shards, which would fire PacerShardUnled for shards the cluster does not
// have (and say nothing true of those it has: the others export them); once
// its count is the cluster's again, each of its shards has a series again
// (at 0 unless it leads it). It looks when the gate changes, and every
// poll (the cluster's count is known only once its job set was read), until
// ctx ends.
func shardSeries(ctx context.Context, ms shardCounter, leader *prometheus.GaugeVec, shards int, poll time.Duration) {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	exported := true
	for {
		ok, _, changed := ms.MayLead()
		switch other := ms.ClusterShards(); {
		case other != 0 && other != shards && !ok:
			leader.Reset() // each time: a term still ending sets its series again
			exported = false
		case (other == 0 || other == shards) && !exported:
			for n := range shards {
				leader.WithLabelValues(strconv.Itoa(n)).Add(0)
			}
			exported = true
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func newRunner(lc fx.Lifecycle, p Params, cfg *config.Config, log *slog.Logger, m *observability.Metrics, tp trace.TracerProvider,
	s *observability.Sanitizer, c *coord.Coordinator, h *pluginhost.Host, hook *termHook, ms *coord.Membership) *runner.Runner {
	// Plugins called over RunStream hear how long their runs may go on:
	// the replica's self-fence deadline, renewed at least every sixth of
	// the TTL. A runner frozen alone (SIGSTOP, a debugger) cannot cancel
	// its runs when its lease runs out; its plugin does.
	h.SetLease(c.FenceDeadline, cfg.Cluster.LeaseTTL/6)
	r := runner.New(runner.Options{
		Node: cfg.Node.Name, Coord: c, Tasks: h, Logger: log, Metrics: m,
		Tracer: tp.Tracer("github.com/pacerun/pacer/runner"), Sanitize: s.String,
		KeepRuns: cfg.History.Keep, MaxRunAge: cfg.History.MaxAge, TriggerExpiry: cfg.Triggers.ExpireAfter,
		// A replaced attempt ends within the cancel grace, then the
		// plugin host's tree timeout (10s) to confirm its processes dead.
		ReplaceWait: duration.Sum(cfg.Plugins.CancelGrace, 15*time.Second),
		JobSets:     c, Shards: cfg.Cluster.Shards, JobSetsAgree: func() bool { return jobSetsAgree(ms.View()) },
		ClusterJobSet: func() string { return ms.View().ClusterJobSet },
		// A replica that has not heard from etcd for a lease TTL has
		// self-fenced: the pause flags it last read may be stale.
		PausesFresh: func() bool { return time.Since(c.LastContact()) < cfg.Cluster.LeaseTTL },
		OnJobSet: func(set coord.JobSet) { // after a reload too
			path, sum, mtime := configFile(p.ConfigPath)
			ms.SetJobSet(set, path, sum, mtime)
		},
	})
	// The jobs first: the coordinator, which starts before the runner,
	// may lead shards at once, and a term's catch-up and scheduling need
	// the jobs (with many, loading them takes longer than an election).
	r.SetJobs(Jobs(cfg))
	hook.set(r.OnTransition, r.WaitIdle)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			wg.Go(func() { r.Start(ctx) })
			wg.Go(func() { c.WatchPaused(ctx, r.SetPaused, r.PausesLost) })
			wg.Go(func() { c.WatchTriggers(ctx, r.HandleTriggers) })
			if p.ConfigPath != "" {
				rl := &reloader{path: p.ConfigPath, current: cfg, loaded: p.ConfigData, runner: r, log: log.With("component", "reload"),
					poll: ReloadPoll, settle: ReloadSettle,
					check: func(ctx context.Context, cfg *config.Config) error {
						return h.CheckTasks(ctx, TaskRefs(p.ConfigPath, cfg))
					}}
				wg.Go(func() { rl.run(ctx) })
			}
			// What pacer validate warns about, said once at the start too
			// (a reload says it again).
			for _, w := range cfg.Warnings {
				log.Warn("config warning: "+w.Msg, "where", w.Where())
			}
			if cfg.Jobs == nil {
				log.Warn(`the config file lists no jobs: this replica schedules nothing; write "jobs: []" if that is meant (a reload of a file without its jobs is refused)`,
					"path", p.ConfigPath)
			}
			log.Info("scheduler started", "jobs", len(cfg.Jobs))
			return nil
		},
		OnStop: func(stop context.Context) error {
			c.Leave(stop) // before the scheduler stops: the others line up for this replica's shards
			cancel()
			wg.Wait()
			drain, dcancel := context.WithTimeout(stop, cfg.Shutdown.DrainTimeout)
			defer dcancel()
			r.Stop(drain)
			return nil
		},
	})
	return r
}

// Jobs converts cfg's jobs for the runner.
func Jobs(cfg *config.Config) []*runner.Job {
	jobs := make([]*runner.Job, 0, len(cfg.Jobs))
	for _, j := range cfg.Jobs {
		jobs = append(jobs, &runner.Job{
			ID: j.ID, Plugin: j.Plugin, Task: j.Task, Schedule: j.Sched, Spec: j.Schedule, Timezone: j.Timezone,
			Timeout: j.Timeout, Overlap: j.Overlap, MaxConcurrency: j.MaxConcurrency, Params: j.Params, Jitter: j.Jitter,
			InheritEnv: j.InheritEnv,
			Delivery:   j.Delivery,
			Retries:    runner.Retries{Max: j.Retries.Max, InitialBackoff: j.Retries.InitialBackoff, MaxBackoff: j.Retries.MaxBackoff},
			Misfire:    runner.Misfire{Policy: j.Misfire.Policy, Grace: j.Misfire.Grace},
		})
	}
	return jobs
}

func newAPI(lc fx.Lifecycle, cfg *config.Config, log *slog.Logger, m *observability.Metrics, san *observability.Sanitizer, cli *clientv3.Client,
	h *pluginhost.Host, r *runner.Runner, c *coord.Coordinator, ms *coord.Membership, mon *coord.Monitor) (*api.Server, error) {
	var token string
	if env := cfg.HTTP.TokenEnv; env != "" {
		// A token read from a file keeps its newline: the token is the
		// text without surrounding white space. White space alone, or a
		// control character, is no token: no request could send it, and
		// every call would get 401 (config.TokenProblem).
		token = strings.TrimSpace(os.Getenv(env))
		if msg := config.TokenProblem(token); msg != "" {
			return nil, fmt.Errorf("http.token_env: environment variable %s %s; set it, or remove token_env to run the API without a token", env, msg)
		}
	}
	var tlsConfig *tls.Config
	if t := cfg.HTTP.TLS; t.CertFile != "" {
		var err error
		if tlsConfig, err = api.LoadTLS(t.CertFile, t.KeyFile, t.ClientCAFile); err != nil {
			return nil, err
		}
	}
	s := api.New(api.Options{
		Listen: cfg.HTTP.Listen, Registry: m.Registry, Logger: log.With("component", "api"),
		Plugins: func() any { return h.Status() },
		RestartPlugin: func(ctx context.Context, name string, force bool) (any, error) {
			st, err := h.Restart(ctx, name, force)
			if st.Name == "" {
				return nil, err
			}
			return st, err
		},
		Control: newControl(cfg, r, c, ms),
		Token:   token, AuthAll: cfg.HTTP.AuthAll, Sanitizer: san,
		TLS: tlsConfig, MaxConnections: cfg.HTTP.MaxConnections, Rejected: m.HTTPRejected,
		RatePerSecond: cfg.HTTP.RateLimit.PerSecond, RateBurst: cfg.HTTP.RateLimit.Burst,
		ProbeListen: cfg.HTTP.ProbeListen,
		Ready: func(ctx context.Context) error {
			if _, err := cli.Get(ctx, "/pacer/"+cfg.Cluster.Name+"/ready"); err != nil {
				return fmt.Errorf("etcd unreachable: %w", c.WithTLSProblem(ctx, err))
			}
			// etcd answers, but can it take writes? (space quota, disk)
			if err := mon.Check(ctx); err != nil {
				return err
			}
			return h.QuarantineProblem()
		},
	})
	lc.Append(fx.Hook{OnStart: func(context.Context) error { return s.Start() }, OnStop: s.Stop})
	return s, nil
}

// newControl is the API's job control, with the trigger request bounds.
func newControl(cfg *config.Config, r *runner.Runner, c *coord.Coordinator, ms *coord.Membership) *runner.Control {
	return &runner.Control{Runner: r, Store: c, Node: cfg.Node.Name, Members: ms,
		TriggerLimits: coord.TriggerLimits{PerJob: cfg.Triggers.MaxPendingPerJob, Total: cfg.Triggers.MaxPending},
		KeepReceipts:  cfg.History.Keep,
		// A call that etcd does not answer tries for twice its timeout,
		// then says whether it may have taken effect.
		Settle: duration.Times(cfg.Cluster.Etcd.RequestTimeout, 2),
	}
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
