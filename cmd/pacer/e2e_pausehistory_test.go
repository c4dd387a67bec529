package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// G4, through real `pacer run` processes: two replicas on one etcd, one
// shard; a job run every second (misfire all, grace 60 s) is paused, its
// leader goes (kill: kill -9; drain: SIGTERM, with a long run keeping the
// drain going), and the job is resumed through the other replica before it
// takes the shard over. The slots that came due while the job was paused
// are recorded skipped, reason paused, and do not run late; those due after
// the resume do. Before, the new leader went by the pause flag at takeover
// (cleared by then) and ran them all late.
func TestE2ESlotsDueWhileAJobWasPausedStaySkippedAfterATakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	for _, how := range []string{"kill", "drain"} {
		t.Run(how, func(t *testing.T) { testPausedThroughTakeover(t, how) })
	}
}

func testPausedThroughTakeover(t *testing.T, how string) {
	etcd := startEtcd(t, "shared")
	const jobs = `
  - {id: p1, plugin: shell, task: exec, schedule: "@every 1s", misfire: {policy: all, grace: 60s}, params: {command: ["true"]}}
  - {id: long, plugin: shell, task: exec, schedule: "@every 1s", overlap: forbid, timeout: 1m, params: {command: [sleep, "60"]}}`
	start := func(name string) *proc {
		httpAddr := freeAddr(t)
		return startPacer(t, name, httpAddr, fmt.Sprintf(`
node: {name: %s}
cluster:
  name: e2e
  data_dir: %s
  lease_ttl: 6s
  shards: 1
  etcd: {endpoints: [%s]}
shutdown: {drain_timeout: 8s}
http: {listen: %s}
plugins: {dir: %s}
jobs:%s`, name, t.TempDir(), etcd.Endpoint(), httpAddr, filepath.Join(binDir, "plugins"), jobs))
	}
	a, b := start("a"), start("b")
	leads := func(p *proc) bool { return len(match(p.logs(), msgIs("became leader"))) > 0 }
	var leader, other *proc
	waitUntil(t, "a leader", func() bool {
		switch {
		case leads(a):
			leader, other = a, b
		case leads(b):
			leader, other = b, a
		}
		return leader != nil
	})
	leader.waitLogs("a run of p1 and the long run", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "p1" })) > 0 &&
			len(match(ls, func(l logLine) bool { return l.str("msg") == "run started" && l.str("job") == "long" })) > 0
	})

	if out, code := other.cli(nil, "pause", "p1"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	paused := time.Now()
	// The first slot checked comes half a second or more after the pause:
	// the leader hears of it by a watch.
	first := paused.Add(500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	// The scenario's steps, not synchronisation: the leader goes 2 s into
	// the pause, and the job is resumed 3 s later, before the takeover
	// (kill: after the 6 s lease; drain: after the 8 s drain).
	time.Sleep(2 * time.Second)
	switch how {
	case "kill":
		leader.signal(syscall.SIGKILL)
	case "drain":
		leader.signal(syscall.SIGTERM)
	}
	time.Sleep(3 * time.Second)
	resuming := time.Now()
	if out, code := other.cli(nil, "resume", "p1"); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	resumed := time.Now()
	other.waitLogs("the takeover and a late run of p1", 60*time.Second, func(ls []logLine) bool {
		return leads(other) && len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "p1" })) > 0
	})
	leader.wait(30 * time.Second)

	var decided map[time.Time]apiRecord
	waitUntil(t, "p1's slots of the pause decided", func() bool {
		decided = map[time.Time]apiRecord{}
		for _, r := range other.apiRuns("p1") {
			for s := r.ScheduledTime; ; s = s.Add(time.Second) {
				decided[s.UTC()] = r
				if r.ScheduledUntil.IsZero() || !s.Before(r.ScheduledUntil) {
					break
				}
			}
		}
		for s := first; s.Before(resuming); s = s.Add(time.Second) {
			if _, ok := decided[s.UTC()]; !ok {
				return false
			}
		}
		return true
	})
	checked, npaused, lateRuns := 0, 0, 0
	for s := first; s.Before(resuming); s = s.Add(time.Second) {
		checked++
		r := decided[s.UTC()]
		if r.State != "skipped" || r.Reason != "paused" {
			t.Errorf("slot %s, due while p1 was paused: %s %s %q; want skipped, reason paused", s.Format(time.TimeOnly), r.State, r.Reason, r.Error)
			continue
		}
		npaused++
	}
	// A run's "run finished" line, waited for above, comes before its
	// record is stored: the records read with the pause's slots decided may
	// list no run after the resume yet (under load, once, none did).
	waitUntil(t, "a run of p1 due after the resume recorded", func() bool {
		lateRuns = 0
		for _, r := range other.apiRuns("p1") {
			if r.ScheduledTime.After(resumed) && r.State == "success" {
				lateRuns++
			}
		}
		return lateRuns > 0
	})
	t.Logf("%s: of %d slots due while paused, %d recorded paused; %d slots after the resume ran", how, checked, npaused, lateRuns)
	if checked < 4 || lateRuns == 0 {
		t.Errorf("%d slots checked in the pause, %d runs after the resume; want 4 or more, and some", checked, lateRuns)
	}
	if n := len(match(other.logs(), func(l logLine) bool {
		return l.str("msg") == "slots came due while no replica led" || strings.HasPrefix(l.str("msg"), "slots held back")
	})); n == 0 {
		t.Errorf("the new leader logged no catch-up of p1")
	}
}
