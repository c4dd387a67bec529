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

// SetWriteStall sets how long a connection's write may be stuck before the
// limit may close it for a new one, until the test ends.
func SetWriteStall(cleanup func(func()), d time.Duration) {
	old := writeStall
	writeStall = d
	cleanup(func() { writeStall = old })
}

// StuckWrites is how many connections of the API's listener have had a
// write stuck for longer than the write stall.
func StuckWrites(s *Server) int {
	s.limit.mu.Lock()
	defer s.limit.mu.Unlock()
	n := 0
	oldest := time.Now().Add(-writeStall).UnixNano()
	for c := range s.limit.all {
		if since := c.writing.Load(); since != 0 && since < oldest {
			n++
		}
	}
	return n
}
