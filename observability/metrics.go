package observability

import (
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Run outcomes: the values of the outcome label of pacer_job_runs_total.
const (
	OutcomeSuccess  = "success"
	OutcomeFailure  = "failure"
	OutcomeTimeout  = "timeout"
	OutcomeCanceled = "canceled"
	OutcomeCrashed  = "crashed"
)

// JobLabel is the label that carries a Pacer job ID on the pacer_job_*
// metrics. It is not "job": that is the label Prometheus gives every target
// (its scrape job), and a metric label of the same name would be renamed to
// exported_job, or overwrite the target's own with honor_labels.
const JobLabel = "job_id"

// Outcomes are every value of pacer_job_runs_total's outcome label.
var Outcomes = []string{OutcomeSuccess, OutcomeFailure, OutcomeTimeout, OutcomeCanceled, OutcomeCrashed}

// ShardEvents are the values of pacer_shard_transitions_total's event label.
var ShardEvents = []string{"acquired", "handed_over", "lost"}

// Keepalive results: the values of pacer_lease_keepalives_total's result
// label.
var KeepaliveResults = []string{"ok", "no_leader", "timeout", "error", "lost", "fenced"}

// Metrics holds every Prometheus metric the runner exports. Labels are
// bounded: job IDs, plugin names and fixed enums, never run IDs.
type Metrics struct {
	Registry *prometheus.Registry

	JobRuns        *prometheus.CounterVec   // job_id, plugin, outcome
	JobRunDuration *prometheus.HistogramVec // job_id, plugin
	ScheduleLag    *prometheus.HistogramVec // job_id
	JobSkipped     *prometheus.CounterVec   // job_id, reason
	LastSuccess    *prometheus.GaugeVec     // job_id
	JobRunning     *prometheus.GaugeVec     // job_id
	JobPaused      *prometheus.GaugeVec     // job_id
	Leader         *prometheus.GaugeVec     // node
	LeaderChanges  *prometheus.CounterVec   // event
	// Shards is cluster.shards; ShardsLed how many this replica leads,
	// ShardLeader which (1 per shard it leads), ShardTransitions how
	// its terms started and ended.
	Shards           prometheus.Gauge
	ShardsLed        *prometheus.GaugeVec   // node
	ShardLeader      *prometheus.GaugeVec   // shard
	ShardTransitions *prometheus.CounterVec // event
	ScheduledJobs    prometheus.Gauge
	BuildInfo        *prometheus.GaugeVec // version, goversion

	KeepaliveAge *prometheus.GaugeVec   // (none): seconds since the last acknowledged keepalive was sent
	Keepalives   *prometheus.CounterVec // result

	JobSetAgreed *prometheus.GaugeVec // node: 1 while this replica's job set is the cluster's
	JobSets      prometheus.Gauge     // distinct job sets among the live replicas
	// The etcd member this replica talks to (coord.Monitor). Each has no
	// labels, and no series until a look at etcd has read its value: a
	// replica that has not looked yet exports nothing rather than a 0
	// that reads as an empty or leaderless etcd.
	EtcdDBSize      *prometheus.GaugeVec // bytes of the database file
	EtcdDBSizeInUse *prometheus.GaugeVec // bytes in use in it
	EtcdDBQuota     *prometheus.GaugeVec // the space quota, bytes
	EtcdKeys        *prometheus.GaugeVec // keys under the cluster's prefix
	EtcdHasLeader   *prometheus.GaugeVec // 1 while the member has a raft leader

	PluginUp          *prometheus.GaugeVec     // plugin
	PluginUnavailable *prometheus.GaugeVec     // plugin
	PluginQuarantined *prometheus.GaugeVec     // plugin
	PluginRestarts    *prometheus.CounterVec   // plugin, reason
	PluginRPCDuration *prometheus.HistogramVec // plugin, rpc
	PluginLogsDropped *prometheus.CounterVec   // plugin

	TriggerRequests *prometheus.CounterVec // result
	TriggersStored  prometheus.Gauge
	HTTPRejected    *prometheus.CounterVec // reason
	// RecordsRefused counts run and skip records etcd refused as they were
	// (too large), written again with their texts cut.
	RecordsRefused prometheus.Counter
}

// Results of a manual trigger request: the values of the result label of
// pacer_trigger_requests_total.
const (
	TriggerAccepted       = "accepted"        // stored
	TriggerReplayed       = "replayed"        // answered from an earlier request with its Idempotency-Key
	TriggerRefusedJob     = "refused_job"     // the job's bound (triggers.max_pending_per_job) is reached
	TriggerRefusedCluster = "refused_cluster" // the cluster's bound (triggers.max_pending) is reached
	TriggerNotStored      = "not_stored"      // etcd failed before anything was written
	TriggerUnconfirmed    = "unconfirmed"     // etcd did not confirm a write that went out
)

// NewMetrics creates the metrics and registers them, with the Go runtime and
// process collectors, on a new registry.
func NewMetrics(version string) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		JobRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_job_runs_total",
			Help: "Run attempts finished, by outcome (success, failure, timeout, canceled, crashed).",
		}, []string{JobLabel, "plugin", "outcome"}),
		JobRunDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pacer_job_run_duration_seconds",
			Help:    "Duration of run attempts, from the claim to the plugin's answer. Exemplars carry trace_id.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{JobLabel, "plugin"}),
		ScheduleLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pacer_job_schedule_lag_seconds",
			Help:    "Actual start of a run minus its scheduled time.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{JobLabel}),
		JobSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_job_skipped_total",
			Help: "Slots and manual triggers that did not run here, by reason (overlap, paused, misfire, lock_lost, claimed_elsewhere, too_old, expired).",
		}, []string{JobLabel, "reason"}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_job_last_success_timestamp_seconds",
			Help: "Unix time the job's last successful run ended, on any replica: from the cluster's state when this replica's term of the job's shard starts, then at each success here.",
		}, []string{JobLabel}),
		JobRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_job_running",
			Help: "Runs of the job in progress on this replica.",
		}, []string{JobLabel}),
		JobPaused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_job_paused",
			Help: "1 while the job is paused (pacer pause), else 0; one series per configured job.",
		}, []string{JobLabel}),
		Leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_leader",
			Help: "1 while this replica leads shard 0, which makes it the cluster's leader (one per cluster; it also does the cluster-wide chores), else 0.",
		}, []string{"node"}),
		LeaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_leader_transitions_total",
			Help: "Changes of this replica's leadership of shard 0 (the cluster's leader), by event (acquired, lost).",
		}, []string{"event"}),
		Shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pacer_shards",
			Help: "The number of shards the jobs are partitioned into (cluster.shards).",
		}),
		ShardsLed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_shards_led",
			Help: "Shards this replica leads now.",
		}, []string{"node"}),
		ShardLeader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_shard_leader",
			Help: "1 while this replica leads the shard, else 0; one series per shard.",
		}, []string{"shard"}),
		ShardTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_shard_transitions_total",
			Help: "Terms of shard leadership of this replica that started (acquired) or ended: handed over gracefully (handed_over) or lost (lost: fenced, lease lost, stopped by an etcd error).",
		}, []string{"event"}),
		ScheduledJobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pacer_scheduled_jobs",
			Help: "Jobs this replica's scheduler holds: those of the shards it leads.",
		}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_build_info",
			Help: "Always 1; labels carry the build's version.",
		}, []string{"version", "goversion"}),
		KeepaliveAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_lease_keepalive_age_seconds",
			Help: "Seconds since the last acknowledged keepalive of this replica's lease (its etcd session, which holds its member record and every election key) was sent; 0 without a session.",
		}, nil),
		Keepalives: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_lease_keepalives_total",
			Help: "Keepalives of this replica's lease, by result (ok, no_leader, timeout, error, lost, fenced: none acknowledged before the fence deadline).",
		}, []string{"result"}),
		JobSetAgreed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_job_set_agreed",
			Help: "1 while this replica's job set (its jobs, as configured) is the cluster's, else 0.",
		}, []string{"node"}),
		JobSets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pacer_job_sets",
			Help: "Distinct job sets among the live replicas, as this replica sees them; 1 when they all agree.",
		}),
		EtcdDBSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_etcd_db_size_bytes",
			Help: "Size of the database file of the etcd member this replica talks to (etcd compares it with its space quota). Absent until the replica's first look at etcd.",
		}, nil),
		EtcdDBSizeInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_etcd_db_size_in_use_bytes",
			Help: "Bytes in use in the database file of the etcd member this replica talks to; the rest is free pages, given back by defragmentation.",
		}, nil),
		EtcdDBQuota: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_etcd_db_quota_bytes",
			Help: "Space quota of the etcd member this replica talks to: at this database size etcd refuses every write (NOSPACE alarm).",
		}, nil),
		EtcdKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_etcd_keys",
			Help: "Keys under the cluster's prefix in etcd (/pacer/<cluster>/). Absent until the replica's first look at etcd, which follows its own member record.",
		}, nil),
		EtcdHasLeader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_etcd_has_leader",
			Help: "1 while the etcd member this replica talks to has a raft leader (it can serve writes), else 0. Absent until the replica's first look at etcd.",
		}, nil),
		PluginUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_plugin_up",
			Help: "1 while the plugin's process is running and healthy, else 0.",
		}, []string{"plugin"}),
		PluginUnavailable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_plugin_unavailable",
			Help: "1 from a failed attempt to start the plugin for a call (a run, or the check of a new config) until a process starts; quarantine counts. An idle plugin is not unavailable.",
		}, []string{"plugin"}),
		PluginQuarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_plugin_quarantined",
			Help: "1 while the plugin is quarantined after crashing repeatedly (its runs fail fast), else 0.",
		}, []string{"plugin"}),
		PluginRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_plugin_restarts_total",
			Help: "Attempts to start a plugin process in place of one that went away, failed ones included, by why the process or attempt before went away (crash, hung, unhealthy, start, restart).",
		}, []string{"plugin", "reason"}),
		PluginRPCDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pacer_plugin_rpc_duration_seconds",
			Help:    "Duration of calls into plugins, by RPC (run, describe).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05, .1, .5, 1, 5, 30, 300},
		}, []string{"plugin", "rpc"}),
		PluginLogsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_plugin_log_lines_dropped_total",
			Help: "Plugin log lines dropped by the per-run rate and volume limits.",
		}, []string{"plugin"}),
		TriggerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_trigger_requests_total",
			Help: "Manual trigger requests this replica's API answered, by result (accepted, replayed, refused_job, refused_cluster, not_stored, unconfirmed).",
		}, []string{"result"}),
		TriggersStored: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pacer_trigger_requests_stored",
			Help: "Manual trigger requests kept in etcd (pending, or decided to run and running), as this replica last saw them.",
		}),
		HTTPRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_http_rejected_total",
			Help: "API requests and connections refused, by reason (unauthorized, cross_origin, host, content_type, rate_limited, connection_limit, connection_evicted).",
		}, []string{"reason"}),
		RecordsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pacer_run_records_refused_total",
			Help: "Run and skip records etcd refused as they were (over its request limit), written again with their output and progress dropped and their error cut.",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.JobRuns, m.JobRunDuration, m.ScheduleLag, m.JobSkipped, m.LastSuccess,
		m.JobRunning, m.JobPaused, m.Leader, m.LeaderChanges, m.BuildInfo,
		m.Shards, m.ShardsLed, m.ShardLeader, m.ShardTransitions, m.ScheduledJobs,
		m.PluginUp, m.PluginUnavailable, m.PluginQuarantined, m.PluginRestarts, m.PluginRPCDuration, m.PluginLogsDropped,
		m.KeepaliveAge, m.Keepalives, m.HTTPRejected, m.JobSetAgreed, m.JobSets,
		m.TriggerRequests, m.TriggersStored, m.RecordsRefused,
		m.EtcdDBSize, m.EtcdDBSizeInUse, m.EtcdDBQuota, m.EtcdKeys, m.EtcdHasLeader,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	m.BuildInfo.WithLabelValues(version, goVersion).Set(1)
	// Series with known label values exist at 0 from the start, so the
	// first event shows in increase() and alerts (see runner/metrics.go for
	// the per-job ones).
	for _, r := range KeepaliveResults {
		m.Keepalives.WithLabelValues(r)
	}
	for _, e := range []string{"acquired", "lost"} {
		m.LeaderChanges.WithLabelValues(e)
	}
	for _, e := range ShardEvents {
		m.ShardTransitions.WithLabelValues(e)
	}
	m.KeepaliveAge.WithLabelValues()
	for _, r := range []string{TriggerAccepted, TriggerReplayed, TriggerRefusedJob, TriggerRefusedCluster, TriggerNotStored, TriggerUnconfirmed} {
		m.TriggerRequests.WithLabelValues(r) // exported at 0 from the start, for rate() and alerts
	}
	return m, nil
}

// MustNewMetrics is NewMetrics for callers that cannot handle its error,
// which only a programming mistake (two metrics of one name) can cause.
func MustNewMetrics(version string) *Metrics {
	m, err := NewMetrics(version)
	if err != nil {
		panic(err)
	}
	return m
}

// ObserveWithTrace records v in h, attaching traceID as an exemplar when set.
// h must not keep the labels it is given (client_golang's histograms copy
// them into the exemplar they store): the map is reused, as a map per
// observation is garbage on every run, twice.
func ObserveWithTrace(h prometheus.Observer, v float64, traceID string) {
	if eo, ok := h.(prometheus.ExemplarObserver); ok && traceID != "" {
		l := exemplarLabels.Get().(prometheus.Labels)
		l["trace_id"] = traceID
		eo.ObserveWithExemplar(v, l)
		l["trace_id"] = "" // keep no trace ID alive in the pool
		exemplarLabels.Put(l)
		return
	}
	h.Observe(v)
}

// exemplarLabels holds ObserveWithTrace's label maps, each with one key.
var exemplarLabels = sync.Pool{New: func() any { return prometheus.Labels{"trace_id": ""} }}

// WatchLogQueue exports q's counts: pacer_log_lines_dropped_total, the
// lines the runner's log dropped because its output blocked (or failed),
// and pacer_log_output_blocked_seconds, how long the log's write in
// progress has been waiting for the output (0 when it keeps up).
func (m *Metrics) WatchLogQueue(q *LogQueue) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "pacer_log_lines_dropped_total",
			Help: "Log lines this runner dropped instead of waiting for its log output (stderr), which was blocked or failed.",
		}, func() float64 { return float64(q.Dropped()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pacer_log_output_blocked_seconds",
			Help: "Seconds the log's write in progress has been waiting for the log output (stderr); 0 while the output keeps up.",
		}, func() float64 { return q.Blocked().Seconds() }),
	} {
		if err := m.Registry.Register(c); err != nil {
			return err
		}
	}
	return nil
}
