package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A task whose error and progress message are 2 MB each (within what a
// plugin may send, beyond etcd's request limit) gets its record, cut, and
// the job's next run starts: before, the record was refused, the claim
// stayed open and every later slot was skipped as overlap (attack 17, K3).
func TestE2EHugeErrorDoesNotStickTheJob(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process (skipped with -short)")
	}
	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "e2e-big", cluster: "big"}.head(t, httpAddr) + `jobs:
  - {id: bigtext, plugin: testplugin, task: bigtext, schedule: "0 0 0 1 1 *", params: {count: 2000000}}
`
	p := startPacer(t, "big", httpAddr, cfg)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })

	for n := 1; n <= 2; n++ {
		trigger(t, p, "bigtext")
		rows := waitRuns(t, p, "bigtext", "the run's record", 30*time.Second, func(rs []runRow) bool {
			return len(rs) == n && rs[0].State != "running"
		})
		if r := rows[0]; r.State != "failure" || len(r.Error) > 16<<10+64 || !strings.Contains(r.Error, "\n[truncated ") {
			t.Fatalf("run %d: state %q, error of %d bytes ending %q: want failure, its error cut to 16 KiB and the cut noted",
				n, r.State, len(r.Error), r.Error[max(0, len(r.Error)-40):])
		}
		// pacer jobs no longer shows it running (before: RUNNING 1 for ever).
		waitUntil(t, "the job to show no run", func() bool {
			var jobs struct{ Jobs []struct{ Running int } }
			out, code := p.cli(nil, "jobs", "-o", "json")
			if code != 0 || json.Unmarshal([]byte(out), &jobs) != nil || len(jobs.Jobs) != 1 {
				t.Fatalf("pacer jobs: exit %d\n%s", code, out)
			}
			return jobs.Jobs[0].Running == 0
		})
	}
	for _, l := range match(p.logs(), msgIs("run finished")) {
		if e := l.str("error"); len(e) > 16<<10+64 {
			t.Errorf("run finished line with an error of %d bytes", len(e))
		}
	}
}
