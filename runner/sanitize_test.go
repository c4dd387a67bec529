package runner_test

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"

	"github.com/pacerun/pacer/runner"
)

// A runner given no sanitizer masks what leaves it with the default one:
// a secret in a task's error reaches neither the run record nor the span.
func TestRunnerWithoutSanitizerMasksSecrets(t *testing.T) {
	const secret = "hunter2-Zq8v"
	b, _ := setupScripted(t, "login refused: password="+secret+" for api.example.com")
	b.waitLeader(t)
	slot := slotAhead()
	b.r.Fire(runner.Slot{Job: job("masked", ""), Time: slot})
	waitCount(t, "records", func() float64 { return float64(len(records(t, b, "masked"))) }, 1)

	rec := records(t, b, "masked")[0]
	if !strings.Contains(rec.Error, "login refused: password=") || strings.Contains(rec.Error, secret) {
		t.Errorf("record error %q: want the message with the password masked", rec.Error)
	}
	waitCount(t, "failed pacer.run spans", func() float64 {
		n := 0
		for _, s := range b.spans.Ended() {
			if s.Name() == "pacer.run" && s.Status().Code == codes.Error {
				n++
			}
		}
		return float64(n)
	}, 1)
	for _, s := range b.spans.Ended() {
		if strings.Contains(s.Status().Description, secret) {
			t.Errorf("span %s status %q shows the password", s.Name(), s.Status().Description)
		}
	}
}
