package api

import "time"

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
