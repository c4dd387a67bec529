package coord_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/coord"
)

func runMonitor(t *testing.T, o coord.MonitorOptions) *coord.Monitor {
	t.Helper()
	m := coord.NewMonitor(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// The monitor exports what the member says: database size and size in
// use, the quota, the keys under the cluster's prefix (and no others),
// and that it has a leader.
func TestMonitorExportsEtcdStatus(t *testing.T) {
	cli := setupWith(t, etcdembed.Options{QuotaBytes: 64 << 20}).client(t)
	for i := range 25 {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("/pacer/mon/k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(context.Background(), "/pacer/other/k", "v"); err != nil {
		t.Fatal(err)
	}
	metrics, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	m := runMonitor(t, coord.MonitorOptions{Client: cli, Cluster: "mon", Metrics: metrics, Interval: 50 * time.Millisecond})
	waitFor(t, "a status", 10*time.Second, func() bool { return !m.Status().At.IsZero() })
	st := m.Status()
	if st.Keys != 25 || !st.HasLeader || st.Quota != 64<<20 || st.DBSize <= 0 || st.DBSizeInUse <= 0 || st.DBSizeInUse > st.DBSize {
		t.Fatalf("status %+v", st)
	}
	for name, want := range map[string]float64{
		"pacer_etcd_keys": 25, "pacer_etcd_has_leader": 1, "pacer_etcd_db_quota_bytes": 64 << 20,
	} {
		if got := gauge(t, metrics, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if gauge(t, metrics, "pacer_etcd_db_size_bytes") <= 0 || gauge(t, metrics, "pacer_etcd_db_size_in_use_bytes") <= 0 {
		t.Error("database size gauges not set")
	}
	for _, g := range []prometheus.Collector{metrics.EtcdDBSize, metrics.EtcdDBSizeInUse, metrics.EtcdDBQuota, metrics.EtcdKeys, metrics.EtcdHasLeader} {
		if problems, err := testutil.CollectAndLint(g); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", problems, err)
		}
	}
}

// The monitor shows no look taken before the replica has written its own
// keys: until then Status has no time and no pacer_etcd_* series exists
// (not a 0 that reads as an empty etcd). The look it shows first, taken
// as soon as the membership has published the replica's record, counts
// the replica's job set and member record. Before attack 10's F12 fix the
// look taken at start was shown for an Interval: 0 keys.
func TestMonitorShowsFirstALookThatCountsTheReplicasOwnKeys(t *testing.T) {
	b := setup(t)
	cli := b.client(t)
	metrics, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	ms := coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "mon", Node: "n1", LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second, JobSet: jobSet("x"), Record: coord.MemberRecord{Version: "test", Started: time.Now()}})
	m := runMonitor(t, coord.MonitorOptions{Client: cli, Cluster: "mon", Metrics: metrics, Interval: time.Hour, Registered: ms.Registered()})
	time.Sleep(300 * time.Millisecond) // not synchronisation: nothing may be shown in this time
	if st := m.Status(); !st.At.IsZero() {
		t.Fatalf("a look taken before the replica registered is shown: %+v", st)
	}
	if names := etcdSeries(t, metrics); len(names) > 0 {
		t.Fatalf("series before any look was shown: %v", names)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ms.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "a look shown", 10*time.Second, func() bool { return !m.Status().At.IsZero() })
	st := m.Status()
	if st.Keys < 2 || !st.HasLeader {
		t.Fatalf("first look shown: %+v; want the replica's job set and member record counted", st)
	}
	if got := gauge(t, metrics, "pacer_etcd_keys"); got != float64(st.Keys) {
		t.Fatalf("pacer_etcd_keys = %v, status %d", got, st.Keys)
	}
	if names := etcdSeries(t, metrics); len(names) != 5 {
		t.Fatalf("series after the first look: %v, want all five", names)
	}
}

// A replica that cannot register (here: nothing closes Registered) still
// shows a look, an Interval after it started.
func TestMonitorShowsALookOfAnUnregisteredReplicaAfterAnInterval(t *testing.T) {
	cli := setup(t).client(t)
	if _, err := cli.Put(context.Background(), "/pacer/mon/k", "v"); err != nil {
		t.Fatal(err)
	}
	m := runMonitor(t, coord.MonitorOptions{Client: cli, Cluster: "mon", Interval: 200 * time.Millisecond, Registered: make(chan struct{})})
	waitFor(t, "a look shown", 10*time.Second, func() bool { return !m.Status().At.IsZero() })
	if st := m.Status(); st.Keys != 1 || !st.HasLeader {
		t.Fatalf("status %+v", st)
	}
}

// etcdSeries names the pacer_etcd_* metrics that have a series.
func etcdSeries(t *testing.T, m *observability.Metrics) []string {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "pacer_etcd_") && len(mf.GetMetric()) > 0 {
			out = append(out, mf.GetName())
		}
	}
	return out
}

func gauge(t *testing.T, m *observability.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// An embedded member whose file holds much more than its data (after a
// large delete and a compaction) is defragmented by its monitor.
func TestMonitorDefragmentsEmbeddedEtcd(t *testing.T) {
	// The embedded member's own runner calls it in its process: its
	// client has no endpoint of its own, and the monitor names the
	// member with the one it is given.
	b := setupWith(t, etcdembed.Options{QuotaBytes: 256 << 20, CompactionRetention: -1})
	cli := etcdtest.InProcessClient(t, b.etcd)
	ctx := context.Background()
	fill(t, cli, "/pacer/mon/big/", 12<<20)
	resp, err := cli.Delete(ctx, "/pacer/mon/big/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	before, err := cli.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if before.DbSize < 10<<20 {
		t.Fatalf("database only %d bytes before: the test did not grow it", before.DbSize)
	}
	var logs syncbuf.Buffer
	url := "http://" + b.endpoint
	m := runMonitor(t, coord.MonitorOptions{Client: cli, Cluster: "mon", Embedded: true, DataDir: t.TempDir(), Endpoint: url,
		DefragMinFree: 4 << 20, Interval: 100 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	deadline := time.Now().Add(time.Minute)
	for st := m.Status(); st.At.IsZero() || st.DBSize >= before.DbSize/2; st = m.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("no defragmentation within a minute: status %+v (before: size %d, in use %d); log:\n%s", st, before.DbSize, before.DbSizeInUse, logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the monitor's status
	}
	if st := m.Status(); st.Endpoint != url || st.Error != "" || !st.HasLeader || st.Quota != 256<<20 {
		t.Errorf("status %+v, want the member's under %s", st, url)
	}
	if !strings.Contains(logs.String(), "embedded etcd defragmented") {
		t.Fatalf("no log line about the defragmentation:\n%s", logs.String())
	}
}

// fill writes about n bytes of 64 KiB values under prefix.
func fill(t *testing.T, cli *clientv3.Client, prefix string, n int) error {
	t.Helper()
	v := strings.Repeat("x", 64<<10)
	for i := 0; i*len(v) < n; i++ {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("%s%06d", prefix, i), v); err != nil {
			return err
		}
	}
	return nil
}

// When etcd's space quota is reached, every write fails: the coordinator
// says so in one line with the fix, and readiness fails with it. The
// embedded member's monitor then compacts and defragments it and, once the
// file is below 80 % of the quota, disarms the alarm: writes work again.
func TestSpaceQuotaExceededIsReportedAndRecovered(t *testing.T) {
	cli := setupWith(t, etcdembed.Options{QuotaBytes: 16 << 20, CompactionRetention: -1}).client(t)
	ctx := context.Background()
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	c := coord.New(coord.Options{Client: cli, Cluster: "mon", Node: "a", LeaseTTL: 5 * time.Second, Logger: log})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "leadership", 10*time.Second, func() bool { return c.Term() != nil })

	err := fill(t, cli, "/pacer/mon/big/", 32<<20)
	if !coord.IsNoSpace(err) {
		t.Fatalf("filling past the quota: %v, want the NOSPACE error", err)
	}
	err = c.Claim(ctx, c.Term(), "job", time.Now(), []byte(`{}`))
	if !coord.IsNoSpace(err) {
		t.Fatalf("claim with etcd out of space: %v, want the NOSPACE error", err)
	}
	if n := strings.Count(logs.String(), "reached its space quota (NOSPACE alarm)"); n != 1 {
		t.Fatalf("%d log lines about the quota, want 1:\n%s", n, logs.String())
	}
	m := coord.NewMonitor(coord.MonitorOptions{Client: cli, Cluster: "mon", Embedded: true, DataDir: t.TempDir(), Logger: log})
	if err := m.Check(ctx); err == nil || !strings.Contains(err.Error(), "space quota") || !strings.Contains(err.Error(), "defrag") {
		t.Fatalf("readiness with etcd out of space: %v", err)
	}

	// The data goes (an operator deleted it, or it was history): the
	// monitor frees the space and disarms the alarm.
	if _, err := cli.Delete(ctx, "/pacer/mon/big/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	runMonitor(t, coord.MonitorOptions{Client: cli, Cluster: "mon", Embedded: true, DataDir: t.TempDir(),
		Interval: 100 * time.Millisecond, Logger: log})
	deadline := time.Now().Add(30 * time.Second)
	for m.Check(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("alarm not disarmed within 30s: %v\n%s", m.Check(ctx), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Claim(ctx, c.Term(), "job", time.Now(), []byte(`{}`)); err != nil {
		t.Fatalf("claim after the recovery: %v", err)
	}
	if !strings.Contains(logs.String(), "recovered from its space quota") {
		t.Fatalf("no log line about the recovery:\n%s", logs.String())
	}
}

// The leader compacts an etcd that does not compact itself: every
// CompactionInterval, up to the revision seen one interval before.
func TestLeaderCompactsEtcd(t *testing.T) {
	for _, interval := range []time.Duration{0, 500 * time.Millisecond} {
		t.Run(fmt.Sprintf("interval=%s", interval), func(t *testing.T) {
			cli := setupWith(t, etcdembed.Options{CompactionRetention: -1}).client(t)
			c := coord.New(coord.Options{Client: cli, Cluster: "cmp", Node: "a", LeaseTTL: 5 * time.Second, CompactionInterval: interval})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = c.Run(ctx) }()
			defer func() { cancel(); <-done }()
			waitFor(t, "leadership", 10*time.Second, func() bool { return c.Term() != nil })
			first, err := cli.Put(context.Background(), "/pacer/cmp/x", "1")
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			compacted := false
			for time.Now().Before(deadline) && !compacted {
				if _, err := cli.Put(context.Background(), "/pacer/cmp/x", "2"); err != nil {
					t.Fatal(err)
				}
				_, err := cli.Get(context.Background(), "/pacer/cmp/x", clientv3.WithRev(first.Header.Revision))
				compacted = errors.Is(err, rpctypes.ErrCompacted)
				time.Sleep(50 * time.Millisecond) // paces the writes; not synchronisation
			}
			if compacted != (interval > 0) {
				t.Fatalf("revision %d compacted: %v; want %v with compaction_interval %s", first.Header.Revision, compacted, interval > 0, interval)
			}
		})
	}
}

// A look that fails (etcd cut off) says so, with its error and time, and
// keeps the last good look's endpoint, sizes and keys, with that look's
// time: not zeros. Once etcd answers again, a good look replaces it.
func TestMonitorKeepsTheLastGoodLookWhenALookFails(t *testing.T) {
	b := setup(t)
	hole, cli := b.throughHole(t)
	for i := range 3 {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("/pacer/mon/k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	m := runMonitor(t, coord.MonitorOptions{Client: cli, Cluster: "mon", Interval: 50 * time.Millisecond, RequestTimeout: 300 * time.Millisecond})
	waitFor(t, "a good look", 10*time.Second, func() bool { st := m.Status(); return st.Error == "" && st.HasLeader })
	good := m.Status()
	if good.Endpoint == "" || good.Keys != 3 || good.DBSize <= 0 || !good.LastGood.IsZero() {
		t.Fatalf("good look %+v", good)
	}
	hole.SetCut(true)
	var st coord.EtcdStatus
	waitFor(t, "a failed look", 10*time.Second, func() bool { st = m.Status(); return st.Error != "" })
	if st.HasLeader || st.At.Before(st.LastGood) || st.LastGood.Before(good.At) {
		t.Fatalf("failed look %+v: want no leader claimed, at after its last good look (at or after %s)", st, good.At)
	}
	if st.Endpoint != good.Endpoint || st.Keys != good.Keys || st.DBSize <= 0 || st.Quota != good.Quota {
		t.Fatalf("failed look %+v, want the last good look's values %+v", st, good)
	}
	hole.SetCut(false)
	waitFor(t, "a good look again", 10*time.Second, func() bool { st = m.Status(); return st.Error == "" && st.HasLeader })
	if !st.LastGood.IsZero() {
		t.Fatalf("good look %+v: last_good set", st)
	}
}

// Attack 13, J2: compaction goes on every interval while the leader of
// shard 0 changes more often than that: a new leader goes on from the last
// one's mark in etcd. Here a new coordinator takes over every half
// interval; before the fix each waited a whole interval, and nothing was
// ever compacted.
func TestCompactionSurvivesLeaderChurn(t *testing.T) {
	const interval = 2 * time.Second
	cli := setupWith(t, etcdembed.Options{CompactionRetention: -1}).client(t)
	first, err := cli.Put(context.Background(), "/pacer/churn/x", "1")
	if err != nil {
		t.Fatal(err)
	}
	compacted := func() bool {
		_, err := cli.Get(context.Background(), "/pacer/churn/x", clientv3.WithRev(first.Header.Revision))
		return errors.Is(err, rpctypes.ErrCompacted)
	}
	deadline := time.Now().Add(4 * interval)
	for n := 0; !compacted(); n++ {
		if time.Now().After(deadline) {
			t.Fatalf("revision %d not compacted after %d leaders, %s, at compaction_interval %s", first.Header.Revision, n, 4*interval, interval)
		}
		c := coord.New(coord.Options{Client: cli, Cluster: "churn", Node: fmt.Sprintf("n%d", n), LeaseTTL: 2 * time.Second, CompactionInterval: interval})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		waitFor(t, "leadership", 10*time.Second, func() bool { return c.Term() != nil })
		if _, err := cli.Put(context.Background(), "/pacer/churn/x", "2"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(interval / 2) // how long each leader lasts: the scenario, not synchronisation
		cancel()
		<-done
	}
}
