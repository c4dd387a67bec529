//go:build chaos

package main

// Manual trigger scenarios of docs/chaos-results.md: 19 (bursts of triggers
// on a busy job, then restarts) and 24 (triggers retried after an etcd
// stall). Each trigger carries its own correlation ID, which the ledger
// records, so D here also counts triggers that ran more than once.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// manualJob is a jobs: entry for a job that runs only when triggered (its
// schedule is once a year), recorded by the ledger at path.
func manualJob(id, path, hold, overlap string) string {
	return fmt.Sprintf(`
  - id: %s
    plugin: ledger
    task: record
    schedule: "0 0 0 1 1 *"
    timeout: 30s
    overlap: %s
    max_concurrency: 100
    delivery: at-most-once
    params: {path: %q, hold: %q}
`, id, overlap, path, hold)
}

// triggerAnswer is what POST /api/v1/jobs/{id}/trigger answered.
type triggerAnswer struct {
	status int
	State  string `json:"state"`
	ID     string `json:"trigger_id"`
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

// postTrigger asks the runner at base to trigger job, with a correlation
// ID and, if not empty, an Idempotency-Key.
func postTrigger(base, job, corr, key string, timeout time.Duration) (triggerAnswer, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/jobs/"+job+"/trigger", nil)
	if err != nil {
		return triggerAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json") // as the CLI sends (issue 11: 415 without it)
	req.Header.Set("X-Correlation-ID", corr)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return triggerAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return triggerAnswer{}, err
	}
	var a triggerAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return triggerAnswer{}, fmt.Errorf("answer %d not JSON: %s", resp.StatusCode, b)
	}
	a.status = resp.StatusCode
	return a, nil
}

// jobRecord is the part of a stored run or skip record these tests read.
type jobRecord struct {
	CorrelationID string `json:"correlation_id"`
	TriggerID     string `json:"trigger_id"`
	State         string `json:"state"`
	Reason        string `json:"reason"`
	Manual        bool   `json:"manual"`
	Error         string `json:"error"`
}

// recordsByCorrelation reads a job's records from etcd, by correlation ID.
func recordsByCorrelation(t *testing.T, eps []string, job string) map[string][]jobRecord {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pacer/chaos/runs/"+job+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]jobRecord{}
	for _, kv := range resp.Kvs {
		var r jobRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			t.Fatal(err)
		}
		out[r.CorrelationID] = append(out[r.CorrelationID], r)
	}
	return out
}

// keptTriggers counts the trigger requests still in etcd.
func keptTriggers(t *testing.T, eps []string) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pacer/chaos/triggers/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// ledgerRuns counts accepted ledger lines per correlation ID; a missing
// file is no runs.
func ledgerRuns(t *testing.T, path string) map[string]int {
	t.Helper()
	out := map[string]int{}
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return out
	}
	for _, e := range readLedger(t, path) {
		if e.Accepted {
			out[e.CorrelationID]++
		}
	}
	return out
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restart starts a stopped or killed replica again on its config file.
func restart(t *testing.T, p *proc) *proc {
	t.Helper()
	cfg, err := os.ReadFile(p.configPath)
	if err != nil {
		t.Fatal(err)
	}
	np := startPacer(t, p.name, strings.TrimPrefix(p.httpURL, "http://"), string(cfg))
	np.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
	return np
}

// Scenario 19: bursts of manual triggers on a busy overlap: forbid job, sent
// to both replicas, then a restart: first a graceful one of both replicas
// while the triggered run holds, then kill -9 of the leader while it holds.
// Every trigger is decided once, with a record that carries its caller's
// correlation ID (one run, the others skipped as overlap; the run of the
// killed leader recorded as lost), no request stays in etcd, and nothing
// runs again after the restarts.
func TestChaosTriggerBurst(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	dir := t.TempDir()
	path, manual := filepath.Join(dir, "ledger.jsonl"), filepath.Join(dir, "manual.jsonl")
	ps := startReplicas(t, 2, eps, ledgerJob(path, "100ms")+manualJob("busy", manual, "3s", "forbid"))
	all := slices.Clone(ps) // every process started, for Z
	res := &chaosResult{scenario: 19}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)

	const burst = 20
	expect := map[string]string{} // correlation ID -> the record state it must have
	fire := func(round string) string {
		t.Helper()
		first := round + "-0"
		if a, err := postTrigger(leader.httpURL, "busy", first, "", 10*time.Second); err != nil || a.status != 202 || a.State != "accepted" {
			t.Fatalf("trigger %s: %+v %v", first, a, err)
		}
		leader.waitLogs("the triggered run", 15*time.Second, func(ls []logLine) bool {
			return len(match(ls, func(l logLine) bool { return l.str("msg") == "run started" && l.str("correlation_id") == first })) > 0
		})
		var wg sync.WaitGroup
		for i := 1; i < burst; i++ {
			corr := fmt.Sprintf("%s-%d", round, i)
			expect[corr] = "skipped/overlap"
			wg.Go(func() {
				a, err := postTrigger(ps[i%len(ps)].httpURL, "busy", corr, "", 10*time.Second)
				if err != nil || a.status != 202 || a.State != "accepted" {
					t.Errorf("trigger %s: %+v %v", corr, a, err)
				}
			})
		}
		wg.Wait()
		waitFor(t, "a skip record for every trigger of the burst", 15*time.Second, func() bool {
			recs := recordsByCorrelation(t, eps, "busy")
			for i := 1; i < burst; i++ {
				if len(recs[fmt.Sprintf("%s-%d", round, i)]) == 0 {
					return false
				}
			}
			return true
		})
		if n := keptTriggers(t, eps); n != 1 {
			t.Errorf("%d trigger requests kept while one runs, want 1 (its claim)", n)
		}
		return first
	}

	// Round a: both replicas stopped (SIGTERM) and started again while
	// the triggered run holds; the leader drains it first.
	expect[fire("a")] = "success"
	for i, p := range ps {
		p.signal(syscall.SIGTERM)
		p.wait(30 * time.Second)
		ps[i] = restart(t, p)
		all = append(all, ps[i])
	}
	leader = waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 3, time.Now(), 15*time.Second)

	// Round b: kill -9 of the leader while the triggered run holds.
	first := fire("b")
	expect[first] = "skipped/lock_lost"
	fault := time.Now()
	leader.signal(syscall.SIGKILL)
	leader.wait(10 * time.Second)
	standby := others(ps, leader)[0]
	var f time.Duration
	standby, f = failover(t, []*proc{standby}, fault, 3*time.Second)
	res.runs++
	res.F = append(res.F, f)
	for i := range ps {
		if ps[i] == leader {
			ps[i] = restart(t, leader)
			all = append(all, ps[i])
		}
	}
	waitRunsAfter(standby, 3, time.Now(), 15*time.Second)
	waitFor(t, "the killed leader's run to be recorded", 15*time.Second, func() bool {
		return len(recordsByCorrelation(t, eps, "busy")[first]) > 0
	})

	res.Z = stopAll(t, all)
	res.checkLedger(t, path, eps)
	recs := recordsByCorrelation(t, eps, "busy")
	runs := ledgerRuns(t, manual)
	for corr, want := range expect {
		got := recs[corr]
		if len(got) != 1 {
			t.Errorf("trigger %s: %d records, want 1: %+v", corr, len(got), got)
			continue
		}
		state := got[0].State
		if got[0].Reason != "" {
			state += "/" + got[0].Reason
		}
		if state != want || !got[0].Manual || got[0].TriggerID == "" {
			t.Errorf("trigger %s: record %+v, want %s, manual, with its trigger ID", corr, got[0], want)
		}
	}
	for corr, n := range runs {
		if n > 1 {
			res.D++
			t.Errorf("trigger %s ran %d times", corr, n)
		}
		if want := expect[corr]; want == "skipped/overlap" || want == "" {
			t.Errorf("trigger %s ran, but its record says %q", corr, want)
		}
	}
	if n := keptTriggers(t, eps); n != 0 {
		t.Errorf("%d trigger requests left in etcd", n)
	}
	t.Logf("triggers: %d sent, %d ran (ledger lines: %v), every one recorded once with its correlation ID", len(expect), len(runs), runs)
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}

// pauseMember stops (SIGSTOP) an etcd member: it keeps its connections
// and queues what is sent to it, as a stalled disk or a long GC would.
func pauseMember(t *testing.T, m *member, stop bool) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	m.stopped = stop
}

// Issue 18: triggers sent while etcd stalls (its only member SIGSTOPped
// for 4 s, longer than the replicas' request timeout and lease TTL). Some
// clients send a stream of triggers, each with its own Idempotency-Key,
// repeating each one with its key until the answer is "accepted" (as the
// CLI does), so that the stall begins while some request's write is on its
// way; others send one trigger without a key at the stall's start. Every
// keyed trigger runs exactly once; a keyless one answered "not stored"
// never runs, one answered "accepted" or "unconfirmed" at most once; no
// answer to a request that then runs is an error; the scheduled job's
// slots are each run or recorded with their reason.
func TestChaosTriggerAfterEtcdStall(t *testing.T) {
	skipChaos(t)
	ms := startCluster(t, 1)
	eps := endpoints(ms)
	dir := t.TempDir()
	path, manual := filepath.Join(dir, "ledger.jsonl"), filepath.Join(dir, "manual.jsonl")
	ps := startReplicas(t, 2, eps, ledgerJob(path, "100ms")+manualJob("now", manual, "10ms", "allow"))
	res := &chaosResult{scenario: 24}
	leader := waitLeader(t, ps, 30*time.Second)
	waitRunsAfter(leader, 2, time.Time{}, 15*time.Second)

	const streams, keyless = 6, 8
	const stallFor = 4 * time.Second
	var mu sync.Mutex
	answers := map[string]triggerAnswer{} // keyless correlation ID -> its one answer
	stats := map[string]int{}             // answers the streams saw, by kind
	sent := map[string]bool{}             // keyed correlation IDs accepted
	note := func(kind string) { mu.Lock(); stats[kind]++; mu.Unlock() }
	stalled, resumed := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			// Until the stall is over, one trigger after the other; each
			// repeated with its key until accepted.
			for n := 0; ; n++ {
				select {
				case <-resumed:
					return
				default:
				}
				corr := fmt.Sprintf("keyed-%d-%d", i, n)
				deadline := time.Now().Add(90 * time.Second)
				for {
					a, err := postTrigger(ps[(i+n)%len(ps)].httpURL, "now", corr, "key-"+corr, 15*time.Second)
					if err == nil && a.status == 202 && a.State == "accepted" {
						mu.Lock()
						sent[corr] = true
						mu.Unlock()
						note("accepted")
						break
					}
					switch {
					case err != nil:
						note("transport error")
					case a.status == 202:
						note(a.State)
					default:
						note(fmt.Sprint(a.status))
					}
					if time.Now().After(deadline) {
						t.Errorf("%s: no definite answer within 90 s: %+v %v", corr, a, err)
						return
					}
					time.Sleep(100 * time.Millisecond) // the client's retry interval
				}
			}
		})
	}
	// Let the streams run, then stall etcd under them.
	waitFor(t, "the streams to be under way", 15*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) >= 20 })
	pauseMember(t, ms[0], true)
	fault := time.Now()
	close(stalled)
	for i := range keyless {
		wg.Go(func() {
			corr := fmt.Sprintf("keyless-%d", i)
			a, err := postTrigger(ps[i%len(ps)].httpURL, "now", corr, "", 15*time.Second)
			if err != nil {
				t.Errorf("%s: %v", corr, err)
				return
			}
			mu.Lock()
			answers[corr] = a
			mu.Unlock()
		})
	}
	time.Sleep(time.Until(fault.Add(stallFor))) // the stall itself
	pauseMember(t, ms[0], false)
	close(resumed)
	res.runs++
	wg.Wait()
	leader = waitLeader(t, ps, 30*time.Second)
	res.F = append(res.F, anyRunsAfter(t, ps, 2, fault.Add(stallFor), 30*time.Second).Sub(fault.Add(stallFor)))
	waitFor(t, "a record for every accepted trigger", 60*time.Second, func() bool {
		recs := recordsByCorrelation(t, eps, "now")
		mu.Lock()
		defer mu.Unlock()
		for corr := range sent {
			if len(recs[corr]) == 0 {
				return false
			}
		}
		return true
	})
	waitFor(t, "every trigger request to be decided", 30*time.Second, func() bool { return keptTriggers(t, eps) == 0 })
	waitRunsAfter(leader, 2, time.Now(), 15*time.Second)

	res.Z = stopAll(t, ps)
	res.checkLedger(t, path, eps)
	runs := ledgerRuns(t, manual)
	recs := recordsByCorrelation(t, eps, "now")
	for corr, n := range runs {
		if n > 1 {
			res.D++
			t.Errorf("trigger %s ran %d times", corr, n)
		}
	}
	// Each accepted trigger has one record: its run's, or, for one whose
	// leader lost leadership in the stall before recording its end, a
	// skip record saying so (it ran at most once).
	outcomes := map[string]int{}
	for corr := range sent {
		r := recs[corr]
		switch {
		case len(r) != 1:
			t.Errorf("%s: records %+v, want one", corr, r)
		case r[0].State == "success" && runs[corr] == 1:
			outcomes["ran"]++
		case r[0].State == "skipped" && r[0].Reason != "":
			outcomes["recorded "+r[0].Reason]++
		default:
			t.Errorf("%s: %d runs, record %+v; want a run and its record, or a skip record with its reason", corr, runs[corr], r[0])
		}
	}
	kinds := map[string]int{}
	for corr, a := range answers {
		kind := fmt.Sprintf("%d %s", a.status, a.State)
		kinds[kind]++
		switch {
		case a.status == 202 && (a.State == "accepted" || a.State == "unconfirmed"):
			if runs[corr]+len(recs[corr]) > 1 {
				t.Errorf("%s (answered %s): %d runs, records %+v", corr, kind, runs[corr], recs[corr])
			}
		case a.status == 503 && strings.Contains(a.Error, "nothing was stored"):
			if runs[corr] != 0 || len(recs[corr]) != 0 {
				t.Errorf("%s was answered %q but ran: %d runs, records %+v", corr, a.Error, runs[corr], recs[corr])
			}
		default:
			t.Errorf("%s: answered %d %+v: neither stored, nor not stored, nor unconfirmed", corr, a.status, a)
		}
	}
	t.Logf("%d keyed triggers %v, answers seen %v; keyless answers %v; %d triggers ran, none twice", len(sent), outcomes, stats, kinds, len(runs))
	res.report(t)
	if res.D != 0 || res.Z != 0 {
		t.Fatalf("D=%d Z=%d, want 0", res.D, res.Z)
	}
}
