package api

import (
	"time"

	"golang.org/x/time/rate"
)

// SetAuditFlushAfter sets how soon a count of left-out audit lines is
// logged on its own (1 s by default), for tests.
func SetAuditFlushAfter(s *Server, d time.Duration) {
	s.guard.flushMu.Lock()
	defer s.guard.flushMu.Unlock()
	s.guard.flushAfter = d
}

// WaitingConnections is how many connections the connection limit may
// close for a new one (waiting without a request in progress), after
// Start.
func WaitingConnections(s *Server) int {
	s.limit.mu.Lock()
	defer s.limit.mu.Unlock()
	return s.limit.idle.Len()
}

// SetAuditRefusedLimit replaces the limit on audit lines of refused calls
// (10/s, bursts of 50), for tests: with r 0 nothing refills, so a test
// knows which lines are left out however slowly its calls go.
func SetAuditRefusedLimit(s *Server, r rate.Limit, burst int) {
	s.guard.auditRefused = rate.NewLimiter(r, burst)
}

// BusyConnections is how many connections have a request in progress on
// the API's listener, after Start.
func BusyConnections(s *Server) int {
	s.limit.mu.Lock()
	defer s.limit.mu.Unlock()
	return s.limit.open - s.limit.idle.Len()
}
