package runner_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
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

// Runs a catch-up starts (a missed slot run late under misfire once, a
// slot a dead leader left open run again under at-least-once) have their
// pacer.claim span, a child of the run's pacer.run as the scheduler's
// runs' is, with the claim's own times and the claiming term's token: the
// catch-up's claim, written before the run started, or the takeover of
// the open claim. Before, they had none (attack 25, W8).
func TestCatchUpRunsHaveTheirClaimSpan(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	hour := time.Now().UTC().Truncate(time.Hour)
	late := &runner.Job{ID: "late", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: 3 * time.Hour}}
	redo := &runner.Job{ID: "redo", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Timeout: time.Minute,
		Delivery: runner.DeliveryAtLeastOnce, Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{late, redo})
	// late last ran two hours ago: the catch-up runs its latest missed
	// slot (this hour's). A leader (token 1) claimed redo's slot of this
	// hour and died mid-run: the catch-up runs it again.
	if err := b.coord.Claim(ctx, term, "late", hour.Add(-2*time.Hour), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.coord.FinishSlot(ctx, term, "late", hour.Add(-2*time.Hour), "run-0", []byte(`{}`), time.Time{}, 0, 0); err != nil {
		t.Fatal(err)
	}
	open, _ := json.Marshal(runner.Record{Job: "redo", ScheduledTime: hour, RunID: "old-run", CorrelationID: "corr-dead",
		Node: "dead-node", FencingToken: 1, Attempt: 1, State: "running"})
	if err := b.coord.Claim(ctx, term, "redo", hour, open); err != nil {
		t.Fatal(err)
	}
	b.r.CatchUp(term)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b.r.Stop(stop)
	if n := len(tasks.called()); n != 2 {
		t.Fatalf("%d runs, want late's and redo's", n)
	}

	spans := b.spans.Ended()
	for _, tc := range []struct{ job, by string }{{"late", "catch-up"}, {"redo", "takeover"}} {
		var run sdktrace.ReadOnlySpan
		for _, s := range spans {
			if v, _ := spanAttr(s, "pacer.job.id"); s.Name() == "pacer.run" && v.AsString() == tc.job {
				run = s
			}
		}
		if run == nil {
			t.Fatalf("%s: no pacer.run span", tc.job)
		}
		var claims []sdktrace.ReadOnlySpan
		for _, s := range spans {
			if s.Name() == "pacer.claim" && s.Parent().SpanID() == run.SpanContext().SpanID() {
				claims = append(claims, s)
			}
		}
		if len(claims) != 1 {
			t.Errorf("%s: %d pacer.claim children of its pacer.run, want 1", tc.job, len(claims))
			continue
		}
		c := claims[0]
		if v, _ := spanAttr(c, "pacer.claim.by"); v.AsString() != tc.by {
			t.Errorf("%s: pacer.claim.by %q, want %q", tc.job, v.AsString(), tc.by)
		}
		if v, _ := spanAttr(c, "pacer.fencing_token"); v.AsInt64() != term.Token {
			t.Errorf("%s: pacer.claim's fencing token %d, want the catch-up's term's %d", tc.job, v.AsInt64(), term.Token)
		}
		if v, _ := spanAttr(c, "pacer.job.id"); v.AsString() != tc.job {
			t.Errorf("%s: pacer.claim's job %q", tc.job, v.AsString())
		}
		if c.EndTime().Before(c.StartTime()) || c.StartTime().IsZero() {
			t.Errorf("%s: pacer.claim from %s to %s", tc.job, c.StartTime(), c.EndTime())
		}
		if tc.by == "catch-up" && c.EndTime().After(run.StartTime()) {
			t.Errorf("%s: the catch-up's claim span ends at %s, after its run's span started (%s): not the claim's own times",
				tc.job, c.EndTime(), run.StartTime())
		}
	}
}
