package coord

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/duration"
	"github.com/pacerun/pacer/observability"
)

// MonitorOptions configure a Monitor.
type MonitorOptions struct {
	Client *clientv3.Client
	// Cluster names the key prefix whose keys are counted.
	Cluster string
	// Metrics, if set, receives the pacer_etcd_* gauges.
	Metrics *observability.Metrics
	Logger  *slog.Logger
	// Interval between looks at etcd. Default 15s.
	Interval time.Duration
	// Registered, if set, is closed once the replica has written its own
	// keys (its job set and member record: Membership.Registered). The
	// first look shown waits for it, so that it counts them, for at most
	// Interval: a replica that cannot register (its node name taken) still
	// reports etcd, and a look that fails is shown at once. Until a look
	// is shown, Status has a zero At and no pacer_etcd_* series exists.
	Registered <-chan struct{}
	// RequestTimeout bounds each request. Default 5s.
	RequestTimeout time.Duration
	// TLS is the etcd client's TLS configuration (nil: none). A member
	// that does not report its space quota (etcd < 3.6) is asked for it
	// on its client URL's /metrics, with it.
	TLS *tls.Config

	// Embedded says this replica runs the only etcd member, in DataDir.
	// The monitor then also defragments it when its file holds much more
	// than is in use, recovers it from the NOSPACE alarm (compact,
	// defragment, disarm) when that frees enough space, and watches the
	// free space of DataDir's file system.
	Embedded bool
	DataDir  string
	// Endpoint names the member a client without endpoints of its own
	// talks to (the embedded etcd's in-process client: its client URL):
	// its status is asked for under this name, and reported with it.
	Endpoint string
	// Defragment when the file holds at least DefragMinFree bytes not in
	// use (default: 64 MiB or a tenth of the quota, whichever is more) and
	// is at least twice its in-use size.
	DefragMinFree int64
	// DiskLowBytes: below this much free space on DataDir's file system
	// the replica is not ready. Default 64 MiB.
	DiskLowBytes uint64
}

// EtcdStatus is what a replica last saw of the etcd member it talks to.
type EtcdStatus struct {
	Endpoint    string `json:"endpoint,omitempty"`
	DBSize      int64  `json:"db_size_bytes"`
	DBSizeInUse int64  `json:"db_size_in_use_bytes"`
	// Quota is the member's space quota; 0 when it is unknown, and
	// QuotaError then says why (see quotaReader).
	Quota      int64    `json:"db_quota_bytes,omitempty"`
	QuotaError string   `json:"db_quota_error,omitempty"`
	Keys       int64    `json:"keys"`
	HasLeader  bool     `json:"has_leader"`
	Alarms     []string `json:"alarms,omitempty"`
	// DiskFree is the free space of the embedded member's file system.
	DiskFree uint64 `json:"disk_free_bytes,omitempty"`
	// Error says why the look at At failed. The endpoint, sizes, keys and
	// alarms it could not read are then the last good look's, made at
	// LastGood (zero when no look has succeeded yet: they are zero too);
	// HasLeader is false, since nothing says etcd has one.
	Error    string    `json:"error,omitempty"`
	At       time.Time `json:"at,omitzero"`
	LastGood time.Time `json:"last_good,omitzero"`
}

// EtcdNoLeader is EtcdStatus.Error when the member answered that it has no
// leader: unlike other errors, an answer about etcd itself.
const EtcdNoLeader = "etcd member has no leader"

// NearQuotaRatio is how full the database may get, against its quota,
// before Pacer warns (pacer status, the alert rule on the metrics).
const NearQuotaRatio = 0.8

// NearQuota reports whether the database file has reached NearQuotaRatio of
// its quota (etcd compares the file's size, not the size in use, with the
// quota).
func (s EtcdStatus) NearQuota() bool {
	return s.Quota > 0 && float64(s.DBSize) >= NearQuotaRatio*float64(s.Quota)
}

// Monitor looks at the etcd member a replica talks to: database size, size
// in use, quota, keys under the cluster's prefix, leader, alarms. It
// exports them as metrics and for pacer status, and keeps an embedded
// member compact (see MonitorOptions.Embedded).
type Monitor struct {
	o      MonitorOptions
	log    *slog.Logger
	prefix string

	mu   sync.Mutex
	last EtcdStatus
	// good is the last look that did not fail.
	good EtcdStatus
	// noSpaceLogged is when NoSpaceHelp was last logged.
	noSpaceLogged time.Time
	quotas        *quotaReader
}

// NewMonitor returns a Monitor. Nothing happens until Run.
func NewMonitor(o MonitorOptions) *Monitor {
	if o.Interval <= 0 {
		o.Interval = 15 * time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DiskLowBytes == 0 {
		o.DiskLowBytes = 64 << 20
	}
	return &Monitor{o: o, log: o.Logger, prefix: "/pacer/" + o.Cluster + "/", quotas: newQuotaReader(o.TLS, o.RequestTimeout)}
}

// Status returns what the monitor last saw.
func (m *Monitor) Status() EtcdStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.last
	st.Alarms = append([]string(nil), st.Alarms...)
	return st
}

// Run looks at etcd every Interval until ctx ends. Before the replica has
// registered (MonitorOptions.Registered) its first look only tends an
// embedded member: it counts none of the replica's own keys, so it is not
// shown unless it failed; the look made once the replica has registered
// is, or the next one, an Interval later, whichever comes first.
func (m *Monitor) Run(ctx context.Context) {
	registered := m.o.Registered
	timer := time.NewTimer(0)
	defer timer.Stop()
	for first := true; ; first = false {
		select {
		case <-ctx.Done():
			return
		case <-registered:
			registered = nil // closed: look now, and wait for it no more
		case <-timer.C:
		}
		if registered != nil {
			select {
			case <-registered:
				registered = nil
			default:
			}
		}
		st := m.look(ctx)
		if m.o.Embedded && st.Error == "" {
			st = m.tend(ctx, st)
		}
		timer.Reset(m.o.Interval)
		if first && registered != nil && st.Error == "" {
			continue // the look once the replica has registered counts its keys
		}
		m.mu.Lock()
		st = m.keep(st)
		m.last = st
		m.mu.Unlock()
		m.export(st)
	}
}

// keep returns st, a look that failed, with what it could not read taken
// from the last good look (and that look's time in LastGood); a good look
// it returns as it is, and keeps. Called with m.mu held.
func (m *Monitor) keep(st EtcdStatus) EtcdStatus {
	if st.Error == "" {
		m.good = st
		return st
	}
	if m.good.At.IsZero() {
		return st
	}
	st.LastGood = m.good.At
	if st.Endpoint == "" {
		st.Endpoint, st.DBSize, st.DBSizeInUse = m.good.Endpoint, m.good.DBSize, m.good.DBSizeInUse
		st.Quota, st.QuotaError = m.good.Quota, m.good.QuotaError
	}
	if !st.HasLeader && st.Keys == 0 {
		st.Keys = m.good.Keys
	}
	if st.Alarms == nil {
		st.Alarms = m.good.Alarms
	}
	if st.DiskFree == 0 {
		st.DiskFree = m.good.DiskFree
	}
	return st
}

// look reads the status of the member that answers this replica's
// requests.
func (m *Monitor) look(ctx context.Context) EtcdStatus {
	st := EtcdStatus{At: time.Now()}
	cli := m.o.Client
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), m.o.RequestTimeout)
	defer cancel()
	keys, err := cli.Get(rctx, m.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader):
		st.Error = EtcdNoLeader
	case err != nil:
		st.Error = err.Error()
	default:
		st.Keys, st.HasLeader = keys.Count, true
	}
	// The status of the member that answered (matched by member ID), or
	// of the first endpoint that answers.
	var answered uint64
	if keys != nil {
		answered = keys.Header.MemberId
	}
	var status *clientv3.StatusResponse
	eps := cli.Endpoints()
	if len(eps) == 0 && m.o.Endpoint != "" {
		eps = []string{m.o.Endpoint}
	}
	for _, ep := range eps {
		sctx, scancel := context.WithTimeout(ctx, m.o.RequestTimeout)
		s, serr := cli.Status(sctx, ep)
		scancel()
		if serr != nil {
			continue
		}
		if status == nil || s.Header.MemberId == answered {
			status, st.Endpoint = s, ep
		}
		if s.Header.MemberId == answered {
			break
		}
	}
	if status != nil {
		st.DBSize, st.DBSizeInUse = status.DbSize, status.DbSizeInUse
		st.HasLeader = st.HasLeader && status.Leader != 0
		quota, err := m.quotas.quota(ctx, status.Header.MemberId, st.Endpoint, status.DbSizeQuota, st.At)
		if err != nil {
			st.QuotaError = QuotaUnknown + err.Error() + ")"
		}
		st.Quota = quota
	} else if st.Error == "" {
		st.Error = "no etcd endpoint answered a status request"
	}
	if alarms, err := cli.AlarmList(rctx); err == nil {
		for _, a := range alarms.Alarms {
			st.Alarms = append(st.Alarms, a.Alarm.String())
		}
	}
	if m.o.Embedded {
		if free, err := diskFree(m.o.DataDir); err == nil {
			st.DiskFree = free
		}
	}
	return st
}

// export sets the gauges a look read; a gauge no look has read yet keeps
// no series (a size or key count of 0 would be false).
func (m *Monitor) export(st EtcdStatus) {
	mt := m.o.Metrics
	if mt == nil {
		return
	}
	if st.Endpoint != "" {
		mt.EtcdDBSize.WithLabelValues().Set(float64(st.DBSize))
		mt.EtcdDBSizeInUse.WithLabelValues().Set(float64(st.DBSizeInUse))
		if st.Quota > 0 {
			mt.EtcdDBQuota.WithLabelValues().Set(float64(st.Quota))
		} else {
			mt.EtcdDBQuota.DeleteLabelValues() // unknown: no series rather than a guess
		}
	}
	if st.HasLeader {
		mt.EtcdKeys.WithLabelValues().Set(float64(st.Keys))
		mt.EtcdHasLeader.WithLabelValues().Set(1)
	} else {
		mt.EtcdHasLeader.WithLabelValues().Set(0)
	}
}

// tend keeps an embedded member compact: it recovers from the NOSPACE
// alarm, or defragments a file that has grown much larger than its data.
func (m *Monitor) tend(ctx context.Context, st EtcdStatus) EtcdStatus {
	noSpace := false
	for _, a := range st.Alarms {
		noSpace = noSpace || a == etcdserverpb.AlarmType_NOSPACE.String()
	}
	minFree := m.o.DefragMinFree
	if minFree <= 0 {
		minFree = max(64<<20, st.Quota/10)
	}
	switch {
	case noSpace:
		return m.recover(ctx, st)
	case st.DBSize-st.DBSizeInUse >= minFree && st.DBSize >= 2*st.DBSizeInUse:
		if err := m.defragment(ctx, st); err != nil {
			m.log.Warn("embedded etcd: defragmentation failed", "error", err)
			return st
		}
		return m.look(ctx)
	}
	return st
}

func (m *Monitor) defragment(ctx context.Context, st EtcdStatus) error {
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, duration.Times(m.o.RequestTimeout, 10))
	defer cancel()
	if _, err := m.o.Client.Defragment(dctx, st.Endpoint); err != nil {
		return err
	}
	after := st
	sctx, scancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	defer scancel()
	if s, err := m.o.Client.Status(sctx, st.Endpoint); err == nil {
		after.DBSize, after.DBSizeInUse = s.DbSize, s.DbSizeInUse
	}
	m.log.Info("embedded etcd defragmented: its file had grown much larger than its data",
		"db_size_bytes_before", st.DBSize, "db_size_bytes_after", after.DBSize, "db_size_in_use_bytes", after.DBSizeInUse,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// recover clears the NOSPACE alarm of an embedded member: compact every
// revision but the latest, defragment, and disarm the alarm if the file is
// then below NearQuotaRatio of the quota. Otherwise the data itself is too
// large for the quota, and NoSpaceHelp says what to do.
func (m *Monitor) recover(ctx context.Context, st EtcdStatus) EtcdStatus {
	m.log.Warn("embedded etcd reached its space quota (NOSPACE alarm): compacting and defragmenting it",
		"db_size_bytes", st.DBSize, "db_size_in_use_bytes", st.DBSizeInUse, "db_quota_bytes", st.Quota)
	cli := m.o.Client
	rctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	defer cancel()
	resp, err := cli.Get(rctx, m.prefix, clientv3.WithCountOnly())
	if err == nil {
		_, err = cli.Compact(rctx, resp.Header.Revision, clientv3.WithCompactPhysical())
		if errors.Is(err, rpctypes.ErrCompacted) {
			err = nil
		}
	}
	if err == nil {
		err = m.defragment(ctx, st)
	}
	if err != nil {
		m.log.Warn("embedded etcd: could not free space", "error", err)
		return st
	}
	after := m.look(ctx)
	if after.Quota > 0 && float64(after.DBSize) < NearQuotaRatio*float64(after.Quota) {
		dctx, dcancel := context.WithTimeout(ctx, m.o.RequestTimeout)
		defer dcancel()
		alarms, err := cli.AlarmList(dctx)
		for _, a := range alarmsOf(alarms) {
			if err == nil && a.Alarm == etcdserverpb.AlarmType_NOSPACE {
				_, err = cli.AlarmDisarm(dctx, &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm})
			}
		}
		if err != nil {
			m.log.Warn("embedded etcd: could not disarm the NOSPACE alarm", "error", err)
			return after
		}
		m.log.Warn("embedded etcd recovered from its space quota: writes are accepted again",
			"db_size_bytes", after.DBSize, "db_quota_bytes", after.Quota)
		return m.look(ctx)
	}
	if time.Since(m.noSpaceLogged) >= time.Minute {
		m.noSpaceLogged = time.Now()
		m.log.Error(NoSpaceHelp, "db_size_bytes", after.DBSize, "db_size_in_use_bytes", after.DBSizeInUse, "db_quota_bytes", after.Quota)
	}
	return after
}

// Check says why this replica's etcd cannot take writes now, or nil: a
// space-quota or corruption alarm, or (embedded) a disk almost full. For
// readiness; it asks etcd at once.
func (m *Monitor) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.o.RequestTimeout)
	defer cancel()
	alarms, err := m.o.Client.AlarmList(ctx)
	if err != nil {
		return fmt.Errorf("etcd unreachable: %w", err)
	}
	for _, a := range alarms.Alarms {
		switch a.Alarm {
		case etcdserverpb.AlarmType_NOSPACE:
			return errors.New(NoSpaceHelp)
		case etcdserverpb.AlarmType_CORRUPT:
			return errors.New("etcd reports data corruption (CORRUPT alarm): it refuses writes. Fix: restore the corrupted member from a snapshot or replace it, then etcdctl alarm disarm")
		}
	}
	if m.o.Embedded {
		if free, err := diskFree(m.o.DataDir); err == nil && free < m.o.DiskLowBytes {
			return fmt.Errorf("embedded etcd's disk is almost full: %d bytes free in %s. Fix: free space on that file system (or move cluster.data_dir)", free, m.o.DataDir)
		}
	}
	return nil
}

func alarmsOf(r *clientv3.AlarmResponse) []*etcdserverpb.AlarmMember {
	if r == nil {
		return nil
	}
	return r.Alarms
}

// diskFree is the space available to this process on dir's file system.
func diskFree(dir string) (uint64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, err
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}
