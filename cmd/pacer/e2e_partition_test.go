package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/internal/netfault"
)

// A replica cut off from etcd (the link stops forwarding, as in a network
// partition or a frozen etcd host) reports its jobs' state as unknown once
// it has not heard from etcd for cluster.lease_ttl, not the pause flags it
// last read as fact (docs/operations.md, the jobs API); once the link heals
// the state is known again.
func TestE2EJobStateUnknownWhenCutOffFromEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	e := etcdtest.Start(t, etcdembed.Options{})
	hole := netfault.New(t, strings.TrimPrefix(e.Endpoint(), "http://"))
	httpAddr := freeAddr(t)
	head := runnerConfig{node: "cutoff", cluster: "cutoff",
		etcd: fmt.Sprintf("  etcd: {endpoints: ['http://%s'], dial_timeout: 1s, request_timeout: 1s}", hole.Addr()),
	}.head(t, httpAddr)
	p := startPacer(t, "cutoff", httpAddr, head+`jobs:
  - id: held
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [/bin/true]}
  - id: free
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [/bin/true]}
`)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	states := func() map[string]string {
		var jobs struct {
			Jobs []struct{ ID, State string }
		}
		out, code := p.cli(nil, "jobs", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &jobs) != nil {
			t.Fatalf("jobs: exit %d\n%s", code, out)
		}
		m := map[string]string{}
		for _, j := range jobs.Jobs {
			m[j.ID] = j.State
		}
		return m
	}
	if out, code := p.cli(nil, "pause", "held"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	waitUntil(t, "the pause to reach the runner", func() bool {
		s := states()
		return s["held"] == "paused" && s["free"] == "active"
	})

	hole.SetCut(true)
	waitUntil(t, "the cut-off replica to say its jobs' state is unknown", func() bool {
		s := states()
		return s["held"] == "unknown" && s["free"] == "unknown"
	})
	out, code := p.cli(nil, "jobs", "--state", "unknown")
	if code != 0 || !strings.Contains(out, "held") || !strings.Contains(out, "free") {
		t.Errorf("jobs --state unknown: exit %d\n%s", code, out)
	}

	hole.SetCut(false)
	waitUntil(t, "the state to be known again once etcd answers", func() bool {
		s := states()
		return s["held"] == "paused" && s["free"] == "active"
	})
	if z := stopAll(t, []*proc{p}); z != 0 {
		t.Errorf("%d plugin processes left", z)
	}
}
