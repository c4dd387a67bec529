package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A job that succeeded under the leader it had, and fails since, keeps its
// pacer_job_last_success_timestamp_seconds when that leader is killed: the
// new leader exports it from the job's claim key as its term starts, so
// PacerJobStale can fire after a shard move (attack 16, G3; before, the
// series was gone from every live replica until the job succeeded again).
func TestE2ENewLeaderExportsTheLastSuccess(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	etcd := startEtcd(t, "shared")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() }) // before etcd's Close, which waits for its clients

	fail := filepath.Join(t.TempDir(), "fail") // the job fails once this exists
	const ttl = 2 * time.Second
	start := func(name string) *proc {
		httpAddr := freeAddr(t)
		return startPacer(t, name, httpAddr, fmt.Sprintf(`
node: {name: %s}
cluster:
  name: e2e
  data_dir: %s
  lease_ttl: %s
  shards: 1
  etcd: {endpoints: [%s]}
http: {listen: %s}
plugins: {dir: %s}
jobs:
  - id: flaky
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 10s
    params:
      command: 'test ! -e %s'
      shell: true
`, name, t.TempDir(), ttl, etcd.Endpoint(), httpAddr, filepath.Join(binDir, "plugins"), fail))
	}
	a, b := start("a"), start("b")
	finished := func(outcome string) func([]logLine) bool {
		return func(ls []logLine) bool {
			return len(match(ls, func(l logLine) bool { return msgIs("run finished")(l) && l.str("outcome") == outcome })) > 0
		}
	}
	var leader, follower *proc
	deadline := time.Now().Add(30 * time.Second)
	for leader == nil {
		switch {
		case finished("success")(a.logs()):
			leader, follower = a, b
		case finished("success")(b.logs()):
			leader, follower = b, a
		case time.Now().After(deadline):
			t.Fatal("no success on either replica")
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := os.WriteFile(fail, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	leader.waitLogs("a failure on the leader", 30*time.Second, finished("failure"))

	// The last success as the leader exports it, and as its claim key keeps
	// it (written with the slot's record): the same success.
	last := leader.metric("pacer_job_last_success_timestamp_seconds", `job_id="flaky"`)
	var kept float64
	for deadline := time.Now().Add(10 * time.Second); math.Abs(kept-last) > 1; {
		if time.Now().After(deadline) {
			t.Fatalf("the claim key keeps the last success at %v, the leader exports %v", kept, last)
		}
		resp, err := cli.Get(context.Background(), "/pacer/e2e/claims/flaky")
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("claim key of flaky: %v, %v", resp, err)
		}
		var st struct{ Success int64 }
		if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
			t.Fatal(err)
		}
		kept = float64(st.Success) / 1e9
		time.Sleep(50 * time.Millisecond)
	}

	leader.signal(syscall.SIGKILL)
	leader.wait(10 * time.Second)
	follower.waitLogs("the follower to lead", ttl+10*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	var got float64 = -1
	for deadline := time.Now().Add(10 * time.Second); got < 0; {
		if time.Now().After(deadline) {
			t.Fatal("the new leader exports no pacer_job_last_success_timestamp_seconds for flaky")
		}
		got = follower.metric("pacer_job_last_success_timestamp_seconds", `job_id="flaky"`)
		time.Sleep(50 * time.Millisecond)
	}
	if got != kept {
		t.Fatalf("the new leader exports flaky's last success %v, want %v (the old leader's: %v)", got, kept, last)
	}
	if n := follower.metric("pacer_job_runs_total", `job_id="flaky"`, `outcome="success"`); n > 0 {
		t.Fatalf("flaky succeeded %v times on the new leader: the test needs it not to", n)
	}
}
