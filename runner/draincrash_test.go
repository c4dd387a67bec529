package runner_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// crashingTasks holds each call until crash is closed, then answers as
// the plugin host does for the runs of a plugin killed as hung for
// another run (pluginhost.ErrPluginCrashed); a call whose context ends
// first answers that.
type crashingTasks struct {
	gatedTasks
	crash chan struct{}
}

func (c *crashingTasks) Run(ctx context.Context, call pluginhost.Call) (*pluginhost.Result, error) {
	c.mu.Lock()
	c.calls = append(c.calls, &call)
	c.mu.Unlock()
	select {
	case <-c.crash:
		return nil, fmt.Errorf("%w: plugin %q was killed (%s) during task %q", pluginhost.ErrPluginCrashed, call.Plugin, pluginhost.ReasonHung, call.Task)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// W12 (attack 25): a stopping replica's plugin that did not answer
// (SIGSTOP) was killed as hung during the drain, before the drain timeout
// cut the runs: the at-least-once runs it had were recorded crashed and
// their claims (a slot's, a trigger request's) closed, so the next leader
// never ran them again. A run whose plugin dies during the drain (a stop,
// or a hand-over) is now decided as one the drain cuts off: under
// at-least-once it is recorded canceled, saying what happened, and left
// to the shard's next leader, which runs it again at once. Under
// at-most-once it stays what it was, crashed, and final.
func TestPluginDeathInTheDrainLeavesAtLeastOnceRunsToTheNextLeader(t *testing.T) {
	for _, tc := range []struct {
		name, policy string
		handing      bool // a's stop hands its shard over (Leave, its drain), as a SIGTERM does
	}{
		{"stop/" + runner.DeliveryAtLeastOnce, runner.DeliveryAtLeastOnce, false},
		{"hand-over/" + runner.DeliveryAtLeastOnce, runner.DeliveryAtLeastOnce, true},
		{"stop/" + runner.DeliveryAtMostOnce, runner.DeliveryAtMostOnce, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			jobs := func() []*runner.Job {
				sched, manual := job("sched", runner.OverlapForbid), job("manual", runner.OverlapForbid)
				sched.Delivery, manual.Delivery = tc.policy, tc.policy
				return []*runner.Job{sched, manual}
			}
			ep := startEtcd(t)
			startOn := func(node string, tasks runner.TaskRunner) *replica {
				if tc.handing {
					return startHandingReplica(t, ep, node, tasks)
				}
				return startReplica(t, ep, node, tasks, runner.Options{})
			}
			tasksA := &crashingTasks{crash: make(chan struct{})}
			a := startOn("a", tasksA)
			jobsA := jobs()
			a.r.SetJobs(jobsA)
			first := a.waitLeader(t)
			waitUntil(t, "a's catch-up", func() bool { return a.r.Scheduled() == 2 })
			a.r.Fire(runner.Slot{Job: jobsA[0], Time: slotAhead()})
			if _, err := a.control().Trigger(ctx, "manual", "corr-manual", "test", ""); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "both runs on a", func() bool { return len(tasksA.correlations()) == 2 })

			tasksB := newGatedTasks()
			close(tasksB.gate)
			b := startOn("b", tasksB)
			b.r.SetJobs(jobs())
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				a.stop()
			}()
			select {
			case <-first.FiringStopped(): // a's drain has begun
			case <-time.After(15 * time.Second):
				t.Fatal("a's stop did not begin its drain")
			}
			close(tasksA.crash) // the plugin dies under both runs, before the drain timeout
			<-stopped
			b.waitLeader(t)
			waitUntil(t, "b's catch-up", func() bool { return b.r.Scheduled() == 2 })

			for _, id := range []string{"sched", "manual"} {
				waitUntil(t, id+": a's record", func() bool { return len(recordsOf(t, b.cli, id)) > 0 })
				cut := recordsOf(t, b.cli, id)[0] // by run ID: oldest first
				if tc.policy == runner.DeliveryAtMostOnce {
					if cut.State != observability.OutcomeCrashed || strings.Contains(cut.Error, "next leader") {
						t.Errorf("%s: a's record %+v; want crashed, final (at-most-once)", id, cut)
					}
					continue
				}
				if cut.State != observability.OutcomeCanceled || cut.Node != "a" || cut.Attempt != 1 ||
					!strings.Contains(cut.Error, "drain") || !strings.Contains(cut.Error, "killed (hung)") || !strings.Contains(cut.Error, "next leader") {
					t.Fatalf("%s: a's record %+v; want attempt 1 canceled, saying the plugin died in the drain, left to the next leader", id, cut)
				}
				waitUntil(t, id+": b's re-run", func() bool { return len(recordsOf(t, b.cli, id)) == 2 })
				again := recordsOf(t, b.cli, id)[1]
				if again.State != observability.OutcomeSuccess || again.Node != "b" || again.Attempt != 2 || again.CorrelationID != cut.CorrelationID {
					t.Errorf("%s: re-run %+v; want b's attempt 2, success, with a's correlation ID %s", id, again, cut.CorrelationID)
				}
			}
			if tc.policy == runner.DeliveryAtMostOnce {
				if calls := tasksB.correlations(); len(calls) != 0 {
					t.Errorf("b ran %q; want nothing (at-most-once)", calls)
				}
				return
			}
			waitUntil(t, "no trigger request kept", func() bool { return storedTriggers(t, b.cli, "manual") == 0 })
		})
	}
}
