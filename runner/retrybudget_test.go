package runner_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
)

// budgetJob is the at-least-once job whose retry budget the tests below
// follow across leaders.
const budgetJob = "budget"

// budgetJobs is a replica's definition of budgetJob: retries.max of max,
// 4 s between attempts (3.2 to 4 s with the jitter): long enough to start
// the next replica and stop this one while its retry waits, on a loaded
// machine too (with 2 s, the whole suite's load once let the wait pass
// before the stop).
func budgetJobs(max int) func() []*runner.Job {
	return func() []*runner.Job {
		j := job(budgetJob, runner.OverlapForbid)
		j.Delivery = runner.DeliveryAtLeastOnce
		j.Retries = runner.Retries{Max: max, InitialBackoff: 4 * time.Second, MaxBackoff: 4 * time.Second}
		return []*runner.Job{j}
	}
}

// failing answers every call with a task error.
func failing(n int) *scripted {
	s := &scripted{}
	for range n {
		s.script = append(s.script, "boom")
	}
	return s
}

// attemptsOf returns the job's run records (skips left out) in attempt
// order.
func attemptsOf(t *testing.T, p *replica) []runner.Record {
	t.Helper()
	var out []runner.Record
	for _, r := range recordsOf(t, p.cli, budgetJob) {
		if r.State != "skipped" {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b runner.Record) int { return a.Attempt - b.Attempt })
	return out
}

// finished says whether the job's slot (or trigger request) is decided:
// no claim of it open.
func finished(t *testing.T, p *replica, manual bool) bool {
	t.Helper()
	if manual {
		return storedTriggers(t, p.cli, budgetJob) == 0
	}
	jc, err := p.c.JobClaims(context.Background(), budgetJob)
	if err != nil {
		t.Fatal(err)
	}
	return len(jc.Open) == 0 && len(jc.Slots) > 0
}

// waitDecided waits until the job's slot (or trigger request) is decided,
// and says what had run if it is not.
func waitDecided(t *testing.T, c *replica, manual bool, tasksC *scripted) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !finished(t, c, manual) {
		if time.Now().After(deadline) {
			t.Fatalf("the slot not decided 30 s after c led: attempts%s, c ran %d", attemptList(attemptsOf(t, c)), len(tasksC.called()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handOverToC starts replica c (calling tasksC, with jobs), stops b, which
// hands the shard over to c (the retry b's backoff waits for is left to
// c), and waits until c has decided the slot (or trigger request).
func handOverToC(t *testing.T, ep string, b *replica, tasksC *scripted, jobs func() []*runner.Job, manual bool) *replica {
	t.Helper()
	c := startHandingReplica(t, ep, "c", tasksC)
	c.r.SetJobs(jobs())
	b.stop()
	c.waitLeader(t)
	waitDecided(t, c, manual, tasksC)
	return c
}

// attemptList lists attempts as "n:state@node" for a failure's message.
func attemptList(recs []runner.Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(" " + strconv.Itoa(r.Attempt) + ":" + r.State + "@" + r.Node)
	}
	return b.String()
}

// W10 (attack 25): a retry left to the shard's next leader (its leader
// stopped, or handed the shard over, while the retry waited out its
// backoff) was run by the new leader as attempt k, and then the new
// leader ran retries.max more: with retries.max 3, a hand-over after
// attempt 1 and another after attempt 3 ran 7 attempts. The budget now
// goes on from the attempt taken over: the slot (or manual trigger) gets
// retries.max + 1 = 4 attempts, whichever leaders run them.
func TestLeftRetryKeepsTheRetryBudget(t *testing.T) {
	for _, manual := range []bool{false, true} {
		name := "slot"
		if manual {
			name = "manual trigger"
		}
		t.Run(name, func(t *testing.T) {
			ep := startEtcd(t)
			jobs := budgetJobs(3)
			tasksA, tasksB, tasksC := failing(1), failing(2), failing(4)
			a := startHandingReplica(t, ep, "a", tasksA)
			jobsA := jobs()
			a.r.SetJobs(jobsA)
			a.waitLeader(t)
			waitUntil(t, "a's catch-up", func() bool { return a.r.Scheduled() == 1 })
			b := startHandingReplica(t, ep, "b", tasksB)
			b.r.SetJobs(jobs())

			if manual {
				if _, err := a.control().Trigger(context.Background(), budgetJob, "corr-budget", "test", ""); err != nil {
					t.Fatal(err)
				}
			} else {
				a.r.Fire(runner.Slot{Job: jobsA[0], Time: slotAhead()})
			}
			waitUntil(t, "attempt 1's record", func() bool { return len(attemptsOf(t, a)) == 1 })
			a.stop() // during the backoff after attempt 1: the retry is left to b
			b.waitLeader(t)
			waitUntil(t, "b's attempts 2 and 3", func() bool { return len(attemptsOf(t, b)) == 3 })
			c := handOverToC(t, ep, b, tasksC, jobs, manual) // during the backoff after attempt 3

			recs := attemptsOf(t, c)
			nodes := []string{"a", "b", "b", "c"}
			if len(recs) != len(nodes) || len(tasksC.called()) != 1 {
				t.Fatalf("attempts%s (c ran %d); want 4 (retries.max 3 + 1): a's 1, b's 2 and 3, c's 4",
					attemptList(recs), len(tasksC.called()))
			}
			for i, r := range recs {
				if r.Attempt != i+1 || r.Node != nodes[i] || r.State != observability.OutcomeFailure {
					t.Errorf("attempts%s; want 1 to 4 failed, run by %v", attemptList(recs), nodes)
					break
				}
			}
		})
	}
}

// The same for a re-run of an attempt the drain timeout cut off
// (at-least-once: it needs no retries, and uses none of them): with
// retries.max 1, a's attempt 1 is cut, b runs it again as attempt 2,
// which fails, and hands the shard over to c while the retry waits: c
// runs the retry, attempt 3, and no more. Two attempts ran to an answer
// (retries.max + 1), plus the one cut off. Before the fix, c ran attempt
// 3 and then a retry of its own, attempt 4.
func TestRerunOfACutAttemptThenLeftRetryKeepsTheBound(t *testing.T) {
	ep := startEtcd(t)
	jobs := budgetJobs(1)
	tasksA := newGatedTasks() // never opened: attempt 1 runs until the drain timeout cuts it
	a := startReplica(t, ep, "a", tasksA, runner.Options{})
	jobsA := jobs()
	a.r.SetJobs(jobsA)
	a.waitLeader(t)
	waitUntil(t, "a's catch-up", func() bool { return a.r.Scheduled() == 1 })
	tasksB, tasksC := failing(1), failing(2)
	b := startHandingReplica(t, ep, "b", tasksB)
	b.r.SetJobs(jobs())

	a.r.Fire(runner.Slot{Job: jobsA[0], Time: slotAhead()})
	waitUntil(t, "a's attempt 1 running", func() bool { return len(tasksA.correlations()) == 1 })
	a.stop() // a drain of 1 s cuts attempt 1: left to b
	b.waitLeader(t)
	waitUntil(t, "b's re-run, attempt 2", func() bool { return len(attemptsOf(t, b)) == 2 })
	c := handOverToC(t, ep, b, tasksC, jobs, false) // during the backoff after attempt 2

	recs := attemptsOf(t, c)
	want := []struct{ node, state string }{
		{"a", observability.OutcomeCanceled}, {"b", observability.OutcomeFailure}, {"c", observability.OutcomeFailure}}
	if len(recs) != len(want) || len(tasksC.called()) != 1 {
		t.Fatalf("attempts%s (c ran %d); want a's 1 cut, b's re-run 2 and c's retry 3: retries.max + 1 answered, plus the re-run",
			attemptList(recs), len(tasksC.called()))
	}
	for i, r := range recs {
		if r.Attempt != i+1 || r.Node != want[i].node || r.State != want[i].state {
			t.Errorf("attempts%s; want %+v", attemptList(recs), want)
			break
		}
	}
}

// The race behind the manual-trigger case above: a new term's first copy
// of a request, from the watch, can predate the last write of the term
// before it (the claim naming its left retry, written as it handed the
// shard over). Decided from that copy, the claim failed (the request had
// changed) and the term, which had taken the request, never decided it
// again: it stayed stored, and its retry never ran. It is now read again
// and decided from what is stored: the left retry runs, once, as the
// last attempt the budget allows (from the stale copy, which names no
// retry, it would count as a re-run of a cut attempt, with a retry more).
func TestTriggerDecidedFromAStaleCopyIsDecidedAgain(t *testing.T) {
	b, tasks := setupScripted(t, "boom", "boom", "boom")
	term := b.waitLeader(t)
	j := job("d", runner.OverlapForbid)
	j.Delivery = runner.DeliveryAtLeastOnce
	j.Retries = runner.Retries{Max: 1, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	b.r.SetJobs([]*runner.Job{j})

	// An older term's claim of the request: attempt 1 running, then
	// failed with its retry left to the next leader.
	now := time.Now().UTC().Truncate(time.Millisecond)
	claim := runner.Record{Job: "d", ScheduledTime: now, State: "running", RunID: "run-lost", Attempt: 1,
		Node: "gone", FencingToken: term.Token - 1, Manual: true, TriggerID: "tr-1", CorrelationID: "corr-stale"}
	put := func(claim runner.Record) int64 {
		body, _ := json.Marshal(runner.TriggerRequest{CorrelationID: "corr-stale", RequestedAt: now, By: "test", Claim: &claim})
		resp, err := b.admin.Put(context.Background(), "/pacer/t/triggers/d/tr-1", string(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	stale := put(claim)
	staleBody, _ := json.Marshal(runner.TriggerRequest{CorrelationID: "corr-stale", RequestedAt: now, By: "test", Claim: &claim})
	claim.RetryAt = now.Add(time.Second)
	put(claim)

	// As a lagging watch hands it over: the copy before the last write.
	b.r.HandleTriggers([]coord.Trigger{{Job: "d", ID: "tr-1", Body: staleBody, Revision: stale}})
	deadline := time.Now().Add(10 * time.Second)
	for storedTriggers(t, b.admin, "d") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("request not decided 10 s after the term read a stale copy of it (%d calls)", len(tasks.called()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tasks.called()); n != 1 {
		t.Fatalf("%d attempts ran; want 1: the left retry, attempt 2, the last retries.max 1 allows", n)
	}
	var ran []int
	for _, r := range records(t, b, "d") {
		if r.State != "skipped" {
			ran = append(ran, r.Attempt)
		}
	}
	if !slices.Equal(ran, []int{2}) {
		t.Fatalf("attempts recorded %v, want [2]", ran)
	}
}
