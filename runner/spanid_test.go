package runner

import (
	"testing"

	"github.com/pacerun/pacer/observability"
)

// A correlation ID Pacer made goes on the run's span as it is, whatever an
// operator pattern matches in it (the span, the record and the log lines
// keep one ID); any other is sanitized.
func TestSpanCorrelationIDKeepsGeneratedIDs(t *testing.T) {
	t.Parallel()
	s, err := observability.NewSanitizer(observability.SanitizerOptions{Patterns: []observability.Pattern{{Name: "acct", Regex: "[0-9]{3}"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := "0bc12345-14b7-4537-bc50-5feb7e1235c2"
	if got := spanCorrelationID(s.String, id); got != id {
		t.Errorf("spanCorrelationID(%q) = %q", id, got)
	}
	if got := spanCorrelationID(s.String, "deploy-12345"); got != "deploy-[acct]45" {
		t.Errorf("spanCorrelationID(deploy-12345) = %q, want it sanitized", got)
	}
}
