package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// Attack 13, J3: a runner that cannot run for longer than a slot interval
// but less than its lease (SIGSTOP, a long GC, CPU starvation) keeps its
// terms, so no catch-up looks at the slots its scheduler dropped: they get
// the job's misfire policy where they were dropped. Every slot of the stall
// has a run or a skip record: under "all" (within grace) they run late,
// under "skip" they are recorded skipped as misfires. Before the fix the
// dropped slots were only counted and logged: no run, no record.
func TestE2EStalledSchedulerLeavesNoSilentMiss(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process and stops it (skipped with -short)")
	}
	t.Parallel()
	dir, addr := t.TempDir(), freeAddr(t)
	// A lease long enough that a 2.5 s stop does not end the terms.
	head := strings.Replace(runnerConfig{node: "s", cluster: "e2e", dataDir: dir}.head(t, addr), "lease_ttl: 2s", "lease_ttl: 8s", 1)
	p := startPacer(t, "s", addr, head+`jobs:
  - {id: all, plugin: shell, task: exec, schedule: "@every 1s", misfire: {policy: all, grace: 1m}, params: {command: ["true"]}}
  - {id: skip, plugin: shell, task: exec, schedule: "@every 1s", misfire: {policy: skip}, params: {command: ["true"]}}
`)
	finished := func(job string) func([]logLine) bool {
		return func(ls []logLine) bool {
			return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == job })) >= 2
		}
	}
	p.waitLogs("runs of both jobs", 60*time.Second, func(ls []logLine) bool { return finished("all")(ls) && finished("skip")(ls) })
	stopped := time.Now()
	p.signal(syscall.SIGSTOP)
	time.Sleep(2500 * time.Millisecond) // the stall: the scenario, not synchronisation
	p.signal(syscall.SIGCONT)
	resumed := time.Now()
	p.waitLogs("the dropped slots reported", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("slots missed while the scheduler could not run"))) >= 2
	})
	if ended := match(p.logs(), msgIs("leadership ended")); len(ended) > 0 {
		t.Fatalf("a term ended during the stop (%v): the catch-up decided the slots, not what this test is about", ended[0])
	}
	// Every slot from the one before the stop to the one after it has a run
	// or a record.
	first, last := stopped.Truncate(time.Second), resumed.Truncate(time.Second).Add(time.Second)
	for _, job := range []string{"all", "skip"} {
		var holes []string
		var skipped, ran int
		deadline := time.Now().Add(20 * time.Second)
		for {
			holes, skipped, ran = nil, 0, 0
			recs := p.apiRuns(job)
			for s := first; !s.After(last); s = s.Add(time.Second) {
				found := false
				for _, r := range recs {
					until := r.ScheduledUntil
					if until.IsZero() {
						until = r.ScheduledTime
					}
					if s.Before(r.ScheduledTime) || s.After(until) {
						continue
					}
					found = true
					switch {
					case r.State == "skipped" && r.Reason == "misfire":
						skipped++
					case r.State == "success":
						ran++
					}
				}
				if !found {
					holes = append(holes, s.Format(time.TimeOnly))
				}
			}
			if len(holes) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(holes) > 0 {
			t.Errorf("%s: slots with neither a run nor a record: %v (stopped %s, resumed %s)", job, holes,
				stopped.Format("15:04:05.000"), resumed.Format("15:04:05.000"))
		}
		switch job {
		case "all":
			if skipped > 0 {
				t.Errorf("all: %d slots of the stop recorded skipped, want every one run late (grace 1m)", skipped)
			}
		case "skip":
			if skipped == 0 {
				t.Errorf("skip: no slot of the stop recorded skipped as a misfire (%d ran)", ran)
			}
		}
	}
}
