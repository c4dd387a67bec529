package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/runner/coord"
)

// stampJob runs testplugin's stamp task every second, appending to path.
func stampJob(id, path string) string {
	return fmt.Sprintf(`
  - {id: %s, plugin: testplugin, task: stamp, schedule: "@every 1s", timeout: 10s, params: {path: %q}}`, id, path)
}

// embeddedConfig is a runner's config with its own embedded etcd.
func embeddedConfig(t *testing.T, name, dataDir, embedded, httpAddr, jobs string) string {
	return runnerConfig{node: name, cluster: "e2e", dataDir: dataDir, etcd: embedded}.head(t, httpAddr) + "jobs:" + jobs
}

// Two runners with embedded etcd side by side on one host (each its own
// data_dir and cluster.embedded addresses) both run their jobs. A third on
// the first one's data_dir fails at once, naming the first's pid; one
// whose etcd port is taken fails naming the address and its config key,
// whichever key set it.
func TestE2EEmbeddedEtcdSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	clientA, peerA := freeAddr(t), freeAddr(t)
	stamps := filepath.Join(t.TempDir(), "stamps")
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startPacer(t, "a", addrA, embeddedConfig(t, "a", dirA,
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", clientA, peerA), addrA, stampJob("ja", stamps+"-a")))
	b := startPacer(t, "b", addrB, embeddedConfig(t, "b", dirB,
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", freeAddr(t), freeAddr(t)), addrB, stampJob("jb", stamps+"-b")))
	for _, p := range []*proc{a, b} {
		p.waitLogs("two runs", 30*time.Second, func(ls []logLine) bool {
			return len(match(ls, msgIs("run finished"))) >= 2
		})
	}

	// The same data_dir: refused within 2 s, naming a's pid.
	addrC := freeAddr(t)
	start := time.Now()
	c := startPacer(t, "c", addrC, embeddedConfig(t, "c", dirA,
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", freeAddr(t), freeAddr(t)), addrC, stampJob("jc", stamps+"-c")))
	if code := c.wait(10 * time.Second); code == 0 {
		t.Fatal("a second runner on the same data_dir started")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the second runner on the same data_dir took %s to fail, want under 2s", took.Round(time.Millisecond))
	}
	last := rawWithPrefix(c, "pacer: ")
	if want := "data dir in use by pid " + strconv.Itoa(a.cmd.Process.Pid); !strings.Contains(last, want) || strings.Contains(last, "fxmodule") {
		t.Fatalf("second runner's error %q does not say %q, plainly:\n%s", last, want, c.rawLogs())
	}

	// A taken port, under either key.
	for _, tc := range []struct{ embedded, key string }{
		{fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", clientA, freeAddr(t)), "cluster.embedded.client_url"},
		{fmt.Sprintf("  etcd: {embedded: {client_listen: '%s', peer_listen: '%s'}}", freeAddr(t), peerA), "cluster.etcd.embedded.peer_listen"},
	} {
		addr := freeAddr(t)
		d := startPacer(t, "d", addr, embeddedConfig(t, "d", t.TempDir(), tc.embedded, addr, stampJob("jd", stamps+"-d")))
		if code := d.wait(30 * time.Second); code == 0 {
			t.Fatal("a runner whose etcd port is taken started")
		}
		if !strings.Contains(d.rawLogs(), tc.key+": ") || !strings.Contains(d.rawLogs(), "already in use") {
			t.Fatalf("error for a taken port does not name %s:\n%s", tc.key, d.rawLogs())
		}
	}

	// Each runner reports its own etcd: metrics and pacer status.
	// The monitor looks every 15 s; its first look may precede the first claim.
	deadline := time.Now().Add(40 * time.Second)
	for a.metric("pacer_etcd_keys") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("pacer_etcd_keys = %v, want the leader key and a claim at least", a.metric("pacer_etcd_keys"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.waitMetric("pacer_etcd_has_leader", 1, 30*time.Second)
	out, code := a.cli(nil, "status")
	if code != 0 || !strings.Contains(out, "etcd:     http://"+clientA) || !strings.Contains(out, "has a leader") {
		t.Fatalf("pacer status (%d):\n%s", code, out)
	}
}

// rawWithPrefix returns p's last stderr line that starts with prefix.
func rawWithPrefix(p *proc, prefix string) string {
	var out string
	for _, l := range strings.Split(p.rawLogs(), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = l
		}
	}
	return out
}

// readyz returns p's /readyz status code and body.
func (p *proc) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(p.httpURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// An embedded etcd that reaches its space quota (history.keep large, big
// outputs): the runner says so in one line with the fix, /readyz fails
// with it, and pacer status warns.
func TestE2ESpaceQuotaExceeded(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	var jobs strings.Builder
	for i := range 20 {
		fmt.Fprintf(&jobs, `
  - {id: big-%d, plugin: testplugin, task: big, schedule: "@every 1s", timeout: 10s, params: {count: 60000}}`, i)
	}
	addr := freeAddr(t)
	cfg := embeddedConfig(t, "q", t.TempDir(),
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s', quota_bytes: 16777216}", freeAddr(t), freeAddr(t)),
		addr, jobs.String()) + "\nhistory: {keep: 10000}\n"
	p := startPacer(t, "q", addr, cfg)
	lines := p.waitLogs("the quota message", 120*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return strings.Contains(l.str("msg"), "reached its space quota (NOSPACE alarm)") })) > 0
	})
	msg := match(lines, func(l logLine) bool {
		return strings.Contains(l.str("msg"), "space quota (NOSPACE alarm): every write")
	})
	if len(msg) == 0 || !strings.Contains(msg[0].str("msg"), "defrag") || !strings.Contains(msg[0].str("msg"), "quota_bytes") {
		t.Fatalf("no line with the fix: %v", msg)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := p.readyz(t)
		if code == http.StatusServiceUnavailable && strings.Contains(body, "space quota") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s, want 503 naming the space quota", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, _ := p.cli(nil, "status")
		if strings.Contains(out, "WARNING:") && strings.Contains(out, "NOSPACE") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pacer status does not warn:\n%s", out)
		}
	}
}

// An embedded etcd whose disk fills up: while free space is below what
// etcd's next write-ahead log file needs, /readyz fails saying so; when a
// write fails for lack of space, the runner says in one line what happened
// and what to do, and exits (etcd stops the process). The data directory
// is on a small tmpfs, so the test needs root.
func TestE2EEmbeddedEtcdDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the data directory (run as root to include it)")
	}
	fs := filepath.Join(t.TempDir(), "fs")
	must(os.MkdirAll(fs, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): a container without CAP_SYS_ADMIN?", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", fs).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", fs, err, out)
		}
	})
	var jobs strings.Builder
	for i := range 10 {
		fmt.Fprintf(&jobs, `
  - {id: big-%d, plugin: testplugin, task: big, schedule: "@every 1s", timeout: 10s, params: {count: 60000}}`, i)
	}
	addr := freeAddr(t)
	cfg := embeddedConfig(t, "full", filepath.Join(fs, "data"),
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", freeAddr(t), freeAddr(t)),
		addr, jobs.String()) + "\nhistory: {keep: 10000}\n"
	p := startPacer(t, "full", addr, cfg)
	p.waitLogs("a run", 60*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("run finished"))) > 0 })

	// etcd preallocated its 64 MiB write-ahead log file and the next one:
	// less than another one is left.
	if code, body := p.readyz(t); code != http.StatusServiceUnavailable || !strings.Contains(body, "disk is almost full") {
		t.Fatalf("/readyz = %d %s, want 503 saying the disk is almost full", code, body)
	}
	// Fill the rest.
	f, err := os.Create(filepath.Join(fs, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the runner still runs a minute after its disk filled up")
	}
	line := ""
	for _, l := range p.logs() {
		if strings.HasPrefix(l.str("msg"), "embedded etcd's disk is full") {
			line = l.str("msg")
		}
	}
	if !strings.Contains(line, "no space left on device in "+filepath.Join(fs, "data", "etcd")) || !strings.Contains(line, "free space") {
		t.Fatalf("no clear line about the full disk; the runner's log:\n%s", p.rawLogs())
	}
	t.Logf("exit %v after: %s", p.exitErr, line)
}

// The leader compacts an external etcd that never compacts itself
// (cluster.etcd.compaction_interval; issue 18): with 30 jobs every second
// against an etcd started with --auto-compaction-retention=0, the revision
// history stays within about two intervals of writes, and the database's
// size in use stops growing once every job's history is full. The ten
// minute version is BenchmarkSoak/external (numbers in
// docs/guarantees.md). Without the leader's compaction the history here
// grows by the whole run's writes, and the size in use with it.
func TestE2EExternalEtcdCompactedByLeader(t *testing.T) {
	const (
		jobs     = 30
		interval = 3 * time.Second
	)
	dir := t.TempDir()
	client, httpAddr := freeAddr(t), freeAddr(t)
	startUncompactedEtcd(t, filepath.Join(dir, "etcd"), client, freeAddr(t))
	stamps := filepath.Join(dir, "stamps.jsonl")
	var js strings.Builder
	for i := range jobs {
		js.WriteString(stampJob(fmt.Sprintf("soak-%04d", i), stamps))
	}
	p := startPacer(t, "compacted", httpAddr, fmt.Sprintf(`
node: {name: compacted}
cluster:
  name: soak
  lease_ttl: 2s
  etcd: {endpoints: ['http://%s'], compaction_interval: %s}
http: {listen: %s}
plugins: {dir: %s}
history: {keep: 5}
jobs:%s`, client, interval, httpAddr, filepath.Join(binDir, "plugins"), js.String()))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + client}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for st, err := os.Stat(stamps); err != nil || st.Size() == 0; st, err = os.Stat(stamps) {
		if time.Now().After(deadline) {
			t.Fatal("nothing ran within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Each job's history (5 records) is full after about 6 s; then 15 s
	// each for the two halves compared, sampled every second.
	sleepUntil(time.Now().Add(8 * time.Second))
	start := time.Now()
	first := sampleSoak(t, cli, p.cmd.Process.Pid)
	var peak [2]soakSample
	var last soakSample
	for i := 1; i <= 30; i++ {
		sleepUntil(start.Add(time.Duration(i) * time.Second))
		last = sampleSoak(t, cli, p.cmd.Process.Pid)
		h := &peak[(i-1)/15]
		h.history, h.inUse, h.keys = max(h.history, last.history), max(h.inUse, last.inUse), max(h.keys, last.keys)
	}
	writes := float64(last.rev-first.rev) / time.Since(start).Seconds() // revisions a second
	t.Logf("%.0f revisions/s; peaks of the first and second 15 s: revision history %d / %d, in use %.2f / %.2f MiB, keys %d / %d",
		writes, peak[0].history, peak[1].history, mibOf(peak[0].inUse), mibOf(peak[1].inUse), peak[0].keys, peak[1].keys)
	// Compaction keeps the revisions of the last interval, and runs once an
	// interval: at most two intervals' worth (and a few seconds for a
	// compaction the leader is late with, under load).
	bound := int64(writes * (2*interval.Seconds() + 3))
	if peak[1].history > bound {
		t.Errorf("revision history %d in the second half, over the %d of about two compaction intervals (%.0f revisions/s)",
			peak[1].history, bound, writes)
	}
	if peak[1].inUse > peak[0].inUse+peak[0].inUse/4+(256<<10) {
		t.Errorf("size in use grew: peak %.2f MiB in the second half against %.2f MiB in the first", mibOf(peak[1].inUse), mibOf(peak[0].inUse))
	}
	if z := stopAll(t, []*proc{p}); z != 0 {
		t.Errorf("%d plugin processes left", z)
	}
}

// A runner with an embedded etcd killed with SIGKILL and started again on
// its data_dir leads within cluster.lease_ttl of its etcd being ready
// (docs/operations.md). Its etcd, restarted, would give the dead runner's
// leases their whole TTL again plus an election timeout, and its member
// record under the same node name would hold the new runner back for that
// long and then a job_set_settle more: the new runner revokes the leases
// its predecessor recorded in the data_dir instead, and its first decision
// on the job set is immediate.
func TestE2ERestartAfterKillLeadsWithinLeaseTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	const ttl = 10 * time.Second // as the default; a restart that waited for the leases would take longer
	dir, stamps, addr := t.TempDir(), filepath.Join(t.TempDir(), "stamps"), freeAddr(t)
	cfg := strings.Replace(embeddedConfig(t, "k", dir,
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", freeAddr(t), freeAddr(t)), addr, stampJob("jk", stamps)),
		"lease_ttl: 2s", "lease_ttl: 10s", 1)
	a := startPacer(t, "k", addr, cfg)
	a.waitLogs("a run by the first runner", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("run finished"))) >= 1
	})
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)

	b := startCmd(t, "k-again", addr, a.configPath, exec.Command(filepath.Join(binDir, "pacer"), "run", "--config", a.configPath))
	ls := b.waitLogs("the restarted runner to lead", 3*ttl, func(ls []logLine) bool {
		return len(match(ls, msgIs("became leader"))) > 0
	})
	at := func(msg string) time.Time {
		ts, err := time.Parse(time.RFC3339Nano, match(ls, msgIs(msg))[0].str("time"))
		if err != nil {
			t.Fatalf("%q: %v", msg, err)
		}
		return ts
	}
	took := at("became leader").Sub(at("embedded etcd ready"))
	t.Logf("the restarted runner led %s after its etcd was ready", took.Round(time.Millisecond))
	if took > ttl {
		t.Errorf("the restarted runner led %s after its etcd was ready, more than cluster.lease_ttl (%s)", took.Round(time.Millisecond), ttl)
	}
	// Its one lease: the session's, which held its member record and its
	// election keys (one per shard).
	if l := match(ls, msgIs("revoked the leases of the previous runner on this data directory (it did not stop cleanly)")); len(l) != 1 || l[0]["leases"].(float64) < 1 {
		t.Errorf("want one line saying the previous runner's lease (member record, election keys) was revoked, got %v", l)
	}
	if l := match(ls, func(l logLine) bool {
		return strings.HasPrefix(l.str("msg"), "another replica runs under this node name")
	}); len(l) > 0 {
		t.Errorf("the restarted runner took its own previous record for another replica's: %v", l[0])
	}
	b.waitLogs("a run by the restarted runner", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("run finished"))) >= 1
	})
}

// etcd unreachable is an outage the runner waits out, not an error it
// exits on (a restart would not bring etcd back): started with its etcd
// down, pacer run stays up, /healthz answers 200 and /readyz 503 saying
// etcd is unreachable, nothing runs, and it says it retries; once etcd
// answers at that address it leads, runs its jobs and is ready. The probes
// answer the same on http.probe_listen.
func TestE2EEtcdUnreachableAtStartStaysUpAndWaits(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	etcdAddr, addr, probeAddr, stamps := freeAddr(t), freeAddr(t), freeAddr(t), filepath.Join(t.TempDir(), "stamps")
	p := startPacer(t, "down", addr, fmt.Sprintf(`
node: {name: down}
cluster:
  name: e2e
  data_dir: %s
  lease_ttl: 2s
  etcd: {endpoints: ['http://%s'], dial_timeout: 1s, request_timeout: 1s}
http: {listen: %s, probe_listen: %s}
plugins: {dir: %s}
jobs:%s`, t.TempDir(), etcdAddr, addr, probeAddr, filepath.Join(binDir, "plugins"), stampJob("js", stamps)))
	probe := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + probeAddr + path)
		if err != nil {
			t.Fatalf("probe listener %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	p.waitLogs("a retry while etcd is down", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("level") == "WARN" && strings.Contains(l.str("msg"), "trying again")
		})) > 0
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := p.readyz(t)
		if code == http.StatusServiceUnavailable && strings.Contains(body, "etcd unreachable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s with etcd down, want 503 etcd unreachable", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp, err := http.Get(p.httpURL + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz with etcd down: %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, body := probe("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "etcd unreachable") {
		t.Fatalf("probe listener /readyz = %d %s with etcd down, want 503 etcd unreachable", code, body)
	}
	if code, body := probe("/healthz"); code != http.StatusOK {
		t.Fatalf("probe listener /healthz = %d %s with etcd down, want 200", code, body)
	}
	if code, _ := probe("/api/v1/jobs"); code != http.StatusNotFound {
		t.Fatalf("probe listener /api/v1/jobs = %d, want 404: it serves the probes alone", code)
	}
	if n := len(match(p.logs(), msgIs("run started"))); n != 0 {
		t.Fatalf("%d runs started with etcd down", n)
	}

	// The exception: with a user, the etcd client authenticates first,
	// within dial_timeout, and the start fails naming that.
	authAddr := freeAddr(t)
	auth := startPacer(t, "auth", authAddr, fmt.Sprintf(`
node: {name: auth}
cluster:
  name: e2e
  data_dir: %s
  etcd: {endpoints: ['http://%s'], dial_timeout: 1s, username: pacer, password_env: E2E_ETCD_PW}
http: {listen: %s}
plugins: {dir: %s}
jobs:%s`, t.TempDir(), etcdAddr, authAddr, filepath.Join(binDir, "plugins"), stampJob("ja", stamps+"-a")), "E2E_ETCD_PW=x")
	if code := auth.wait(60 * time.Second); code != 1 {
		t.Fatalf("exit code %d with a user and etcd down, want 1", code)
	}
	if last := rawWithPrefix(auth, "pacer: "); !strings.Contains(last, "cannot authenticate as \"pacer\"") || !strings.Contains(last, "cluster.etcd.dial_timeout (1s)") {
		t.Fatalf("last line %q does not say the user could not authenticate within cluster.etcd.dial_timeout", last)
	}

	etcd, err := etcdembed.Start(context.Background(), etcdembed.Options{
		Name: "late", Dir: t.TempDir(), ClientListen: etcdAddr, PeerListen: freeAddr(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	p.waitLogs("a run once etcd is up", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("became leader"))) > 0 && len(match(ls, msgIs("run finished"))) > 0
	})
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, body := p.readyz(t)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s with etcd up, want 200", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := probe("/readyz"); code != http.StatusOK {
		t.Fatalf("probe listener /readyz = %d %s with etcd up, want 200", code, body)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// A runner on its embedded etcd calls it in the process: its claims, records
// and reads reach etcd without passing its gRPC server, whose requests
// etcd's own /metrics counts (grpc_server_handled_total: none of the
// runner's), yet the member still serves its client URL (that /metrics, the
// CLI, other replicas). The monitor still reads the member's status: the
// pacer_etcd_db_* gauges, /readyz, and pacer status naming the client URL.
// (TestE2ERestartAfterKillLeadsWithinLeaseTTL: its lease journal still
// revokes a killed predecessor's leases; TestE2ESpaceQuotaExceeded: it still
// compacts and defragments its member.)
func TestE2EEmbeddedRunnerCallsItsEtcdInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	client, addr, stamps := freeAddr(t), freeAddr(t), filepath.Join(t.TempDir(), "stamps")
	p := startPacer(t, "ip", addr, embeddedConfig(t, "ip", t.TempDir(),
		fmt.Sprintf("  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}", client, freeAddr(t)), addr, stampJob("jip", stamps)))
	p.waitLogs("three runs", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("run finished"))) >= 3
	})
	resp, err := http.Get("http://" + client + "/metrics")
	if err != nil {
		t.Fatalf("etcd's metrics: %v", err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("etcd's metrics: %v", err)
	}
	if !strings.Contains(string(metrics), "etcd_server_proposals_committed_total") {
		t.Fatalf("etcd's /metrics has no etcd_server_proposals_committed_total:\n%.2000s", metrics)
	}
	for line := range strings.Lines(string(metrics)) {
		if strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_service="etcdserverpb.`) &&
			!strings.HasSuffix(strings.TrimSpace(line), " 0") {
			t.Errorf("etcd's gRPC server handled requests, none of which are pacer status's or the metrics': %s", strings.TrimSpace(line))
		}
	}

	// The monitor's first look is at its start; the gauges follow it.
	for deadline := time.Now().Add(30 * time.Second); p.metric("pacer_etcd_db_size_bytes") <= 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("pacer_etcd_db_size_bytes not set after 30s: the monitor reads no status of the embedded etcd")
		}
	}
	if q := p.metric("pacer_etcd_db_quota_bytes"); q != 2<<30 {
		t.Errorf("pacer_etcd_db_quota_bytes = %v, want the embedded default 2 GiB", q)
	}
	if v := p.metric("pacer_etcd_has_leader"); v != 1 {
		t.Errorf("pacer_etcd_has_leader = %v, want 1", v)
	}
	if code, body := p.readyz(t); code != http.StatusOK {
		t.Errorf("/readyz = %d %s, want 200", code, body)
	}
	if out, code := p.cli(nil, "status"); code != 0 || !strings.Contains(out, "etcd:     http://"+client+", ") || !strings.Contains(out, "has a leader") {
		t.Errorf("pacer status (exit %d) does not name the embedded etcd's client URL with a leader:\n%s", code, out)
	}
}

// A fresh replica's first look at etcd, as pacer status and the
// pacer_etcd_* gauges show it, counts the replica's own keys (its job set
// and member record): until that look, status says "not looked at yet"
// and the gauges have no series, never 0 keys of an etcd that seems empty.
// Before attack 10's F12 fix the first look was taken as the runner
// started, and shown for 15 s: "0 keys, 0.0 MiB", and pacer_etcd_keys 0.
func TestE2EFirstEtcdLookCountsTheReplicasOwnKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	addr := freeAddr(t)
	p := startPacer(t, "f", addr, runnerConfig{node: "f", cluster: "e2e"}.head(t, addr)+"jobs:"+stampJob("j", filepath.Join(t.TempDir(), "stamps")))
	start := time.Now()
	keysOf := regexp.MustCompile(`, (\d+) keys, `)
	scrapes, notYet := 0, 0
	for deadline := start.Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no look at etcd shown within 60 s (%d scrapes, %d statuses said not looked at yet)", scrapes, notYet)
		}
		if m, ok := scrapeMetrics(p.httpURL); ok {
			scrapes++
			for _, name := range []string{"pacer_etcd_keys", "pacer_etcd_db_size_bytes", "pacer_etcd_db_quota_bytes"} {
				if v, has := m[name]; has && v <= 0 {
					t.Fatalf("%s = %v %s after the start: a look that counted nothing", name, v, time.Since(start).Round(time.Millisecond))
				}
			}
		}
		out, code := p.cli(nil, "status")
		if code != 0 {
			continue // not serving yet
		}
		if strings.Contains(out, "etcd:     - (not looked at yet)") {
			notYet++
			continue
		}
		k := keysOf.FindStringSubmatch(out)
		if k == nil {
			t.Fatalf("pacer status has no key count:\n%s", out)
		}
		if n, _ := strconv.Atoi(k[1]); n < 2 {
			t.Fatalf("pacer status shows %d keys %s after the start, want the replica's job set and member record at least:\n%s",
				n, time.Since(start).Round(time.Millisecond), out)
		}
		t.Logf("first look shown %s after the start (%d scrapes and %d statuses before it)", time.Since(start).Round(time.Millisecond), scrapes, notYet)
		break
	}
	m, _ := scrapeMetrics(p.httpURL)
	if m["pacer_etcd_keys"] < 2 || m["pacer_etcd_has_leader"] != 1 {
		t.Fatalf("gauges after the first look: pacer_etcd_keys %v, pacer_etcd_has_leader %v", m["pacer_etcd_keys"], m["pacer_etcd_has_leader"])
	}
}

// scrapeMetrics returns the samples of url's /metrics without labels, by
// name; false if it does not answer.
func scrapeMetrics(url string) (map[string]float64, bool) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out, true
}

// startEtcd34 starts /usr/bin/etcd (Debian's etcd 3.4, whose Status
// response does not report the space quota) as one member with the quota
// given, and returns its client address.
func startEtcd34(t *testing.T, quota int64) string {
	t.Helper()
	const bin = "/usr/bin/etcd"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("needs an etcd older than 3.6 at %s (Debian: apt-get install etcd-server): %v", bin, err)
	}
	client, peer := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--name", "old", "--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "old=http://"+peer, "--quota-backend-bytes", strconv.FormatInt(quota, 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + client + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return client
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("etcd 3.4 does not answer /health after 30s")
		}
	}
}

// With etcd 3.4 (no quota in its Status response) the runner reads the
// member's quota from its /metrics: a member started with a 16 MiB quota
// is reported with 16 MiB, in the gauge, the API and pacer status. Before
// attack 27's R2 fix the runner assumed etcd's default, 2 GiB, so
// PacerEtcdDatabaseNearQuota could never fire before NOSPACE.
func TestE2EEtcd34QuotaReadFromItsMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer and etcd processes (skipped with -short)")
	}
	const quota = 16 << 20
	client := startEtcd34(t, quota)
	addr := freeAddr(t)
	p := startPacer(t, "q", addr, fmt.Sprintf(`
node: {name: q}
cluster:
  name: e2e
  lease_ttl: 2s
  etcd: {endpoints: ['http://%s']}
http: {listen: %s}
plugins: {dir: %s}
jobs:%s`, client, addr, filepath.Join(binDir, "plugins"), stampJob("j", filepath.Join(t.TempDir(), "stamps"))))
	// The API listens after the scheduler has started.
	p.waitLogs("the API to listen", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("http listening"))) > 0 })
	for deadline := time.Now().Add(30 * time.Second); p.metric("pacer_etcd_db_size_bytes") <= 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("pacer_etcd_db_size_bytes not set after 30s: the monitor reads no status of etcd 3.4")
		}
	}
	if q := p.metric("pacer_etcd_db_quota_bytes"); q != quota {
		t.Errorf("pacer_etcd_db_quota_bytes = %v, want etcd's --quota-backend-bytes %d", q, quota)
	}
	if out, code := p.cli(nil, "status"); code != 0 || !strings.Contains(out, "of 16.0 MiB quota") {
		t.Errorf("pacer status (exit %d) does not show the 16 MiB quota:\n%s", code, out)
	}
	resp, err := http.Get(p.httpURL + "/api/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Etcd coord.EtcdStatus `json:"etcd"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Etcd.Quota != quota || body.Etcd.QuotaError != "" {
		t.Errorf("/api/v1/cluster's etcd = %+v (%v), want db_quota_bytes %d", body.Etcd, err, quota)
	}
}
