package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// Job control through the CLI and API of a real runner: bearer token,
// manual trigger with the caller's correlation ID, run history, pause,
// status, and config reload (a good one applied, a bad one rejected).
func TestE2EJobControl(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	httpAddr := freeAddr(t)
	head := runnerConfig{node: "e2e-ctl", cluster: "ctl", http: "token_env: PACER_TEST_TOKEN"}.head(t, httpAddr) + `jobs:
  - id: yearly
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: 'echo "manual run $PACER_CORRELATION_ID"', shell: true}
`
	p := startPacer(t, "e2e-ctl", httpAddr, head, "PACER_TEST_TOKEN=tok-123")
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	auth := []string{"PACER_API_TOKEN=tok-123"}

	if out, code := p.cli(nil, "trigger", "yearly"); code == 0 || !strings.Contains(out, "401") || !strings.Contains(out, "bearer token") {
		t.Fatalf("trigger without a token: exit %d\n%s", code, out)
	}
	out, code := p.cli(append(auth, "PACER_CORRELATION_ID=e2e-corr-1"), "trigger", "yearly", "--idempotency-key", "e2e-key-1")
	if code != 0 || !strings.Contains(out, "triggered yearly") || !strings.Contains(out, "e2e-corr-1") {
		t.Fatalf("trigger: exit %d\n%s", code, out)
	}
	// Repeated with the same key (a client retrying): the first request's
	// answer, and no second run.
	out, code = p.cli(append(auth, "PACER_CORRELATION_ID=e2e-corr-2"), "trigger", "yearly", "--idempotency-key", "e2e-key-1")
	if code != 0 || !strings.Contains(out, "already triggered by an earlier request with idempotency key e2e-key-1") ||
		!strings.Contains(out, "e2e-corr-1") {
		t.Fatalf("repeated trigger: exit %d\n%s", code, out)
	}
	p.waitLogs("the triggered run", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("msg") == "run finished" && l.str("correlation_id") == "e2e-corr-1" && l.str("outcome") == "success"
		})) == 1
	})
	if len(match(p.logs(), func(l logLine) bool {
		return l.str("source") == "plugin" && l.str("msg") == "manual run e2e-corr-1"
	})) != 1 {
		t.Fatal("the command did not see the caller's correlation ID")
	}

	var runs struct {
		Runs []struct {
			CorrelationID string `json:"correlation_id"`
			State         string
			Manual        bool
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, code = p.cli(nil, "runs", "yearly", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &runs) != nil {
			t.Fatalf("runs: exit %d\n%s", code, out)
		}
		if (len(runs.Runs) == 1 && runs.Runs[0].State == "success") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(runs.Runs) != 1 || runs.Runs[0].CorrelationID != "e2e-corr-1" || !runs.Runs[0].Manual || runs.Runs[0].State != "success" {
		t.Fatalf("run history: %+v", runs.Runs)
	}

	if out, code = p.cli(auth, "pause", "yearly"); code != 0 || !strings.Contains(out, "paused yearly") {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	jobsPaused := func() map[string]bool {
		var jobs struct {
			Jobs []struct {
				ID     string
				Paused bool
			}
		}
		out, code := p.cli(nil, "jobs", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &jobs) != nil {
			t.Fatalf("jobs: exit %d\n%s", code, out)
		}
		m := map[string]bool{}
		for _, j := range jobs.Jobs {
			m[j.ID] = j.Paused
		}
		return m
	}
	waitUntil(t, "the pause to reach the runner", func() bool { return jobsPaused()["yearly"] })

	if out, code = p.cli(nil, "status"); code != 0 || !strings.Contains(out, "leader:   e2e-ctl") || !strings.Contains(out, "fencing token") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}

	// A good reload adds a job; a bad one is rejected and changes nothing.
	added := head + "  - id: added\n    plugin: shell\n    task: exec\n    schedule: \"0 0 0 1 1 *\"\n    params: {command: [/bin/true]}\n"
	must(os.WriteFile(p.configPath, []byte(added), 0o644))
	p.waitLogs("the reload", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("config reloaded"))) == 1 })
	if j := jobsPaused(); len(j) != 2 || !j["yearly"] {
		t.Fatalf("after reload: %v (want 2 jobs, yearly still paused)", j)
	}
	must(os.WriteFile(p.configPath, []byte(added+"    retires: 3\n"), 0o644))
	lines := p.waitLogs("the rejection", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("config reload rejected; the last good config keeps running"))) == 1
	})
	rej := match(lines, msgIs("config reload rejected; the last good config keeps running"))[0]
	if !strings.Contains(rej.str("error"), `jobs[1].retires: unknown key "retires"`) {
		t.Fatalf("rejection does not say what and where: %v", rej)
	}
	if j := jobsPaused(); len(j) != 2 {
		t.Fatalf("a rejected config changed the jobs: %v", j)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
