package config

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"time"

	"github.com/pacerun/pacer/internal/duration"
	"github.com/pacerun/pacer/internal/regfile"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

// Config is a whole pacer.yaml.
type Config struct {
	Node          Node          `yaml:"node"`
	Cluster       Cluster       `yaml:"cluster"`
	HTTP          HTTP          `yaml:"http"`
	Plugins       Plugins       `yaml:"plugins"`
	Observability Observability `yaml:"observability"`
	History       History       `yaml:"history"`
	Shutdown      Shutdown      `yaml:"shutdown"`
	Triggers      Triggers      `yaml:"triggers"`
	Jobs          []Job         `yaml:"jobs"`

	// Warnings are things in the file that are valid but probably not
	// meant, such as a schedule no date matches; `pacer validate` prints
	// them.
	Warnings []Problem `yaml:"-"`

	files         []fileRef     // keys naming other files, for CheckFiles
	secrets       []fileRef     // keys naming secrets' environment variables (name: the variable), for SecretProblems
	pluginEntries []pluginEntry // plugins.checksums and plugins.paths, for CheckPlugins
}

// Shutdown is how a replica stops on SIGTERM or SIGINT.
type Shutdown struct {
	// DrainTimeout is how long running runs may take to finish before they
	// are cancelled (default 10s). A supervisor must give the whole stop
	// Config.StopTimeout.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// StopTimeout is how long a whole stop may take: the drain
// (shutdown.drain_timeout), then plugins.cancel_grace for cancelled runs to
// return, and 15s to resign leadership, stop plugins and etcd and flush
// spans. Kubernetes' terminationGracePeriodSeconds (compose:
// stop_grace_period) should be at least this, or the runs still draining
// are killed with the process.
func (c *Config) StopTimeout() time.Duration {
	return duration.Sum(c.Shutdown.DrainTimeout, c.Plugins.CancelGrace, 15*time.Second)
}

// Triggers bounds the manual trigger requests kept in etcd.
type Triggers struct {
	// ExpireAfter is how long a request may wait to be decided (no leader,
	// or a job the leader does not have) before it is recorded as skipped,
	// reason expired; default 10m.
	ExpireAfter time.Duration `yaml:"expire_after"`
	// MaxPendingPerJob bounds the requests of one job kept, pending or
	// running; default 100. Beyond it a request is refused (HTTP 429).
	MaxPendingPerJob int `yaml:"max_pending_per_job"`
	// MaxPending bounds the requests of every job together; default 1000.
	// Beyond it a request is refused (HTTP 503).
	MaxPending int `yaml:"max_pending"`
}

// History bounds the run and skip records kept in etcd, per job.
type History struct {
	Keep   int           `yaml:"keep"`    // records per job; default 100
	MaxAge time.Duration `yaml:"max_age"` // default 720h (30 days)
}

// Node identifies this replica.
type Node struct {
	Name string `yaml:"name"` // default: os.Hostname()
}

// Cluster configures coordination between replicas.
type Cluster struct {
	Name     string        `yaml:"name"`      // default "default"; [a-z0-9-_] only
	DataDir  string        `yaml:"data_dir"`  // default "./data"
	LeaseTTL time.Duration `yaml:"lease_ttl"` // default 10s; 2s to 5m, whole seconds
	Etcd     Etcd          `yaml:"etcd"`
	// JobSetMismatch is what a replica whose jobs differ from the cluster's
	// does: refuse (the default) to lead, or warn and lead anyway.
	JobSetMismatch string `yaml:"job_set_mismatch"`
	// JobSetSettle is how long a change in whether this replica's jobs are
	// the cluster's must hold before it campaigns or steps down; default 5s.
	JobSetSettle time.Duration `yaml:"job_set_settle"`
	// Shards is how many shards the jobs are partitioned into (a job's shard
	// is a hash of its ID); each replica leads about Shards/replicas of them.
	// Default 16, at most 256; the same on every replica.
	Shards int `yaml:"shards"`
	// ShardSettle is how long the cluster's membership must stay unchanged
	// before a replica hands a shard it leads to the replica now assigned
	// to it (a replica joined, or its job set became the cluster's again).
	// A shard nobody leads is taken at once. Default 10s.
	ShardSettle time.Duration `yaml:"shard_settle"`
	// Embedded configures the embedded etcd, used when etcd.endpoints is
	// empty.
	Embedded EmbeddedEtcd `yaml:"embedded"`
}

// EmbeddedEtcd configures the embedded single-node etcd. Its addresses
// can also be given as cluster.etcd.embedded.{client_listen,peer_listen}
// (host:port), the older keys; one or the other.
type EmbeddedEtcd struct {
	ClientURL string `yaml:"client_url"` // default "http://127.0.0.1:2379"
	PeerURL   string `yaml:"peer_url"`   // default "http://127.0.0.1:2380"
	// QuotaBytes is etcd's space quota: when its database file reaches
	// it, etcd refuses writes (the NOSPACE alarm). Default 2 GiB.
	QuotaBytes int64 `yaml:"quota_bytes"`
	// InsecureNoAuth allows client and peer addresses that other machines
	// can reach: the embedded etcd has no authentication, so anyone who
	// reaches it can read and write Pacer's keys. Without it such an
	// address is a config error.
	InsecureNoAuth bool `yaml:"insecure_no_auth"`

	// ClientKey and PeerKey name the keys the URLs came from, for error
	// messages (set by validation).
	ClientKey string `yaml:"-"`
	PeerKey   string `yaml:"-"`
}

// Exposed reports whether other machines can reach the embedded etcd's
// client or peer address (allowed only with InsecureNoAuth).
func (e *EmbeddedEtcd) Exposed() bool {
	return !loopbackListen(hostPort(e.ClientURL)) || !loopbackListen(hostPort(e.PeerURL))
}

// Etcd configures the etcd client, or the embedded single-node etcd when
// Endpoints is empty.
type Etcd struct {
	Endpoints      []string      `yaml:"endpoints"`       // empty => embedded single-node etcd
	DialTimeout    time.Duration `yaml:"dial_timeout"`    // default 5s
	RequestTimeout time.Duration `yaml:"request_timeout"` // default 5s
	Username       string        `yaml:"username"`
	PasswordEnv    string        `yaml:"password_env"` // name of env var holding the password
	// PasswordFile names a file holding the password (e.g. a mounted
	// Secret); trailing newlines are ignored. Use it or password_env.
	PasswordFile string   `yaml:"password_file"`
	TLS          TLS      `yaml:"tls"`
	Embedded     Embedded `yaml:"embedded"`
	// CompactionInterval: the leader compacts etcd's revisions older than
	// this, every this often (as kube-apiserver does); 0 disables it, for
	// an etcd that compacts itself. Default 5m.
	CompactionInterval time.Duration `yaml:"compaction_interval"`
}

// TLS holds file names for the etcd client's TLS settings.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"` // cert_file and key_file both or neither
}

// Embedded holds the embedded etcd's addresses under their older keys;
// cluster.embedded is the newer place for them.
type Embedded struct {
	ClientListen string `yaml:"client_listen"` // default "127.0.0.1:2379"; host:port
	PeerListen   string `yaml:"peer_listen"`   // default "127.0.0.1:2380"; host:port
}

// HTTP configures the API and metrics server.
type HTTP struct {
	Listen   string `yaml:"listen"`    // default "127.0.0.1:9464"; host:port
	TokenEnv string `yaml:"token_env"` // env var with the API bearer token; empty = no auth
	// AuthAll requires the token on read-only API calls too (health,
	// readiness and metrics stay open).
	AuthAll bool `yaml:"auth_all"`
	// InsecureNoAuth allows an API without a token (and without client
	// certificates) on an address other machines can reach. Without it such
	// a config is refused. No effect when a token or a client CA is set.
	InsecureNoAuth bool    `yaml:"insecure_no_auth"`
	TLS            HTTPTLS `yaml:"tls"`
	// MaxConnections bounds the connections open at once. At the limit a
	// new connection closes the one waiting longest without a request in
	// progress (idle, or its request head unfinished); with a request in
	// progress on every one, the new one is closed as soon as it is
	// accepted. Default 256.
	MaxConnections int `yaml:"max_connections"`
	// RateLimit bounds the mutating calls (trigger, pause, resume) the API
	// accepts; more are answered 429 with Retry-After.
	RateLimit RateLimit `yaml:"rate_limit"`
	// ProbeListen, if set, serves /healthz and /readyz on a listener of
	// their own as well (plain HTTP, nothing else on it), so API clients
	// that fill max_connections cannot crowd out the probes. Empty: the
	// probes are served on Listen only.
	ProbeListen string `yaml:"probe_listen"` // host:port
}

// HTTPTLS serves the API over HTTPS. With ClientCAFile set, clients must
// present a certificate signed by one of its CAs (mutual TLS).
type HTTPTLS struct {
	CertFile     string `yaml:"cert_file"` // PEM; cert_file and key_file both or neither
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"` // PEM bundle; needs cert_file
}

// RateLimit is a token bucket: PerSecond calls per second on average, up to
// Burst at once. PerSecond 0 turns the limit off.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"` // default 10
	Burst     int     `yaml:"burst"`      // default 50
}

// Plugins configures how plugin binaries are found, verified and started.
type Plugins struct {
	Dir          string            `yaml:"dir"`           // default "./bin/plugins"
	StartTimeout time.Duration     `yaml:"start_timeout"` // default 10s
	Checksums    map[string]string `yaml:"checksums"`     // plugin name -> "sha256:<64 hex>"
	Paths        map[string]string `yaml:"paths"`         // plugin name -> explicit binary path
	// MaxConcurrency bounds concurrent runs per plugin process; default 32.
	MaxConcurrency int `yaml:"max_concurrency"`
	// CancelGrace is how long a cancelled or timed-out task may take to
	// return before its plugin process is killed; default 5s.
	CancelGrace time.Duration `yaml:"cancel_grace"`
	// InheritEnv names variables of the runner's environment that every
	// plugin process gets besides the minimal set (PATH, HOME, LANG, LC_*,
	// TZ, TMPDIR, USER): NAME or PREFIX_*. The variables named by
	// http.token_env and cluster.etcd.password_env are never passed.
	InheritEnv []string `yaml:"inherit_env"`
}

// Observability configures logs, traces and redaction.
type Observability struct {
	Log      Log      `yaml:"log"`
	Tracing  Tracing  `yaml:"tracing"`
	Sanitize Sanitize `yaml:"sanitize"`
}

// Log configures the process log.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error, default info
	Format string `yaml:"format"` // json|text, default json
	// QueueBytes bounds the log lines waiting for the log output (stderr)
	// when it does not keep up: beyond it lines are dropped, counted and
	// reported, rather than the runner waiting (default 8 MiB).
	QueueBytes int64 `yaml:"queue_bytes"`
}

// Tracing configures OpenTelemetry tracing.
type Tracing struct {
	Exporter string `yaml:"exporter"` // none|stdout|otlp, default none
	// Endpoint is the OTLP receiver's host:port. Empty: the standard
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else
	// 127.0.0.1:4317 (grpc) or 127.0.0.1:4318 (http).
	Endpoint string `yaml:"endpoint"`
	// Insecure sends in plaintext. Unset: true, except with an endpoint
	// from the environment, whose scheme decides (https: TLS).
	Insecure *bool `yaml:"insecure"`
	// Protocol is the OTLP transport: grpc (default, port 4317) or http
	// (port 4318).
	Protocol string `yaml:"protocol"`
	// Headers are sent with every export, e.g. an API key for a hosted
	// collector. Values are never logged.
	Headers     map[string]string `yaml:"headers"`
	SampleRatio *float64          `yaml:"sample_ratio"` // 0..1, default 1
}

// Sanitize configures what is redacted from logs, traces and task output.
type Sanitize struct {
	RedactKeys []string  `yaml:"redact_keys"`
	Patterns   []Pattern `yaml:"patterns"`
}

// Pattern is a named regular expression whose matches are redacted.
type Pattern struct {
	Name  string `yaml:"name"`  // required, [a-z0-9_]
	Regex string `yaml:"regex"` // required, must compile (regexp)
}

// Job is one scheduled task.
type Job struct {
	ID       string        `yaml:"id"`       // required, unique, [A-Za-z0-9._-], <= 128 chars
	Plugin   string        `yaml:"plugin"`   // required
	Task     string        `yaml:"task"`     // required
	Schedule string        `yaml:"schedule"` // required; see package schedule
	Timezone string        `yaml:"timezone"` // IANA name, default "UTC"
	Timeout  time.Duration `yaml:"timeout"`  // default 1m; > 0
	Retries  Retries       `yaml:"retries"`
	Overlap  string        `yaml:"overlap"` // forbid|allow|replace, default forbid
	// Delivery is what a new leader does with a slot the previous leader
	// claimed and never finished: at-most-once (record it as lost, the
	// default) or at-least-once (run it again).
	Delivery string `yaml:"delivery"`
	// MaxConcurrency bounds runs of this job at once under overlap: allow
	// (further slots are skipped as overlap); default 10.
	MaxConcurrency int            `yaml:"max_concurrency"`
	Misfire        Misfire        `yaml:"misfire"`
	Jitter         time.Duration  `yaml:"jitter"` // >= 0
	Params         map[string]any `yaml:"params"` // free-form, passed to the plugin task

	// InheritEnv is params.inherit_env, when it is a list of strings: the
	// runner's environment variables (NAME or PREFIX_*) the task gets. The
	// runner resolves it for every plugin that accepts the param (shell).
	InheritEnv []string `yaml:"-"`

	Line     int               `yaml:"-"` // line of the job's mapping in the file
	keys     keyIndex          // where the job's keys are, for KeyLine
	Location *time.Location    `yaml:"-"` // resolved Timezone
	Sched    schedule.Schedule `yaml:"-"` // parsed Schedule
}

// KeyLine returns the line of the key at keys within the job, such as
// KeyLine("task") or KeyLine("params", "command", 2) (object keys as
// strings, sequence indexes as ints), so that a problem found after loading
// (a task the plugin lacks, params its schema refuses) can point at the
// offending key in block and flow YAML alike. When the file does not set that
// key, it returns the line of the nearest enclosing key it does set, and at
// worst the job's own Line.
func (j *Job) KeyLine(keys ...any) int {
	if j.keys.path == "" { // not decoded from a file
		return j.Line
	}
	paths := make([]string, 0, len(keys))
	p := j.keys.path
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			p = joinPath(p, k)
		case int:
			p += "[" + strconv.Itoa(k) + "]"
		default:
			p += fmt.Sprintf("[%v]", k)
		}
		paths = append(paths, p)
	}
	for i := len(paths) - 1; i >= 0; i-- {
		if l, ok := j.keys.lines[paths[i]]; ok {
			return l
		}
	}
	return j.Line
}

// keyIndex locates a job's keys: the job's key path and the line of every
// key in the file, by key path.
type keyIndex struct {
	path  string
	lines map[string]int
}

// Retries configures retrying a failed run with exponential backoff.
type Retries struct {
	Max            int           `yaml:"max"`             // >= 0, default 0
	InitialBackoff time.Duration `yaml:"initial_backoff"` // default 1s, > 0
	MaxBackoff     time.Duration `yaml:"max_backoff"`     // default 1m, >= initial_backoff
}

// Misfire says what to do with fire times missed while no replica was
// running the job.
type Misfire struct {
	Policy string        `yaml:"policy"` // skip|once|all, default once
	Grace  time.Duration `yaml:"grace"`  // default 1m, >= 0
}

// Default values. Absent keys and empty strings take these.
const (
	defaultClusterName          = "default"
	defaultDataDir              = "./data"
	defaultLeaseTTL             = 10 * time.Second
	defaultJobSetMismatch       = "refuse"
	defaultJobSetSettle         = 5 * time.Second
	defaultShardSettle          = 10 * time.Second
	defaultEtcdDialTimeout      = 5 * time.Second
	defaultEtcdRequestTimeout   = 5 * time.Second
	defaultEmbeddedClientListen = "127.0.0.1:2379"
	defaultEmbeddedPeerListen   = "127.0.0.1:2380"
	defaultEmbeddedQuotaBytes   = 2 << 30
	defaultCompactionInterval   = 5 * time.Minute
	defaultHTTPListen           = "127.0.0.1:9464"
	defaultHTTPMaxConnections   = 256
	defaultHTTPRatePerSecond    = 10
	defaultHTTPRateBurst        = 50
	defaultPluginDir            = "./bin/plugins"
	defaultPluginStartTimeout   = 10 * time.Second
	defaultPluginConcurrency    = 32
	defaultPluginCancelGrace    = 5 * time.Second
	defaultLogLevel             = "info"
	defaultLogFormat            = "json"
	defaultLogQueueBytes        = 8 << 20
	defaultTracingExporter      = "none"
	defaultTimezone             = "UTC"
	defaultJobTimeout           = time.Minute
	defaultInitialBackoff       = time.Second
	defaultMaxBackoff           = time.Minute
	defaultOverlap              = "forbid"
	defaultJobConcurrency       = 10
	defaultHistoryKeep          = 100
	defaultHistoryMaxAge        = 30 * 24 * time.Hour
	defaultDrainTimeout         = 10 * time.Second
	defaultTriggerExpireAfter   = 10 * time.Minute
	defaultTriggerMaxPerJob     = 100
	defaultTriggerMaxPending    = 1000
	defaultMisfirePolicy        = "once"
	defaultMisfireGrace         = time.Minute
)

// hostname is node.name's default (a variable for tests).
var hostname = os.Hostname

// Default returns a configuration with every default applied and no jobs.
// Node.Name is the host name, or empty if it cannot be determined.
func Default() *Config {
	host, _ := hostname()
	ratio := 1.0
	return &Config{
		Node: Node{Name: host},
		Cluster: Cluster{
			Name:           defaultClusterName,
			DataDir:        defaultDataDir,
			LeaseTTL:       defaultLeaseTTL,
			JobSetMismatch: defaultJobSetMismatch,
			JobSetSettle:   defaultJobSetSettle,
			Shards:         shard.Default,
			ShardSettle:    defaultShardSettle,
			Etcd: Etcd{
				DialTimeout:        defaultEtcdDialTimeout,
				RequestTimeout:     defaultEtcdRequestTimeout,
				CompactionInterval: defaultCompactionInterval,
				Embedded: Embedded{
					ClientListen: defaultEmbeddedClientListen,
					PeerListen:   defaultEmbeddedPeerListen,
				},
			},
			Embedded: EmbeddedEtcd{
				ClientURL:  "http://" + defaultEmbeddedClientListen,
				PeerURL:    "http://" + defaultEmbeddedPeerListen,
				QuotaBytes: defaultEmbeddedQuotaBytes,
				ClientKey:  "cluster.embedded.client_url",
				PeerKey:    "cluster.embedded.peer_url",
			},
		},
		HTTP: HTTP{
			Listen:         defaultHTTPListen,
			MaxConnections: defaultHTTPMaxConnections,
			RateLimit:      RateLimit{PerSecond: defaultHTTPRatePerSecond, Burst: defaultHTTPRateBurst},
		},
		History:  History{Keep: defaultHistoryKeep, MaxAge: defaultHistoryMaxAge},
		Shutdown: Shutdown{DrainTimeout: defaultDrainTimeout},
		Triggers: Triggers{ExpireAfter: defaultTriggerExpireAfter, MaxPendingPerJob: defaultTriggerMaxPerJob,
			MaxPending: defaultTriggerMaxPending},
		Plugins: Plugins{
			Dir:            defaultPluginDir,
			StartTimeout:   defaultPluginStartTimeout,
			MaxConcurrency: defaultPluginConcurrency,
			CancelGrace:    defaultPluginCancelGrace,
		},
		Observability: Observability{
			Log: Log{Level: defaultLogLevel, Format: defaultLogFormat, QueueBytes: defaultLogQueueBytes},
			Tracing: Tracing{
				Exporter:    defaultTracingExporter,
				Protocol:    "grpc",
				SampleRatio: &ratio,
			},
		},
	}
}

// defaultJob is the starting point every job in the file is decoded onto, so
// that an explicit zero (timeout: 0s) is kept and rejected rather than
// replaced by the default.
func defaultJob() Job {
	return Job{
		Timezone:       defaultTimezone,
		Timeout:        defaultJobTimeout,
		Retries:        Retries{InitialBackoff: defaultInitialBackoff, MaxBackoff: defaultMaxBackoff},
		Overlap:        defaultOverlap,
		Delivery:       "at-most-once",
		MaxConcurrency: defaultJobConcurrency,
		Misfire:        Misfire{Policy: defaultMisfirePolicy, Grace: defaultMisfireGrace},
	}
}

// applyDefaults replaces empty strings and nil pointers, which mean "not
// set", with their defaults. Durations and numbers were pre-filled before
// decoding and are left alone.
func applyDefaults(c *Config) {
	def := Default()
	setStr := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setStr(&c.Node.Name, def.Node.Name)
	setStr(&c.Cluster.Name, def.Cluster.Name)
	setStr(&c.Cluster.DataDir, def.Cluster.DataDir)
	setStr(&c.Cluster.JobSetMismatch, def.Cluster.JobSetMismatch)
	setStr(&c.Cluster.Etcd.Embedded.ClientListen, def.Cluster.Etcd.Embedded.ClientListen)
	setStr(&c.Cluster.Etcd.Embedded.PeerListen, def.Cluster.Etcd.Embedded.PeerListen)
	setStr(&c.HTTP.Listen, def.HTTP.Listen)
	setStr(&c.Plugins.Dir, def.Plugins.Dir)
	setStr(&c.Observability.Log.Level, def.Observability.Log.Level)
	setStr(&c.Observability.Log.Format, def.Observability.Log.Format)
	setStr(&c.Observability.Tracing.Exporter, def.Observability.Tracing.Exporter)
	if c.Observability.Tracing.SampleRatio == nil {
		c.Observability.Tracing.SampleRatio = def.Observability.Tracing.SampleRatio
	}
	dj := defaultJob()
	for i := range c.Jobs {
		j := &c.Jobs[i]
		setStr(&j.Timezone, dj.Timezone)
		setStr(&j.Overlap, dj.Overlap)
		setStr(&j.Misfire.Policy, dj.Misfire.Policy)
	}
}

// Load reads and parses the file at path. Problems in the file are reported
// as a *Error whose messages start with path; a file that cannot be read
// gives the *fs.PathError from opening it, and one that is not a regular
// file (a FIFO, a device) or is larger than regfile.MaxConfigBytes an error
// naming it (ReadFile).
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// ReadFile reads the config file at path as Load, pacer validate and every
// reload do: only a regular file, of at most regfile.MaxConfigBytes, opened
// without blocking (see package regfile).
func ReadFile(path string) ([]byte, error) {
	return regfile.Read(path, regfile.MaxConfigBytes)
}

// Parse parses and validates a configuration. name is used as the file name
// in error messages. On failure the error is a *Error listing every problem
// found, and the returned *Config is nil.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, false)
}

// ParseReload is Parse for a file read again while the runner runs. It also
// requires the file to list its jobs under a top-level jobs key: an empty
// file, or one cut off before "jobs:" or right after it (an editor's or a
// deploy tool's half-written save), is refused rather than read as "no
// jobs", which would stop every job. An explicit "jobs: []" is accepted.
func ParseReload(name string, data []byte) (*Config, error) {
	return parse(name, data, true)
}

func parse(name string, data []byte, requireJobs bool) (*Config, error) {
	if name == "" {
		name = "<config>"
	}
	d := newDecoder(name)
	cfg := Default()
	root := d.document(data)
	if root != nil {
		d.decode(root, reflect.ValueOf(cfg).Elem(), "", 0)
	}
	applyDefaults(cfg)
	if !d.aborted {
		d.validate(cfg)
	}
	// (Unless the file did not parse at all: that error says enough.)
	if requireJobs && cfg.Jobs == nil && !d.failedAt("jobs") && (root != nil || len(d.problems) == 0) {
		what := "the file lists no jobs"
		switch {
		case len(bytes.TrimSpace(data)) == 0:
			what = "the file is empty"
		case d.isSet("jobs"):
			what = `"jobs:" has no value`
		}
		d.add(d.lineOf("jobs"), "jobs", `%s: a reload needs the jobs listed, so that a half-written file is never read as "no jobs"; write "jobs: []" to remove every job`, what)
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	if len(d.warnings) > 0 {
		cfg.Warnings = sortProblems(d.warnings)
	}
	d.recordFiles(cfg)
	d.recordPluginEntries(cfg)
	return cfg, nil
}
