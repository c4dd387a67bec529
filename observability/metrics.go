package observability

import (
	"runtime/debug"

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

// Metrics holds every Prometheus metric the runner exports. Labels are
// bounded: job IDs, plugin names and fixed enums, never run IDs.
type Metrics struct {
	Registry *prometheus.Registry

	JobRuns        *prometheus.CounterVec   // job, plugin, outcome
	JobRunDuration *prometheus.HistogramVec // job, plugin
	ScheduleLag    *prometheus.HistogramVec // job
	JobSkipped     *prometheus.CounterVec   // job, reason
	LastSuccess    *prometheus.GaugeVec     // job
	JobRunning     *prometheus.GaugeVec     // job
	Leader         *prometheus.GaugeVec     // node
	LeaderChanges  *prometheus.CounterVec   // event
	BuildInfo      *prometheus.GaugeVec     // version, goversion

	KeepaliveAge *prometheus.GaugeVec   // (none): seconds since the last acknowledged keepalive was sent
	Keepalives   *prometheus.CounterVec // result

	PluginUp          *prometheus.GaugeVec     // plugin
	PluginRestarts    *prometheus.CounterVec   // plugin, reason
	PluginRPCDuration *prometheus.HistogramVec // plugin, rpc
	PluginLogsDropped *prometheus.CounterVec   // plugin
}

// NewMetrics creates the metrics and registers them, with the Go runtime and
// process collectors, on a new registry.
func NewMetrics(version string) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		JobRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_job_runs_total",
			Help: "Run attempts finished, by outcome (success, failure, timeout, canceled, crashed).",
		}, []string{"job", "plugin", "outcome"}),
		JobRunDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pacer_job_run_duration_seconds",
			Help:    "Duration of run attempts, from the claim to the plugin's answer. Exemplars carry trace_id.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"job", "plugin"}),
		ScheduleLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pacer_job_schedule_lag_seconds",
			Help:    "Actual start of a run minus its scheduled time.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"job"}),
		JobSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_job_skipped_total",
			Help: "Slots that did not run here, by reason (overlap, paused, misfire, lock_lost, claimed_elsewhere).",
		}, []string{"job", "reason"}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_job_last_success_timestamp_seconds",
			Help: "Unix time of the job's last successful run on this replica.",
		}, []string{"job"}),
		JobRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_job_running",
			Help: "Runs of the job in progress on this replica.",
		}, []string{"job"}),
		Leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_leader",
			Help: "1 while this replica leads the cluster, else 0.",
		}, []string{"node"}),
		LeaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_leader_transitions_total",
			Help: "Leadership changes of this replica, by event (acquired, lost).",
		}, []string{"event"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_build_info",
			Help: "Always 1; labels carry the build's version.",
		}, []string{"version", "goversion"}),
		KeepaliveAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_lease_keepalive_age_seconds",
			Help: "Seconds since the last acknowledged lease keepalive was sent, while leading; 0 otherwise.",
		}, nil),
		Keepalives: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_lease_keepalives_total",
			Help: "Lease keepalives sent while leading, by result (ok, no_leader, timeout, error, lost).",
		}, []string{"result"}),
		PluginUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pacer_plugin_up",
			Help: "1 while the plugin's process is running and healthy, else 0.",
		}, []string{"plugin"}),
		PluginRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pacer_plugin_restarts_total",
			Help: "Plugin processes started to replace one that went away, by reason (crash, hung, unhealthy, start).",
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
	}
	for _, c := range []prometheus.Collector{
		m.JobRuns, m.JobRunDuration, m.ScheduleLag, m.JobSkipped, m.LastSuccess,
		m.JobRunning, m.Leader, m.LeaderChanges, m.BuildInfo,
		m.PluginUp, m.PluginRestarts, m.PluginRPCDuration, m.PluginLogsDropped,
		m.KeepaliveAge, m.Keepalives,
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
	return m, nil
}

// ObserveWithTrace records v in h, attaching traceID as an exemplar when set.
func ObserveWithTrace(h prometheus.Observer, v float64, traceID string) {
	if eo, ok := h.(prometheus.ExemplarObserver); ok && traceID != "" {
		eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": traceID})
		return
	}
	h.Observe(v)
}
