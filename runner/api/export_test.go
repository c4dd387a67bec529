package api

import "time"

// SetAuditFlushAfter sets how soon a count of left-out audit lines is
// logged on its own (1 s by default), for tests.
func SetAuditFlushAfter(s *Server, d time.Duration) {
	s.guard.flushMu.Lock()
	defer s.guard.flushMu.Unlock()
	s.guard.flushAfter = d
}
