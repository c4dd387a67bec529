package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// previousLayout is the last commit whose runner kept a claim key per slot
// (slots/<job>/<ns>, 24 h) and a horizon per job.
const previousLayout = "1561645d10690923a7cfba86bc27bea6da2fa778"

// buildPrevious builds the pacer binary of commit from this repository's
// history, or skips the test saying why it cannot.
func buildPrevious(t *testing.T, commit string) string {
	t.Helper()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("the previous version is built from git history, and this is not a git checkout: %v", err)
	}
	if err := exec.Command("git", "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Skipf("commit %s (the previous layout) is not in this checkout (a shallow clone?)", commit[:12])
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", strings.TrimSpace(string(root)), commit, src))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "pacer-previous")
	build := exec.Command("go", "build", "-o", bin, "./cmd/pacer")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous version: %v\n%s", err, out)
	}
	return bin
}

// A runner of this version started on the data directory of the previous
// version (claims kept per slot, killed with kill -9 mid-run) moves the
// claims into per-job keys and goes on: every slot ran once (the slots due
// while neither ran are caught up by the misfire policy "all", from the
// last slot the previous version claimed), the slot left running is
// recorded as lost, the run history is kept, and no key of the previous
// layout is left.
func TestE2EUpgradeFromPreviousLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the previous version and runs real pacer processes (skipped with -short)")
	}
	old := buildPrevious(t, previousLayout)
	dir, stamps := t.TempDir(), filepath.Join(t.TempDir(), "stamps.jsonl")
	client, peer := freeAddr(t), freeAddr(t)
	config := func(node, httpAddr string) string {
		return runnerConfig{node: node, cluster: "up", dataDir: dir, etcd: embeddedEtcd(client, peer)}.head(t, httpAddr) + fmt.Sprintf(`jobs:
  - {id: tick, plugin: testplugin, task: stamp, schedule: "@every 1s", timeout: 10s, params: {path: %q},
     misfire: {policy: all, grace: 1h}}
  - {id: slow, plugin: testplugin, task: sleep, schedule: "@every 2s", timeout: 1m, params: {duration: 1m}}
`, stamps)
	}

	addr := freeAddr(t)
	prev := startPacerBin(t, old, "previous", addr, config("previous", addr))
	prev.waitLogs("five ticks and a slow run started", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "tick" })) >= 5 &&
			len(match(ls, func(l logLine) bool { return l.str("msg") == "run started" && l.str("job") == "slow" })) >= 1
	})
	oldRuns, _ := prev.cli(nil, "runs", "tick", "-o", "json")
	prev.signal(syscall.SIGKILL)
	prev.wait(10 * time.Second)
	for _, pid := range pluginPIDs(prev.logs()) {
		waitGone(t, pid, 10*time.Second)
	}
	time.Sleep(3 * time.Second) // slots come due while nobody runs; not synchronisation

	addr = freeAddr(t)
	cur := startPacer(t, "current", addr, config("current", addr))
	lines := cur.waitLogs("ten ticks run", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "tick" })) >= 10
	})
	// Each shard's term moves its own jobs' claims (tick and slow are in
	// different shards of the default 16), so the lines' counts add up
	// to the 2 jobs, each moved once.
	moved := match(lines, msgIs("moved claims from the previous layout (a key per slot) to one key per job"))
	total := 0.0
	for _, l := range moved {
		n, _ := l["jobs"].(float64)
		total += n
	}
	if len(moved) == 0 || total != 2 {
		t.Errorf("lines about moving the claims: %v; want them to move 2 jobs in all, each once", moved)
	}

	// A replica of the previous version that leads again (a rolling
	// upgrade in the other direction) refuses the jobs' slots, each with a
	// record, rather than run slots whose claims it cannot see.
	cur.signal(syscall.SIGTERM)
	if code := cur.wait(30 * time.Second); code != 0 {
		t.Fatalf("current runner exited %d after SIGTERM", code)
	}
	addr = freeAddr(t)
	again := startPacerBin(t, old, "previous-again", addr, config("previous", addr))
	again.waitLogs("three ticks refused", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("job") == "tick" && strings.HasPrefix(l.str("msg"), "slot not run: older than the claims the cluster keeps")
		})) >= 3
	})
	if n := len(match(again.logs(), func(l logLine) bool { return l.str("msg") == "run started" && l.str("job") == "tick" })); n != 0 {
		t.Errorf("the previous version ran %d ticks after the upgrade", n)
	}
	again.signal(syscall.SIGTERM)
	again.wait(30 * time.Second)
	addr = freeAddr(t)
	cur = startPacer(t, "current-again", addr, config("current", addr))
	cur.waitLogs("a tick", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "tick" })) >= 1
	})

	// Every tick slot from the first to the last ran exactly once (or was
	// recorded as not run).
	seen := map[int64]int{}
	var first, last int64 = math.MaxInt64, 0
	f, err := os.Open(stamps)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s struct {
			SlotNS int64 `json:"slot_ns"`
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		seen[s.SlotNS]++
		first, last = min(first, s.SlotNS), max(last, s.SlotNS)
	}
	f.Close()
	out, code := cur.cli(nil, "runs", "tick", "-o", "json")
	// Every record of the job (pacer runs shows the latest 20).
	hresp, err := http.Get(cur.httpURL + "/api/v1/runs?job=tick&limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	var runs struct {
		Runs []struct {
			ScheduledTime  time.Time `json:"scheduled_time"`
			ScheduledUntil time.Time `json:"scheduled_until"`
			State, Reason  string
		}
	}
	err = json.NewDecoder(hresp.Body).Decode(&runs)
	hresp.Body.Close()
	if err != nil {
		t.Fatalf("GET /api/v1/runs?job=tick: %v", err)
	}
	lost := map[int64]string{} // slots recorded as not run, with the record's state and reason
	for _, r := range runs.Runs {
		if r.State == "success" || r.State == "running" {
			continue
		}
		for s := r.ScheduledTime; !s.After(r.ScheduledUntil) || s.Equal(r.ScheduledTime); s = s.Add(time.Second) {
			lost[s.UnixNano()] = r.State + " " + r.Reason
		}
	}
	for s := first; s <= last; s += int64(time.Second) {
		if seen[s] != 1 && !(seen[s] == 0 && lost[s] != "") {
			t.Errorf("slot %s ran %d times (record: %q)", time.Unix(0, s).UTC().Format(time.TimeOnly), seen[s], lost[s])
		}
	}

	// The history is kept, and the lost slot recorded.
	if code != 0 || !strings.Contains(out, `"node": "previous"`) && !strings.Contains(out, `"node":"previous"`) {
		t.Fatalf("pacer runs tick after the upgrade (%d) lost the previous version's records:\n%s\nbefore:\n%s", code, out, oldRuns)
	}
	out, _ = cur.cli(nil, "runs", "slow")
	if !strings.Contains(out, "lock_lost") || !strings.Contains(out, "claimed by previous") {
		t.Fatalf("pacer runs slow: no record of the slot left running:\n%s", out)
	}

	// No key of the previous layout is left; each job has a claim key, and
	// the horizon that stops a previous-version leader.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pacer/up/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if strings.HasPrefix(k, "/pacer/up/slots/") {
			t.Errorf("key of the previous layout left: %s", k)
		}
		keys[k] = true
	}
	for _, k := range []string{"/pacer/up/claims/tick", "/pacer/up/claims/slow", "/pacer/up/horizons/tick", "/pacer/up/horizons/slow"} {
		if !keys[k] {
			t.Errorf("no key %s", k)
		}
	}
	h, err := cli.Get(ctx, "/pacer/up/horizons/tick")
	if err != nil || len(h.Kvs) != 1 || string(h.Kvs[0].Value) != strconv.FormatInt(math.MaxInt64, 10) {
		t.Errorf("horizon of tick: %v %v, want the fence", h, err)
	}
}
