package runner_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// leftRetry is a slot whose attempt 1 failed on replica a, which then
// handed the shard over to b while the retry waited out its backoff: the
// retry left to b (delivery at-least-once).
type leftRetry struct {
	b        *replica
	tasksB   *scripted
	attempt1 runner.Record
}

const leftRetryJob = "left-retry"

// leaveARetry makes a leftRetry, with a retry backoff of backoff, under
// the delivery policy given (at-most-once: the retry is recorded not
// started, and left to nobody).
func leaveARetry(t *testing.T, delivery string, backoff time.Duration) leftRetry {
	t.Helper()
	return leaveARetryOf(t, delivery, backoff, false)
}

// leaveARetryOf is leaveARetry of a scheduled slot, or, if manual, of a
// manual trigger of the job.
func leaveARetryOf(t *testing.T, delivery string, backoff time.Duration, manual bool) leftRetry {
	t.Helper()
	ep := startEtcd(t)
	slot := time.Now().Add(2 * time.Second).Truncate(time.Second)
	jobs := func() []*runner.Job {
		return []*runner.Job{{ID: leftRetryJob, Plugin: "p", Task: "t", Schedule: slotList{slot, slot.Add(time.Hour)}, Spec: "test: two slots",
			Timeout: time.Minute, Overlap: runner.OverlapForbid, Delivery: delivery,
			Retries: runner.Retries{Max: 3, InitialBackoff: backoff, MaxBackoff: backoff}}}
	}
	tasksA, tasksB := &scripted{script: []string{"boom"}}, &scripted{}
	a, b, jobsA := handOverPair(t, ep, tasksA, tasksB, jobs)
	if manual {
		if _, err := a.control().Trigger(context.Background(), leftRetryJob, "corr-left-retry", "test", ""); err != nil {
			t.Fatal(err)
		}
	} else {
		a.r.Fire(runner.Slot{Job: jobsA[0], Time: slot})
	}
	waitUntil(t, "attempt 1's record", func() bool { return len(recordsOf(t, a.cli, leftRetryJob)) == 1 })
	attempt1 := recordsOf(t, a.cli, leftRetryJob)[0]
	a.stop()
	b.waitLeader(t)
	return leftRetry{b: b, tasksB: tasksB, attempt1: attempt1}
}

// openClaims reads the job's open claims through a coordinator of its own
// (one that never runs: it only reads).
func openClaims(t *testing.T, cli *clientv3.Client) []runner.Record {
	t.Helper()
	jc, err := coord.New(coord.Options{Client: cli, Cluster: "t", Node: "reader"}).JobClaims(context.Background(), leftRetryJob)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]runner.Record, len(jc.Open))
	for i, o := range jc.Open {
		if err := json.Unmarshal(o.Claim, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// leftClaims is openClaims, or, if manual, the claims of the job's stored
// trigger requests.
func leftClaims(t *testing.T, cli *clientv3.Client, manual bool) []runner.Record {
	t.Helper()
	if !manual {
		return openClaims(t, cli)
	}
	resp, err := cli.Get(context.Background(), "/pacer/t/triggers/"+leftRetryJob+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []runner.Record
	for _, kv := range resp.Kvs {
		var req runner.TriggerRequest
		if err := json.Unmarshal(kv.Value, &req); err != nil {
			t.Fatal(err)
		}
		if req.Claim != nil {
			out = append(out, *req.Claim)
		}
	}
	return out
}

// S3: a retry left to the shard's next leader by a hand-over ran at the
// takeover, before its backoff had passed (7 s into a 12 s backoff). The
// leaving leader now writes when the retry is due into the slot's open
// claim (Record.RetryAt), and the next leader starts it then, not before.
func TestHandOverRetryWaitsOutItsBackoff(t *testing.T) {
	for _, manual := range []bool{false, true} {
		name := "slot"
		if manual {
			name = "manual trigger" // attack 25's follow-up: it ran at the takeover
		}
		t.Run(name, func(t *testing.T) { testHandOverRetryWaitsOutItsBackoff(t, manual) })
	}
}

func testHandOverRetryWaitsOutItsBackoff(t *testing.T, manual bool) {
	const backoff = 4 * time.Second // the wait is 3.2 to 4 s (20 % jitter)
	lr := leaveARetryOf(t, runner.DeliveryAtLeastOnce, backoff, manual)
	ledAt := time.Now()
	open := leftClaims(t, lr.b.cli, manual)
	if len(open) != 1 {
		t.Fatalf("open claims %+v; want the slot's", open)
	}
	claim := open[0]
	earliest := lr.attempt1.End.Add(backoff * 8 / 10)
	if claim.RetryAt.Before(earliest) || claim.RetryAt.After(lr.attempt1.End.Add(backoff+5*time.Second)) {
		t.Errorf("open claim %+v: retry_at %v; want attempt 1's end %v plus its backoff (3.2 to 4 s)", claim, claim.RetryAt, lr.attempt1.End)
	}
	if !claim.RetryAt.IsZero() && !ledAt.Before(claim.RetryAt) {
		t.Fatalf("b led at %v, not before the retry was due (%v): the hand-over waited out the backoff", ledAt, claim.RetryAt)
	}
	var attempt2 runner.Record
	waitUntil(t, "attempt 2's record", func() bool {
		recs := recordsOf(t, lr.b.cli, leftRetryJob)
		i := slices.IndexFunc(recs, func(r runner.Record) bool { return r.Attempt == 2 })
		if i >= 0 {
			attempt2 = recs[i]
		}
		return i >= 0
	})
	if attempt2.State != observability.OutcomeSuccess || attempt2.Node != "b" || attempt2.CorrelationID != lr.attempt1.CorrelationID {
		t.Fatalf("attempt 2's record %+v; want b to run it, with attempt 1's correlation ID %s", attempt2, lr.attempt1.CorrelationID)
	}
	if attempt2.Start.Before(earliest) || attempt2.Start.Before(claim.RetryAt) {
		t.Fatalf("attempt 2 started at %v, %v after attempt 1 ended; want it not before its backoff ended, at %v",
			attempt2.Start, attempt2.Start.Sub(lr.attempt1.End), claim.RetryAt)
	}
	t.Logf("b led %v after attempt 1 ended; attempt 2 started %v after it, %v after its due time",
		ledAt.Sub(lr.attempt1.End).Round(time.Millisecond), attempt2.Start.Sub(lr.attempt1.End).Round(time.Millisecond),
		attempt2.Start.Sub(claim.RetryAt).Round(time.Millisecond))
	waitUntil(t, "the slot's claim closed", func() bool { return len(leftClaims(t, lr.b.cli, manual)) == 0 })
}

// What ends the next leader's wait for a retry left to it ends it as it
// ends the backoff between attempts on one leader: a pause or a reload
// that removes the job records the retry not started and closes the slot;
// a stop (the term ending) leaves the claim open, due time and all, for
// the shard's next leader, without waiting out the backoff in its drain.
func TestHandOverRetryWaitEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    func(b *replica)
		reason string // of the slot's closing skip record; "": left open
		manual bool   // a manual trigger's retry, not a scheduled slot's
	}{
		{"pause", func(b *replica) { b.r.SetPaused(map[string]bool{leftRetryJob: true}) }, runner.SkipPaused, false},
		{"reload removing the job", func(b *replica) { b.r.SetJobs(nil) }, runner.SkipReloaded, false},
		{"stop", func(b *replica) { b.stop() }, "", false},
		{"manual trigger/pause", func(b *replica) { b.r.SetPaused(map[string]bool{leftRetryJob: true}) }, runner.SkipPaused, true},
		{"manual trigger/reload changing the job", func(b *replica) {
			j := job(leftRetryJob, runner.OverlapForbid)
			b.r.SetJobs([]*runner.Job{j})
		}, runner.SkipReloaded, true},
		{"manual trigger/stop", func(b *replica) { b.stop() }, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr := leaveARetryOf(t, runner.DeliveryAtLeastOnce, time.Hour, tc.manual)
			cli, err := clientv3.New(clientv3.Config{Endpoints: lr.b.cli.Endpoints()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			open := leftClaims(t, cli, tc.manual)
			if len(open) != 1 || open[0].RetryAt.IsZero() {
				t.Fatalf("open claims %+v; want the slot's, with its retry's due time", open)
			}
			waitUntil(t, "b waiting to retry", func() bool { _, running := lr.b.r.JobState(leftRetryJob); return running == 1 })
			began := time.Now()
			tc.end(lr.b)
			if tc.reason == "" {
				if took := time.Since(began); took > 30*time.Second {
					t.Fatalf("b's stop took %v: its drain waited for the retry", took)
				}
				if left := leftClaims(t, cli, tc.manual); len(left) != 1 || !left[0].RetryAt.Equal(open[0].RetryAt) {
					t.Fatalf("open claims after b's stop %+v; want the slot's as it was, due at %v", left, open[0].RetryAt)
				}
				if recs := recordsOf(t, cli, leftRetryJob); len(recs) != 1 || len(lr.tasksB.called()) != 0 {
					t.Fatalf("records %+v, b ran %d; want attempt 1's only, the retry left open", recs, len(lr.tasksB.called()))
				}
				return
			}
			waitUntil(t, "the retry's skip record", func() bool { return len(recordsOf(t, cli, leftRetryJob)) == 2 })
			recs := recordsOf(t, cli, leftRetryJob)
			skip := recs[slices.IndexFunc(recs, func(r runner.Record) bool { return r.State == "skipped" })]
			if skip.Reason != tc.reason || skip.CorrelationID != lr.attempt1.CorrelationID || len(lr.tasksB.called()) != 0 {
				t.Fatalf("skip record %+v (b ran %d); want reason %s, attempt 1's correlation ID", skip, len(lr.tasksB.called()), tc.reason)
			}
			waitUntil(t, "the slot's claim closed", func() bool { return len(leftClaims(t, cli, tc.manual)) == 0 })
		})
	}
}

// failAfter fails each call once release is closed (not on its context's
// end: a stop's drain lets runs finish).
type failAfter struct {
	started chan struct{}
	release chan struct{}
}

func (f *failAfter) Run(context.Context, pluginhost.Call) (*pluginhost.Result, error) {
	f.started <- struct{}{}
	<-f.release
	return &pluginhost.Result{TaskError: "boom"}, nil
}

// Attack 28, F1: under at-least-once, an attempt that failed in a stop's
// drain, after the stop had begun, had its retry recorded "stopping" and
// the slot closed: the next leader ran nothing. A stop during the backoff
// left the retry to the next leader, as documented. Both leave it now: the
// slot's claim stays open and says when the retry is due.
func TestStopDuringAFailingAttemptLeavesItsRetry(t *testing.T) {
	b := setup(t)
	b.waitLeader(t)
	tasks := &failAfter{started: make(chan struct{}, 1), release: make(chan struct{})}
	b.useRunner(t, tasks)
	j := job(leftRetryJob, runner.OverlapForbid)
	j.Delivery = runner.DeliveryAtLeastOnce
	j.Retries = runner.Retries{Max: 2, InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	b.r.SetJobs([]*runner.Job{j})
	b.waitLeader(t)
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	<-tasks.started
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b.r.Stop(ctx)
	}()
	waitUntil(t, "the stop begun", func() bool { return runner.Stopping(b.r) })
	close(tasks.release) // attempt 1 fails in the drain
	<-stopped

	open := openClaims(t, b.admin)
	if len(open) != 1 || open[0].Attempt != 1 || open[0].RetryAt.IsZero() {
		t.Fatalf("open claims %+v; want the slot's, naming attempt 1 and when its retry is due", open)
	}
	for _, rec := range records(t, b, leftRetryJob) {
		if rec.State == "skipped" {
			t.Fatalf("record %+v: the retry was recorded not started, not left to the next leader", rec)
		}
	}
}
