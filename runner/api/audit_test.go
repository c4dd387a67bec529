package api_test

import (
	"slices"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/api"
)

// A call refused for a foreign Host header (DNS rebinding) is audited like
// the other refusals when it would have changed state; a read is not.
func TestAuditHostRefusal(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{})
	if code, body, _ := do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT,
		"Host", "evil.example", "X-Correlation-ID", "corr-dns", "Authorization", "Bearer x"); code != 403 {
		t.Fatalf("foreign host: %d %v", code, body)
	}
	if code, _, _ := do(t, nil, "GET", s.url+"/api/v1/jobs", "Host", "evil.example"); code != 403 {
		t.Fatalf("foreign host, read: %d", code)
	}
	lines := s.logs.lines("api audit")
	if len(lines) != 1 {
		t.Fatalf("%d audit lines, want 1: %v", len(lines), lines)
	}
	if l := lines[0]; l["action"] != "pause" || l["job"] != "a" || l["status"] != float64(403) ||
		l["correlation_id"] != "corr-dns" || l["token_presented"] != true {
		t.Fatalf("audit line %v", l)
	}
}

// flood sends n calls refused for want of the token and returns how many
// of them have an audit line.
func flood(t *testing.T, s *started, n int) int {
	t.Helper()
	for range n {
		if code, _, _ := do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT); code != 401 {
			t.Fatalf("refused call answered %d", code)
		}
	}
	return refusalsLogged(s)
}

// refusalsLogged counts the audit lines of refused (401) calls.
func refusalsLogged(s *started) int {
	logged := 0
	for _, l := range s.logs.lines("api audit") {
		if l["status"] == float64(401) {
			logged++
		}
	}
	return logged
}

// suppressedSum adds up the suppressed counts of the audit lines.
func suppressedSum(s *started) int {
	sum := 0
	for _, l := range s.logs.lines("api audit") {
		if n, ok := l["suppressed"].(float64); ok {
			sum += int(n)
		}
	}
	return sum
}

// The count of audit lines left out in a flood goes on the next audit line,
// whatever its kind (here an accepted call): every refusal is accounted
// for, as a line or in a count.
func TestAuditSuppressedOnNextLineOfAnyKind(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "s3cret"})
	api.SetAuditFlushAfter(s.srv, time.Hour) // only the next line can carry it
	// No refill: on a slow machine the limit's 10/s let the flood's last
	// refusal be logged, and it, not the accepted call, carried the count.
	api.SetAuditRefusedLimit(s.srv, 0, 50)
	const n = 200
	logged := flood(t, s, n)
	if logged >= n {
		t.Fatalf("%d audit lines for %d refused calls: not limited", logged, n)
	}
	if code, _, _ := do(t, nil, "POST", s.url+"/api/v1/jobs/a/resume", "Content-Type", jsonCT, "Authorization", "Bearer s3cret"); code != 200 {
		t.Fatalf("accepted call answered %d", code)
	}
	lines := s.logs.lines("api audit")
	last := lines[len(lines)-1]
	if last["action"] != "resume" || last["status"] != float64(200) || last["suppressed"] == nil {
		t.Fatalf("the accepted call's audit line does not carry the count: %v", last)
	}
	if got := logged + suppressedSum(s); got != n {
		t.Fatalf("%d refusals logged and %d counted as left out, want %d in all", logged, suppressedSum(s), n)
	}
}

// With no audit line after a flood, the count is logged on its own within
// the flush delay; the server's stop logs one still pending.
func TestAuditSuppressedFlushedOnItsOwn(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "s3cret"})
	api.SetAuditFlushAfter(s.srv, 50*time.Millisecond)
	const n = 200
	logged := flood(t, s, n)
	deadline := time.Now().Add(10 * time.Second)
	for ; logged+suppressedSum(s) != n; logged = refusalsLogged(s) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d refusals logged, %d counted as left out, want %d in all", 10*time.Second, logged, suppressedSum(s), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The count's own line need not be the last: under load an allowed
	// refusal's line (the limit refills at 10/s) can be written after it.
	lines := s.logs.lines("api audit")
	own := slices.IndexFunc(lines, func(l map[string]any) bool {
		return len(l) == 4 && l["suppressed"] != nil && l["level"] == "INFO"
	})
	if own < 0 {
		t.Fatalf("no line of the count's own (time, level, msg and suppressed) among %v", lines)
	}

	s2 := start(t, api.Options{Token: "s3cret"})
	api.SetAuditFlushAfter(s2.srv, time.Hour)
	logged = flood(t, s2, n)
	if err := s2.srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := logged + suppressedSum(s2); got != n {
		t.Fatalf("after Stop: %d refusals logged and %d counted, want %d", logged, suppressedSum(s2), n)
	}
}
