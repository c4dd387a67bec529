package observability

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// NewCorrelationID returns a fresh correlation ID: one per run, shared by
// every attempt, log line, span and record of it.
func NewCorrelationID() string { return uuid.NewString() }

// NewRunID returns a fresh, time-ordered ID for one attempt.
func NewRunID() string { return uuid.Must(uuid.NewV7()).String() }

// MaxCorrelationID is the longest correlation ID a caller may give.
const MaxCorrelationID = 128

// CheckCorrelationID checks a correlation ID a caller gives (the API's
// X-Correlation-ID, the CLI's PACER_CORRELATION_ID): 1 to 128 characters of
// letters, digits and . _ : / - (a UUID, a ULID, a W3C trace ID,
// "deploy-42", "ci:build/7"), which s leaves as they are. The ID is stored
// in the run's record and written on its log lines and span; one the
// sanitizer would mask (it holds a token, "ghp_...", or personal data) could
// not be the same in all three, and is refused rather than changed.
func CheckCorrelationID(id string, s *Sanitizer) error {
	switch {
	case id == "":
		return errors.New("empty")
	case len(id) > MaxCorrelationID:
		return fmt.Errorf("%d characters; at most %d", len(id), MaxCorrelationID)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '/' && c != '-' {
			return errors.New("may hold only letters, digits and . _ : / -")
		}
	}
	if s.String(id) != id {
		return errors.New("holds what the logs mask (a token, an address or other personal data); use an ID that identifies the request and nothing else")
	}
	return nil
}

// MessagePath is a config key path ("jobs[0].params.env.PASSWORD") as an
// error message shows it before ": ": a last element that names a secret is
// written in brackets ("jobs[0].params.env[PASSWORD]"). Written as it is, it
// would read as a key and its value to the sanitizer every printed error
// passes, which would mask the message's first word ("PASSWORD: [redacted]
// string, got number").
func MessagePath(path string) string {
	i := strings.LastIndexByte(path, '.')
	if i < 0 || strings.ContainsAny(path[i+1:], `"[]`) || !DefaultSanitizer().SensitiveKey(path[i+1:]) {
		return path
	}
	return path[:i] + "[" + path[i+1:] + "]"
}

// GeneratedID reports whether id has the shape of the IDs Pacer makes for
// runs, attempts and triggers (NewCorrelationID, NewRunID): a UUID in
// lower-case hex, which holds no secret and which no built-in mask changes.
// Log fields that carry one (correlation_id, run_id, trigger_id) keep it as
// it is, operator patterns notwithstanding, so that a run's log lines can be
// found by the IDs of its record.
func GeneratedID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// idKey reports whether a log attribute key holds one of Pacer's own IDs.
func idKey(key string) bool {
	return key == "correlation_id" || key == "run_id" || key == "trigger_id"
}
