package runner_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
)

// termEndedClaims is the bundle's coordinator whose slot claims fail as
// when the term ended before they landed (a frozen leader whose lease ran
// out): the claim is not this term's to make.
type termEndedClaims struct{ *coord.Coordinator }

func (termEndedClaims) Claim(context.Context, *coord.Term, string, time.Time, []byte) error {
	return coord.ErrNotLeader
}

// spanAttr returns the value of a span's attribute, and whether it has it.
func spanAttr(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// A slot whose claim failed because the term ended is left to the shard's
// next leader, whose catch-up runs it under a correlation ID of its own:
// its log line and span say so, not only "not run" (attack 25, W7: the
// line and the span read as the slot's fate, and the slot then ran under
// another correlation ID).
func TestClaimLostWithTheTermIsLeftToTheNextLeader(t *testing.T) {
	b := setup(t)
	var logs syncbuf.Buffer
	b.r = runner.New(runner.Options{Node: "n1", Coord: termEndedClaims{b.coord}, Tasks: b.tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: slog.New(slog.NewJSONHandler(&logs, nil)), JobSets: b.coord})
	b.hook.set(b.r)
	t.Cleanup(func() { b.r.Stop(context.Background()) })
	b.waitLeader(t)
	j := job("frozen", "")
	b.r.SetJobs([]*runner.Job{j})
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})

	var run sdktrace.ReadOnlySpan
	waitUntil(t, "the slot's pacer.run span", func() bool {
		for _, s := range b.spans.Ended() {
			if s.Name() == "pacer.run" {
				run = s
			}
		}
		return run != nil
	})
	if v, _ := spanAttr(run, "pacer.skip_reason"); v.AsString() != runner.SkipLockLost {
		t.Errorf("pacer.skip_reason %q, want %q", v.AsString(), runner.SkipLockLost)
	}
	if v, ok := spanAttr(run, "pacer.left_to_next_leader"); !ok || !v.AsBool() {
		t.Errorf("pacer.run lacks pacer.left_to_next_leader: true: %v", run.Attributes())
	}
	if d := run.Status().Description; !strings.HasSuffix(d, "; left to the shard's next leader") {
		t.Errorf("pacer.run's status %q does not say the next leader decides the slot", d)
	}
	waitUntil(t, "the log line", func() bool { return strings.Contains(logs.String(), "slot not run: claim failed") })
	line := logs.String()
	for _, want := range []string{
		`"msg":"slot not run: claim failed; left to the shard's next leader"`,
		`"reason":"lock_lost"`,
		`"next_leader":"its catch-up runs or skips the slot under the misfire policy, with a correlation ID of its own: find it by job and scheduled_time"`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %s:\n%s", want, line)
		}
	}
}
