package runner_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// refusingTasks refuse every call's params, as a task does through the
// SDKs' invalid-params error (gRPC InvalidArgument).
type refusingTasks struct{ calls atomic.Int32 }

func (f *refusingTasks) Run(context.Context, pluginhost.Call) (*pluginhost.Result, error) {
	f.calls.Add(1)
	return nil, fmt.Errorf("%w: field count: expected an integer", pluginhost.ErrInvalidParams)
}

// Attack 19, P5: params a task refuses are a configuration problem, the
// same at every attempt, but they were retried like a task failure. The
// attempt is recorded failure, "invalid params: …", and not retried.
func TestInvalidParamsAreNotRetried(t *testing.T) {
	b := setup(t)
	tasks := &refusingTasks{}
	b.useRunner(t, tasks)
	b.waitLeader(t)
	j := job("refused", "")
	j.Retries = runner.Retries{Max: 3, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	b.r.Fire(runner.Slot{Job: j, Time: slotAhead()})
	waitCount(t, "failures", func() float64 {
		return testutil.ToFloat64(b.metrics.JobRuns.WithLabelValues("refused", "p", observability.OutcomeFailure))
	}, 1)
	waitCount(t, "the slot's end", func() float64 {
		_, running := b.r.JobState("refused")
		return float64(running)
	}, 0)
	recs := records(t, b, "refused")
	if len(recs) != 1 {
		t.Fatalf("%d records %+v; want the one attempt's", len(recs), recs)
	}
	if r := recs[0]; r.State != observability.OutcomeFailure || r.Attempt != 1 || !strings.HasPrefix(r.Error, "invalid params: ") {
		t.Fatalf("record %+v; want attempt 1, failure, invalid params", r)
	}
	if n := tasks.calls.Load(); n != 1 {
		t.Fatalf("%d calls; want 1 (no retry of params the task refused)", n)
	}
}
