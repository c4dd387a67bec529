//go:build chaos

package main

// The slower fault-injection scenarios of docs/chaos-results.md; see chaos_test.go
// for the harness and the meaning of the result line. Run them with
//
//	go test -tags chaos -run Chaos -v ./cmd/pacer/
//
// CHAOS_RUNS sets how many faults each scenario injects (default 3);
// CHAOS_SOAK_SHARDS the soak's (scenario 22's) cluster.shards (default 16).

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/netfault"
	"github.com/pacerun/pacer/runner/shard"
)

func chaosRuns() int {
	if n, err := strconv.Atoi(os.Getenv("CHAOS_RUNS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// soakShards is scenario 22's cluster.shards: CHAOS_SOAK_SHARDS, to compare
// a sharded soak with one shard's in the same session; the default's
// otherwise.
func soakShards(t *testing.T) int {
	n, err := strconv.Atoi(cmp.Or(os.Getenv("CHAOS_SOAK_SHARDS"), strconv.Itoa(shard.Default)))
	if err != nil || n < 1 || n > shard.Max {
		t.Fatalf("CHAOS_SOAK_SHARDS=%q: want a whole number from 1 to %d", os.Getenv("CHAOS_SOAK_SHARDS"), shard.Max)
	}
	return n
}

// noLeaderChange fails if any of ps logged "leadership ended" or "became
// leader" after since.
func noLeaderChange(t *testing.T, ps []*proc, since time.Time) {
	t.Helper()
	for _, p := range ps {
		for _, msg := range []string{"leadership ended", "became leader"} {
			if l, ok := firstAfter(p.logs(), since, msgIs(msg)); ok {
				t.Errorf("%s: %q after the fault: %v", p.name, msg, l)
			}
		}
	}
}

// Scenario 3: the leader is paused (SIGSTOP, runner only, like a long GC
// pause) for less than TTL/2, then resumed. No failover, no flapping.
func TestChaosShortPause(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 3, 2, "100ms")
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	start := time.Now()
	for range chaosRuns() {
		fault := time.Now()
		leader.signal(syscall.SIGSTOP)
		time.Sleep(chaosTTL/2 - 200*time.Millisecond) // the pause itself
		leader.signal(syscall.SIGCONT)
		res.runs++
		// Two TTLs of observation: every run in it on the same leader.
		waitRunsAfter(leader, 3, fault.Add(2*chaosTTL), 15*time.Second)
	}
	noLeaderChange(t, ps, start)
	res.finish(t, ps, path, eps)
}

// Scenario 4: a standby is paused (SIGSTOP) while it waits in Campaign,
// for longer than the TTL, and the leader is killed meanwhile, so that the
// paused standby's Campaign would return on waking although its own key
// expired. A third replica leads; the woken standby never believes it
// leads while that one does.
func TestChaosStandbyPausedInCampaign(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 4, 3, "100ms")
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 1, time.Time{}, 15*time.Second)
	alive := ps
	for round := range chaosRuns() {
		if len(alive) < 3 { // each round needs two standbys: replace the killed leader
			name := fmt.Sprintf("r%d", len(ps)+1)
			httpAddr := freeAddr(t)
			p := startPacer(t, name, httpAddr, replicaConfig(t, name, httpAddr, eps, ledgerJob(path, "100ms")))
			p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
			ps, alive = append(ps, p), append(alive, p)
		}
		standbys := others(alive, leader)
		paused, other := standbys[round%2], standbys[1-round%2]
		fault := time.Now()
		paused.signal(syscall.SIGSTOP)
		leader.signal(syscall.SIGKILL)
		leader.wait(10 * time.Second)
		alive = others(alive, leader)
		other.waitLogs("the other standby to lead", chaosTTL+8*time.Second, func(ls []logLine) bool {
			_, ok := firstAfter(ls, fault, msgIs("became leader"))
			return ok
		})
		started := waitRunsAfter(other, 1, fault, 15*time.Second)
		res.F = append(res.F, logTime(started).Sub(fault))
		time.Sleep(time.Until(fault.Add(2 * chaosTTL))) // the pause itself
		paused.signal(syscall.SIGCONT)
		res.runs++
		waitRunsAfter(other, 3, time.Now(), 15*time.Second)
		if l, ok := firstAfter(paused.logs(), fault, msgIs("became leader")); ok {
			t.Errorf("paused standby %s believed it led while %s did: %v", paused.name, other.name, l)
		}
		if !leading(other.logs()) {
			t.Errorf("%s stopped leading", other.name)
		}
		leader = other
	}
	res.finish(t, ps, path, eps)
}

// Scenario 5: the leader is cut off from etcd (each replica reaches etcd
// through its own blackhole proxy; the leader's is cut). It fences itself
// before the standby becomes leader; after the link heals, its late
// writes change nothing.
func TestChaosLeaderCutOff(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	holes := map[string]*netfault.Proxy{}
	var ps []*proc
	for _, name := range []string{"r1", "r2"} {
		hole := netfault.New(t, eps[0])
		httpAddr := freeAddr(t)
		chaosBinaries(t)
		p := startPacer(t, name, httpAddr, replicaConfig(t, name, httpAddr, []string{hole.Addr()}, ledgerJob(path, "100ms")))
		holes[name] = hole
		ps = append(ps, p)
	}
	res := chaosResult{scenario: 5}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	for range chaosRuns() {
		old := leader
		fault := time.Now()
		holes[old.name].SetCut(true)
		var f time.Duration
		leader, f = failover(t, others(ps, old), fault, 3*time.Second)
		res.runs++
		res.F = append(res.F, f)
		// The old leader stops when its guard's deadline passes
		// ("self-fencing: ...") or when the etcd session's own keepalive
		// stream notices first ("leadership ended", lease lost): two
		// independent streams, either may see the stale lease first.
		fenced, ok := firstAfter(old.logs(), fault, func(l logLine) bool {
			msg := l.str("msg")
			return strings.HasPrefix(msg, "self-fencing:") ||
				(msg == "leadership ended" && l.str("reason") != "runner stopping")
		})
		became, _ := firstAfter(leader.logs(), fault, msgIs("became leader"))
		switch {
		case !ok:
			t.Errorf("%s did not stop leading after the cut", old.name)
		case !logTime(fenced).Before(logTime(became)):
			t.Errorf("%s fenced itself %s after %s became leader", old.name, logTime(fenced).Sub(logTime(became)), leader.name)
		default:
			t.Logf("cut → %s stopped leading %s; %s led %s later", old.name, logTime(fenced).Sub(fault).Round(time.Millisecond),
				leader.name, logTime(became).Sub(logTime(fenced)).Round(time.Millisecond))
		}
		healed := time.Now()
		holes[old.name].SetCut(false)
		waitRunsAfter(leader, 3, healed, 15*time.Second)
		if leading(old.logs()) {
			t.Errorf("%s leads again after the heal while %s leads", old.name, leader.name)
		}
	}
	res.finish(t, ps, path, eps)
}

// etcdLeader returns the index of the member that is the etcd leader.
func etcdLeader(t *testing.T, ms []*member) int {
	t.Helper()
	eps := endpoints(ms)
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i, ep := range eps {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := cli.Status(ctx, ep)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no etcd member says it leads")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Scenario 7: three etcd members; the etcd leader is killed (kill -9), then
// restarted on its data directory before the next round. Expected: the
// runner leader does not change. Measured with the suite's lease TTL of 2 s
// (where it does change: the etcd election outlasts the fencing deadline,
// reported as failovers=N and not asserted) and with a 6 s TTL (asserted).
func TestChaosEtcdLeaderKill(t *testing.T) {
	skipChaos(t)
	for _, ttl := range []time.Duration{chaosTTL, 6 * time.Second} {
		t.Run("ttl="+ttl.String(), func(t *testing.T) {
			failovers := etcdLeaderKill(t, ttl)
			if ttl > chaosTTL && failovers > 0 {
				t.Errorf("lease TTL %s: %d runner leadership changes after losing the etcd leader, want 0", ttl, failovers)
			}
		})
	}
}

func etcdLeaderKill(t *testing.T, ttl time.Duration) int {
	ms := startCluster(t, 3)
	eps := endpoints(ms)
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	ps := startReplicasTTL(t, 2, eps, ledgerJob(path, "100ms"), ttl)
	res := chaosResult{scenario: 7}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	start := time.Now()
	for range chaosRuns() {
		m := ms[etcdLeader(t, ms)]
		fault := time.Now()
		m.kill()
		res.runs++
		anyRunsAfter(t, ps, 3, fault.Add(2*ttl), 30*time.Second)
		m.launch()
		m.waitReady(30 * time.Second)
		etcdLeader(t, ms)
	}
	failovers, warn := 0, 0
	for _, p := range ps {
		for _, l := range p.logs() {
			if !logTime(l).After(start) {
				continue
			}
			switch l.str("msg") {
			case "became leader":
				failovers++
			case "lease keepalive timed out", "lease keepalive failed":
				warn++
			}
		}
	}
	res.Z = stopAll(t, ps)
	res.checkLedger(t, path, eps)
	t.Logf("lease TTL %s: runner leadership changes %d, keepalive warnings %d", ttl, failovers, warn)
	res.report(t)
	t.Logf("chaos: scenario 7 (ttl %s): failovers=%d", ttl, failovers)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
	return failovers
}

// Scenario 6: each runner talks only to its own etcd member (as with an
// etcd sidecar), and the runner leader's member is isolated from the other
// two: the peer proxies cut every raft link to it, while the runner still
// reaches the member. The member loses its raft leader, so the requests
// that require one (keepalives, campaigns, watches) fail fast rather than
// hang; the runner stops leading at its lease deadline, before the
// majority's lease expiry lets a replica on the other side lead, and does
// not lead again while isolated. After the heal its member rejoins and the
// runner stands by. Lease TTL 5 s, as recommended with a multi-member etcd.
func TestChaosMemberIsolated(t *testing.T) {
	skipChaos(t)
	const ttl = 5 * time.Second
	mesh := netfault.NewMesh(t)
	ms := startClusterVia(t, 3, func(m *member) string { return mesh.Add(m.name, m.peer, m.pid) })

	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	chaosBinaries(t)
	var ps []*proc
	memberOf := map[*proc]*member{}
	for i, m := range ms {
		name := fmt.Sprintf("r%d", i+1)
		httpAddr := freeAddr(t)
		p := startPacer(t, name, httpAddr, replicaConfigTTL(t, name, httpAddr, []string{m.client}, ledgerJob(path, "100ms"), ttl))
		memberOf[p] = m
		ps = append(ps, p)
	}
	res := chaosResult{scenario: 6}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	noLeader := 0
	for range chaosRuns() {
		old, m := leader, memberOf[leader]
		wasEtcdLeader := etcdLeader(t, ms) == slices.Index(ms, m)
		fault := time.Now()
		mesh.Isolate(m.name, true)
		var f time.Duration
		margin := 3 * time.Second
		if wasEtcdLeader {
			// The majority first elects an etcd leader (up to two
			// election timeouts of 1 s), which extends every lease by
			// one election timeout as it takes over.
			margin += 3 * time.Second
		}
		leader, f = failoverTTL(t, others(ps, old), fault, ttl, margin)
		res.runs++
		res.F = append(res.F, f)
		stopped, ok := firstAfter(old.logs(), fault, func(l logLine) bool {
			msg := l.str("msg")
			return strings.HasPrefix(msg, "self-fencing:") || msg == "leadership ended"
		})
		became, _ := firstAfter(leader.logs(), fault, msgIs("became leader"))
		refused := len(match(old.logs(), func(l logLine) bool {
			return logTime(l).After(fault) && !logTime(l).After(logTime(stopped)) &&
				strings.HasPrefix(l.str("msg"), "lease keepalive refused")
		}))
		noLeader += refused
		switch {
		case !ok:
			t.Errorf("%s did not stop leading after its member %s was isolated", old.name, m.name)
		case !logTime(stopped).Before(logTime(became)):
			t.Errorf("%s stopped leading %s after %s became leader", old.name, logTime(stopped).Sub(logTime(became)), leader.name)
		default:
			t.Logf("isolated %s (etcd leader: %v) → %s stopped leading after %s (%q, last acknowledged keepalive sent %v before); %s led %s later; %d keepalives refused for want of an etcd leader",
				m.name, wasEtcdLeader, old.name, logTime(stopped).Sub(fault).Round(time.Millisecond), stopped.str("msg"), stopped["last_ack_sent"],
				leader.name, logTime(became).Sub(logTime(stopped)).Round(time.Millisecond), refused)
		}
		// Isolated for two TTLs in all (the fault, not a wait): the
		// replica must not lead again meanwhile.
		time.Sleep(time.Until(fault.Add(2 * ttl)))
		if l, ok := firstAfter(old.logs(), logTime(stopped), msgIs("became leader")); ok {
			t.Errorf("%s led again while its member was isolated: %v", old.name, l)
		}
		healed := time.Now()
		mesh.Isolate(m.name, false)
		waitRunsAfter(leader, 3, healed, 15*time.Second)
		if leading(old.logs()) {
			t.Errorf("%s leads again after the heal while %s leads", old.name, leader.name)
		}
	}
	res.Z = stopAll(t, ps)
	res.checkLedger(t, path, endpoints(ms))
	res.report(t)
	if noLeader == 0 {
		t.Error("no keepalive of an isolated leader was refused with \"no leader\": require-leader did not make its member answer at once")
	}
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// outage stops the given members (kill -9 when kill, else SIGTERM), keeps
// them down for down, and starts them again on their data directories.
func outage(t *testing.T, ms []*member, kill bool, down time.Duration) (fault, restored time.Time) {
	t.Helper()
	fault = time.Now()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() {
			if kill {
				m.kill()
			} else {
				m.stop()
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Until(fault.Add(down))) // the outage itself
	for _, m := range ms {
		m.launch()
	}
	for _, m := range ms {
		m.waitReady(60 * time.Second)
	}
	return fault, time.Now()
}

// anyRunsAfter waits until the replicas in ps together have finished n
// runs that started after ts, and returns the earliest such "run started"
// time.
func anyRunsAfter(t *testing.T, ps []*proc, n int, ts time.Time, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var first time.Time
		finished := 0
		for _, p := range ps {
			started := map[string]bool{}
			for _, l := range p.logs() {
				if !logTime(l).After(ts) {
					continue
				}
				switch l.str("msg") {
				case "run started":
					started[l.str("run_id")] = true
					if first.IsZero() || logTime(l).Before(first) {
						first = logTime(l)
					}
				case "run finished":
					if started[l.str("run_id")] {
						finished++
					}
				}
			}
		}
		if finished >= n {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs finished within %s after %s", finished, n, timeout, ts.Format(time.RFC3339Nano))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Scenario 8: two of three etcd members are killed (quorum lost) for three
// TTLs, then restarted. No run starts while quorum is gone (beyond the
// fencing margin); runs resume; the misfire policy records the slots missed.
// F here is quorum restored (all members serving) → first run.
func TestChaosQuorumLoss(t *testing.T) {
	skipChaos(t)
	ms := startCluster(t, 3)
	eps := endpoints(ms)
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	ps := startReplicas(t, 2, eps, ledgerJob(path, "100ms"))
	res := chaosResult{scenario: 8}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	for i := range chaosRuns() {
		lead := etcdLeader(t, ms)
		// The etcd leader and one follower: the survivor is a minority.
		lost := []*member{ms[lead], ms[(lead+1+i%2)%3]}
		fault, restored := outage(t, lost, true, 3*chaosTTL)
		res.runs++
		for _, p := range ps {
			if l, ok := firstAfter(p.logs(), fault.Add(chaosTTL), msgIs("run started")); ok && logTime(l).Before(restored) {
				t.Errorf("%s started a run without quorum: %v", p.name, l)
			}
		}
		first := anyRunsAfter(t, ps, 1, restored, 30*time.Second)
		res.F = append(res.F, first.Sub(restored))
		t.Logf("quorum back %s after the fault; first run %s after that", restored.Sub(fault).Round(time.Millisecond), first.Sub(restored).Round(time.Millisecond))
		anyRunsAfter(t, ps, 2, restored, 30*time.Second)
	}
	res.finish(t, ps, path, eps)
}

// Scenario 9: the whole etcd cluster (three members) is stopped and started
// again on the same data directories. Runs continue afterwards; no slot is
// accepted twice. F here is etcd restored (all members serving) → first run.
func TestChaosEtcdClusterRestart(t *testing.T) {
	skipChaos(t)
	ms := startCluster(t, 3)
	eps := endpoints(ms)
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	ps := startReplicas(t, 2, eps, ledgerJob(path, "100ms"))
	res := chaosResult{scenario: 9}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	for i := range chaosRuns() {
		fault, restored := outage(t, ms, i%2 == 1, 2*time.Second) // SIGTERM, then kill -9, alternately
		res.runs++
		first := anyRunsAfter(t, ps, 1, restored, 30*time.Second)
		res.F = append(res.F, first.Sub(restored))
		t.Logf("etcd back %s after the stop; first run %s after that", restored.Sub(fault).Round(time.Millisecond), first.Sub(restored).Round(time.Millisecond))
		anyRunsAfter(t, ps, 2, restored, 30*time.Second)
	}
	res.finish(t, ps, path, eps)
}

// leadershipOverlaps returns, for replicas that were never killed or
// paused, every pair of terms (from the logs) that overlapped in time.
func leadershipOverlaps(ps []*proc) []string {
	type term struct {
		node       string
		from, till time.Time
	}
	var terms []term
	for _, p := range ps {
		var cur *term
		for _, l := range p.logs() {
			switch l.str("msg") {
			case "became leader":
				cur = &term{node: p.name, from: logTime(l), till: time.Now()}
			case "leadership ended", "resigned leadership":
				if cur != nil {
					cur.till = logTime(l)
					terms = append(terms, *cur)
					cur = nil
				}
			}
		}
		if cur != nil {
			terms = append(terms, *cur)
		}
	}
	var out []string
	for i, a := range terms {
		for _, b := range terms[i+1:] {
			if a.node != b.node && a.from.Before(b.till) && b.from.Before(a.till) {
				out = append(out, fmt.Sprintf("%s [%s, %s] and %s [%s, %s]", a.node, a.from.Format(time.StampMilli), a.till.Format(time.StampMilli),
					b.node, b.from.Format(time.StampMilli), b.till.Format(time.StampMilli)))
			}
		}
	}
	return out
}

// Scenario 10: latency on the runners' etcd links. Below TTL/3 round trip
// (100 ms each way on both links, RTT 200 ms; TTL/3 is 667 ms) nothing
// changes; above it (500 ms each way on the leader's link only, RTT 1 s) the
// leader steps down, and no two terms overlap in time. F is the latency
// increase → first run on the other replica.
func TestChaosEtcdLatency(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	holes := map[string]*netfault.Proxy{}
	var ps []*proc
	chaosBinaries(t)
	for _, name := range []string{"r1", "r2"} {
		hole := netfault.New(t, eps[0])
		httpAddr := freeAddr(t)
		ps = append(ps, startPacer(t, name, httpAddr, replicaConfig(t, name, httpAddr, []string{hole.Addr()}, ledgerJob(path, "100ms"))))
		holes[name] = hole
	}
	res := chaosResult{scenario: 10}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	for range chaosRuns() {
		// Below: both links slow, for four TTLs.
		below := time.Now()
		for _, h := range holes {
			h.SetDelay(100 * time.Millisecond)
		}
		waitRunsAfter(leader, 3, below.Add(2*chaosTTL), 20*time.Second)
		noLeaderChange(t, ps, below)
		for _, h := range holes {
			h.SetDelay(0)
		}
		// Above: the leader's link slower than the keepalive timeout.
		old := leader
		fault := time.Now()
		holes[old.name].SetDelay(500 * time.Millisecond)
		var f time.Duration
		leader, f = failover(t, others(ps, old), fault, 3*time.Second)
		res.runs++
		res.F = append(res.F, f)
		if l, ok := firstAfter(old.logs(), fault, msgIs("leadership ended")); ok {
			t.Logf("%s stepped down %s after the latency rose: %s", old.name, logTime(l).Sub(fault).Round(time.Millisecond), l.str("reason"))
		}
		holes[old.name].SetDelay(0)
		waitRunsAfter(leader, 2, time.Now(), 20*time.Second)
	}
	for _, o := range leadershipOverlaps(ps) {
		t.Errorf("terms overlap: %s", o)
	}
	res.finish(t, ps, path, eps)
}

// Scenario 12: the plugin process is killed (kill -9) while its task runs.
// The run fails as "crashed", the runner stays up and leading, a new plugin
// process serves the next runs, and no plugin process is left at the end.
func TestChaosPluginKill(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 12, 1, "2s")
	p := waitLeader(t, ps, 30*time.Second)
	for range chaosRuns() {
		mark := time.Now()
		started := p.waitLogs("a run to start", 15*time.Second, func(ls []logLine) bool {
			_, ok := firstAfter(ls, mark, msgIs("run started"))
			return ok
		})
		run, _ := firstAfter(started, mark, msgIs("run started"))
		pids := pluginPIDs(p.logs())
		pid := pids[len(pids)-1]
		fault := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		res.runs++
		lines := p.waitLogs("the run to fail", 15*time.Second, func(ls []logLine) bool {
			_, ok := firstAfter(ls, fault, func(l logLine) bool {
				return l.str("msg") == "run finished" && l.str("run_id") == run.str("run_id")
			})
			return ok
		})
		fin, _ := firstAfter(lines, fault, func(l logLine) bool {
			return l.str("msg") == "run finished" && l.str("run_id") == run.str("run_id")
		})
		if fin.str("outcome") != "crashed" {
			t.Errorf("run with its plugin killed finished as %q (%s), want crashed", fin.str("outcome"), fin.str("error"))
		}
		// The next run succeeds on a new plugin process.
		p.waitLogs("a successful run on a new plugin process", 20*time.Second, func(ls []logLine) bool {
			_, ok := firstAfter(ls, fault, func(l logLine) bool {
				return l.str("msg") == "run finished" && l.str("outcome") == "success"
			})
			return ok
		})
		np := pluginPIDs(p.logs())
		if np[len(np)-1] == pid {
			t.Errorf("no new plugin process after the kill")
		}
		if !leading(p.logs()) {
			t.Fatal("runner stopped leading after its plugin was killed")
		}
		res.F = append(res.F, logTime(fin).Sub(fault))
	}
	res.Z = stopAll(t, ps)
	res.checkLedger(t, path, eps)
	t.Logf("F for scenario 12 is the kill → the run reported crashed")
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// Scenario 1 at the production-like lease TTL of 3 s, for the failover
// figure: the leader of three replicas is killed (kill -9), a standby takes
// over, the killed replica is started again as a standby, CHAOS_RUNS+2
// times. The job's misfire policy is "once", so the new leader claims the
// slot missed during the election at once: F is the kill to the new
// leader's first run start, which follows its first claim by a few
// milliseconds. Also reported: kill → "became leader".
func TestChaosFailoverTTL3(t *testing.T) {
	skipChaos(t)
	const ttl = 3 * time.Second
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	jobs := fmt.Sprintf(`
  - id: tick
    plugin: ledger
    task: record
    schedule: "@every 1s"
    timeout: 30s
    overlap: forbid
    delivery: at-most-once
    misfire: {policy: once, grace: 10s}
    params: {path: %q, hold: "100ms"}
`, path)
	ps := startReplicasTTL(t, 3, eps, jobs, ttl)
	all := slices.Clone(ps)
	res := chaosResult{scenario: 1}
	var elected []time.Duration
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)
	for range chaosRuns() + 2 {
		old := leader
		fault := time.Now()
		old.signal(syscall.SIGKILL)
		old.wait(10 * time.Second)
		ps = others(ps, old)
		var f time.Duration
		leader, f = failoverTTL(t, ps, fault, ttl, 3*time.Second)
		became, _ := firstAfter(leader.logs(), fault, msgIs("became leader"))
		elected = append(elected, logTime(became).Sub(fault))
		res.runs++
		res.F = append(res.F, f)
		waitRunsAfter(leader, 2, fault, 15*time.Second)
		// The killed replica comes back as a standby.
		httpAddr := freeAddr(t)
		p := startPacer(t, old.name, httpAddr, replicaConfigTTL(t, old.name, httpAddr, eps, jobs, ttl))
		p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
		ps, all = append(ps, p), append(all, p)
	}
	res.Z = stopAll(t, all)
	res.checkLedger(t, path, eps)
	res.report(t)
	t.Logf("chaos: failover at lease TTL %s: kill -9 → became leader %s, → first run %s (median/worst)", ttl, fmtF(elected), fmtF(res.F))
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// Scenario 22: a soak, 100 jobs every second (two minutes here; ten in
// BenchmarkSoak, the numbers in docs/guarantees.md). With history.keep 10
// each job's history is full after ten seconds; the leader compacts etcd
// every 15 s. Sampled at 40, 80 and 120 s: keys stay within what the
// configuration allows (10 records + a tenth, and a claim key, per job;
// an election key and a hand-over mark per shard), and do not grow; the database's size in use stays within twice its
// smallest sample (it swings with the compactions) and the runner's RSS
// within 1.3 times plus 16 MiB; every slot ran once; no plugin is left.
func TestChaosSoak(t *testing.T) {
	skipChaos(t)
	const jobs = 100
	shards := soakShards(t)
	dir := t.TempDir()
	stamps := filepath.Join(dir, "stamps.jsonl")
	client, httpAddr := freeAddr(t), freeAddr(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `
node: {name: soak}
cluster:
  name: soak
  data_dir: %s
  shards: %d
  etcd: {embedded: {client_listen: %s, peer_listen: %s}, compaction_interval: 15s}
http: {listen: %s}
plugins: {dir: %s, max_concurrency: 1000}
history: {keep: 10}
jobs:
`, filepath.Join(dir, "data"), shards, client, freeAddr(t), httpAddr, filepath.Join(binDir, "plugins"))
	for i := range jobs {
		fmt.Fprintf(&cfg, "  - {id: soak-%04d, plugin: testplugin, task: stamp, schedule: \"@every 1s\", timeout: 10s, params: {path: %q}}\n", i, stamps)
	}
	p := startPacer(t, "soak", httpAddr, cfg.String())
	deadline := time.Now().Add(60 * time.Second)
	for st, err := os.Stat(stamps); err != nil || st.Size() == 0; st, err = os.Stat(stamps) {
		if time.Now().After(deadline) {
			t.Fatal("nothing ran within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + client}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	start := time.Now()
	var samples []soakSample
	for _, at := range []time.Duration{40 * time.Second, 80 * time.Second, 120 * time.Second} {
		sleepUntil(start.Add(at))
		s := sampleSoak(t, cli, p.cmd.Process.Pid)
		samples = append(samples, s)
		t.Logf("after %s: %d keys, database %.1f MiB (%.1f MiB in use), revision history %d, runner RSS %.1f MiB",
			at, s.keys, mibOf(s.dbSize), mibOf(s.inUse), s.history, s.rss)
	}
	// The configuration allows, per job, 10 records + a tenth and a claim
	// key; per shard (cluster.shards, the default 16), an election key of
	// each replica campaigning for it (one here) and a hand-over mark.
	// Besides, the cluster's own keys, each within its own bound
	// (clusterKeys).
	bound := int64(jobs*(10+1+1)+2*shards) + clusterKeys(t, cli, shards)
	minInUse := samples[0].inUse
	for _, s := range samples {
		minInUse = min(minInUse, s.inUse)
	}
	for i, s := range samples {
		if s.keys > bound {
			t.Errorf("sample %d: %d keys, above the %d the configuration allows", i+1, s.keys, bound)
		}
		if s.inUse > 2*minInUse+(1<<20) {
			t.Errorf("sample %d: %.1f MiB in use, more than twice the smallest sample (%.1f MiB)", i+1, mibOf(s.inUse), mibOf(minInUse))
		}
	}
	if last, mid := samples[2], samples[1]; last.keys > mid.keys+jobs || last.rss > 1.3*samples[0].rss+16 {
		t.Errorf("growing: keys %d → %d, RSS %.1f → %.1f MiB", mid.keys, last.keys, samples[0].rss, last.rss)
	}
	t.Logf("chaos: scenario 22 with cluster.shards %d", shards)
	res := chaosResult{scenario: 22, runs: 1}
	res.D, res.M = soakExactlyOnce(t, stamps, jobs, start, start.Add(118*time.Second), nil)
	if res.M > 0 { // say why, from the runner's log
		why := map[string]int{}
		for _, l := range p.logs() {
			switch msg := l.str("msg"); msg {
			case "slot skipped", "slots missed while the scheduler could not run", "leadership ended", "wall clock stepped back; every job's next slot computed again from the new time":
				why[msg+" "+l.str("reason")]++
			}
		}
		t.Logf("missed slots: the runner logged %v", why)
	}
	res.Z = stopAll(t, []*proc{p})
	res.report(t)
	if res.D != 0 || res.M != 0 || res.Z != 0 {
		t.Fatalf("D=%d M=%d Z=%d, want 0", res.D, res.M, res.Z)
	}
}

// clusterKeys counts the keys that describe the cluster rather than its
// jobs, and fails the test if a kind is above its bound: a member record
// per replica (one here), a stored job set per fingerprint that a member
// or a kept epoch names (one here: a header and one 512 KiB chunk of its
// manifest, far more than 100 jobs need), and at most keepEpochs (256)
// epochs per shard.
func clusterKeys(t *testing.T, cli *clientv3.Client, shards int) int64 {
	t.Helper()
	var n int64
	for _, kind := range []struct {
		prefix string
		max    int64
	}{{"members/", 1}, {"jobsets/", 2}, {"epochs/", 256 * int64(shards)}} {
		resp, err := cli.Get(context.Background(), "/pacer/soak/"+kind.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count > kind.max {
			t.Errorf("%d keys under %s, above the %d the cluster's rules allow", resp.Count, kind.prefix, kind.max)
		}
		t.Logf("%d keys under %s (at most %d)", resp.Count, kind.prefix, kind.max)
		n += resp.Count
	}
	return n
}
