package runner_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// bigTextTasks is a TaskRunner whose task reports a progress message of
// progress bytes, then fails with an error of errBytes bytes and an output
// of output bytes (or succeeds, errBytes 0): texts within the 4 MiB a
// plugin may send, beyond what etcd takes in one request.
type bigTextTasks struct{ progress, errBytes, output int }

func (b bigTextTasks) Run(_ context.Context, c pluginhost.Call) (*pluginhost.Result, error) {
	c.OnProgress(pluginhost.Progress{Percent: 50, Message: "half " + strings.Repeat("PPPP ", b.progress/5)})
	res := &pluginhost.Result{Output: strings.Repeat("o", b.output)}
	if b.errBytes > 0 {
		res.TaskError = "failed: " + strings.Repeat("E", b.errBytes)
	}
	return res, nil
}

// runTwoSlots runs two slots of an overlap-forbid job one after the other
// and returns their records, newest first. Before the bounds, the first
// slot's record was refused by etcd and its claim stayed open: no record,
// and the second slot skipped as overlap, for ever (attack 17, K3).
func runTwoSlots(t *testing.T, b *bundle, id string) []runner.Record {
	t.Helper()
	j := job(id, runner.OverlapForbid)
	slot := slotAhead()
	b.r.Fire(runner.Slot{Job: j, Time: slot})
	waitCount(t, id+" records", func() float64 { return float64(len(records(t, b, id))) }, 1)
	waitCount(t, id+" running", func() float64 { _, n := b.r.JobState(id); return float64(n) }, 0)
	if jc, err := b.coord.JobClaims(context.Background(), id); err != nil || len(jc.Open) != 0 {
		t.Fatalf("claims of %s %+v (%v): the finished slot's claim is still open", id, jc, err)
	}
	b.r.Fire(runner.Slot{Job: j, Time: slot.Add(j.Timeout)})
	waitCount(t, id+" records", func() float64 { return float64(len(records(t, b, id))) }, 2)
	recs := records(t, b, id)
	if recs[0].State == "skipped" {
		t.Fatalf("the next slot was skipped: %+v", recs[0])
	}
	return recs
}

// A plugin's error and progress message are cut in the run record as its
// output is, with a note of the bytes cut: the record lands and the job's
// next slot runs.
func TestHugeErrorAndProgressAreCutInTheRecord(t *testing.T) {
	b := setup(t)
	b.useRunner(t, bigTextTasks{progress: 2_000_000, errBytes: 2_000_000})
	b.waitLeader(t)

	for i, rec := range runTwoSlots(t, b, "bigtext") {
		if rec.State != observability.OutcomeFailure {
			t.Errorf("record %d: state %q, want failure", i, rec.State)
		}
		if len(rec.Error) > 16<<10+64 || !strings.HasPrefix(rec.Error, "failed: ") || !strings.Contains(rec.Error, "\n[truncated ") {
			t.Errorf("record %d: error of %d bytes, ending %q: want at most 16 KiB with the cut noted", i, len(rec.Error), tail(rec.Error))
		}
		if len(rec.Progress) > 4<<10+64 || len(rec.Progress) < 3<<10 || !strings.HasPrefix(rec.Progress, "50% half ") || !strings.Contains(rec.Progress, "\n[truncated ") {
			t.Errorf("record %d: progress of %d bytes, ending %q: want about 4 KiB with the cut noted", i, len(rec.Progress), tail(rec.Progress))
		}
	}
	if n := testutil.ToFloat64(b.metrics.RecordsRefused); n != 0 {
		t.Errorf("pacer_run_records_refused_total = %v: a bounded record should fit", n)
	}
}

// A record etcd refuses as too large (here its output, given no bound that
// keeps it within etcd's limit: over the server's 1.5 MiB, and over the
// client's 2 MiB) is written again without its texts: its outcome kept,
// the refusal noted and counted, the slot's claim closed.
func TestRecordRefusedByEtcdIsWrittenStripped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		output int
	}{
		{"over etcd's request limit", 2_000_000},
		{"over the client's send limit", 3_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: bigTextTasks{output: tc.output}, Metrics: b.metrics,
				Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: b.coord, MaxOutputBytes: 4 << 20})
			b.hook.set(b.r)
			t.Cleanup(func() { b.r.Stop(context.Background()) })
			b.waitLeader(t)

			for i, rec := range runTwoSlots(t, b, "refused") {
				if rec.State != observability.OutcomeSuccess || rec.Output != "" || rec.Progress != "" ||
					!strings.Contains(rec.Error, "refused by etcd") {
					t.Errorf("record %d: state %q, output of %d bytes, progress %q, error %q: want success, the texts dropped and why",
						i, rec.State, len(rec.Output), rec.Progress, rec.Error)
				}
			}
			if n := testutil.ToFloat64(b.metrics.RecordsRefused); n != 2 {
				t.Errorf("pacer_run_records_refused_total = %v, want 2", n)
			}
		})
	}
}

func tail(s string) string { return s[max(0, len(s)-40):] }
