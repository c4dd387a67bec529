package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
)

func baseJob() *runner.Job {
	return &runner.Job{ID: "j", Plugin: "shell", Task: "exec", Schedule: schedule.Every(time.Second), Spec: "@every 1s",
		Timezone: "UTC", Timeout: time.Minute, Overlap: runner.OverlapForbid, MaxConcurrency: 10,
		Params:   map[string]any{"command": []any{"echo", "hi"}, "env": map[string]any{"A": "1"}},
		Retries:  runner.Retries{Max: 1, InitialBackoff: time.Second, MaxBackoff: time.Minute},
		Misfire:  runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Minute},
		Delivery: runner.DeliveryAtMostOnce}
}

// Every field that decides what a job does or when changes its hash; a
// field added to Job fails this test until it is listed here (and so
// checked to be hashed).
func TestDefinitionHashCoversEveryField(t *testing.T) {
	changes := map[string]func(j *runner.Job){
		"ID":             func(j *runner.Job) { j.ID = "k" },
		"Plugin":         func(j *runner.Job) { j.Plugin = "http" },
		"Task":           func(j *runner.Job) { j.Task = "get" },
		"Spec":           func(j *runner.Job) { j.Spec = "@every 2s" },
		"Timezone":       func(j *runner.Job) { j.Timezone = "Europe/Berlin" },
		"Timeout":        func(j *runner.Job) { j.Timeout = time.Hour },
		"Overlap":        func(j *runner.Job) { j.Overlap = runner.OverlapAllow },
		"MaxConcurrency": func(j *runner.Job) { j.MaxConcurrency = 3 },
		"Params":         func(j *runner.Job) { j.Params["env"].(map[string]any)["A"] = "2" },
		"Retries":        func(j *runner.Job) { j.Retries.MaxBackoff = time.Hour },
		"Misfire":        func(j *runner.Job) { j.Misfire.Grace = 0 },
		"Delivery":       func(j *runner.Job) { j.Delivery = runner.DeliveryAtLeastOnce },
		"Jitter":         func(j *runner.Job) { j.Jitter = time.Second },
		"InheritEnv":     func(j *runner.Job) { j.InheritEnv = []string{"AWS_*"} },
	}
	// Schedule is parsed from Spec and Timezone; shard follows from ID and
	// the shard count, which the set's manifest carries.
	unhashed := []string{"Schedule", "shard"}
	base := baseJob().DefinitionHash()
	typ := reflect.TypeFor[runner.Job]()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if slices.Contains(unhashed, name) {
			continue
		}
		change, ok := changes[name]
		if !ok {
			t.Errorf("Job.%s is not covered: add a change of it to this test (and make sure it is hashed)", name)
			continue
		}
		j := baseJob()
		change(j)
		if j.DefinitionHash() == base {
			t.Errorf("changing Job.%s leaves the definition hash unchanged", name)
		}
	}
}

func TestDefinitionHashIgnoresFormAndOrder(t *testing.T) {
	a, b := baseJob(), baseJob()
	b.Spec = "@every   1000ms" // same schedule, written otherwise
	b.Schedule = schedule.Every(time.Second)
	b.Params = map[string]any{"env": map[string]any{"A": "1"}, "command": []any{"echo", "hi"}}
	if a.DefinitionHash() != b.DefinitionHash() {
		t.Fatal("same job, different hash")
	}
	c := baseJob()
	c.Spec = "0 * * * * *"
	d := baseJob()
	d.Spec = " 0  *  * * * * "
	if c.DefinitionHash() != d.DefinitionHash() {
		t.Fatal("whitespace in a cron spec changed the hash")
	}
	x, y := baseJob(), baseJob()
	x.ID, y.ID = "x", "y"
	s1 := runner.JobSetOf([]*runner.Job{x, y}, 1)
	s2 := runner.JobSetOf([]*runner.Job{y, x}, 1)
	if s1.Fingerprint != s2.Fingerprint || len(s1.Jobs) != 2 {
		t.Fatalf("job order changed the fingerprint: %s vs %s", s1.Fingerprint, s2.Fingerprint)
	}
	y.Timeout = 2 * time.Minute
	if runner.JobSetOf([]*runner.Job{x, y}, 1).Fingerprint == s1.Fingerprint {
		t.Fatal("a changed job left the fingerprint unchanged")
	}
	if runner.JobSetOf([]*runner.Job{x}, 1).Fingerprint == s1.Fingerprint {
		t.Fatal("a removed job left the fingerprint unchanged")
	}
}

// A new leader puts the slots that came due while the leader of the time
// did not have the job (or had it defined otherwise) down to that, not to
// nobody leading: they get skip records with reason not_in_job_set, and do
// not run; slots missed while the leader had the job follow the misfire
// policy as before. This fails on the code before job sets were recorded:
// every missed slot was recorded as "no replica led".
func TestCatchUpNamesSlotsTheLeaderDidNotHave(t *testing.T) {
	b, tasks := setupScripted(t)
	term := b.waitLeader(t)
	ctx := context.Background()
	j := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Spec: "@every 1s", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	other := &runner.Job{ID: "other", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Spec: "@every 1h", Timeout: time.Minute}
	b.r.SetJobs([]*runner.Job{j, other})

	// The history: 20 s ago a leader ran a set without x; 10 s ago one ran
	// x as defined here, until it died 5 s ago. x's last claim is 21 s old.
	now := time.Now().UTC().Truncate(time.Second)
	without := runner.JobSetOf([]*runner.Job{other}, 1)
	changed := *j
	changed.Spec = "@every 2s"
	differently := runner.JobSetOf([]*runner.Job{&changed, other}, 1)
	with := runner.JobSetOf([]*runner.Job{j, other}, 1)
	for _, e := range []struct {
		set coord.JobSet
		at  time.Duration
	}{{with, -30 * time.Second}, {without, -20 * time.Second}, {differently, -15 * time.Second}, {with, -10 * time.Second}} {
		if err := b.coord.RecordEpoch(ctx, term, e.set, now.Add(e.at)); err != nil {
			t.Fatal(err)
		}
	}
	last := now.Add(-21 * time.Second)
	if err := b.coord.Claim(ctx, term, "x", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	b.r.CatchUp(term)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, term)

	ran := ranSlots(tasks.called())
	skipped := map[time.Time]runner.Record{}
	for _, r := range records(t, b, "x") {
		if r.State == "skipped" {
			skipped[r.ScheduledTime] = r
		}
	}
	for s := last.Add(time.Second); s.Before(now); s = s.Add(time.Second) {
		rec, skip := skipped[s]
		switch age := now.Sub(s); {
		case age > 10*time.Second: // the leaders of the time lacked x as defined here
			if !skip || rec.Reason != runner.SkipNotInJobSet || ran[s] {
				t.Errorf("slot -%s: skipped=%v (%+v) ran=%v; want skipped as not_in_job_set", age, skip, rec, ran[s])
				continue
			}
			want := "did not have the job"
			if age <= 15*time.Second {
				want = "had the job defined differently"
			}
			if !strings.Contains(rec.Error, want) || !strings.Contains(rec.Error, coord.Short(without.Fingerprint)) &&
				!strings.Contains(rec.Error, coord.Short(differently.Fingerprint)) {
				t.Errorf("slot -%s: reason text %q, want it to say %q and name the leader's job set", age, rec.Error, want)
			}
		default: // the leader had x: missed for want of a leader; policy all runs them
			if !ran[s] || skip {
				t.Errorf("slot -%s: ran=%v skipped=%v (%+v); want run by the misfire policy", age, ran[s], skip, rec)
			}
		}
	}
	if got := testutil.ToFloat64(b.metrics.JobSkipped.WithLabelValues("x", runner.SkipNotInJobSet)); got != 10 {
		t.Fatalf("skipped{not_in_job_set} = %v, want 10", got)
	}
}

// A slot missed while a leader held the shard and did not claim it (it
// was stopped, paused or cut off from etcd before its lease ran out) is
// put down to that leader, named with its fencing token, not to nobody
// leading. Before, every such slot read "no replica led at the scheduled
// time" (attack 7's note: a frozen leader's slots).
func TestCatchUpNamesTheLeaderThatDidNotClaim(t *testing.T) {
	b, _ := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	j := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Spec: "@every 1s", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireSkip}}
	b.r.SetJobs([]*runner.Job{j})
	now := time.Now().UTC().Truncate(time.Second)
	if err := b.coord.RecordEpoch(ctx, first, runner.JobSetOf([]*runner.Job{j}, 1), now.Add(-10*time.Second)); err != nil {
		t.Fatal(err)
	}
	last := now.Add(-8 * time.Second)
	if err := b.coord.Claim(ctx, first, "x", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// The first term's lease goes, as when its replica stops answering past
	// the TTL; the coordinator leads again under a new token, and catches up.
	failover(t, b, first)

	want := "not claimed: n1 (fencing token " + fmt.Sprint(first.Token) + "), the last to lead shard 0"
	var found bool
	for _, rec := range records(t, b, "x") {
		if rec.State != "skipped" || rec.Reason != runner.SkipMisfire || !rec.ScheduledTime.Equal(last.Add(time.Second)) {
			continue
		}
		found = true
		if !strings.Contains(rec.Error, want) || strings.Contains(rec.Error, "no replica led") {
			t.Errorf("misfire record of the slot after the last claim says %q, want it to name the leader that held the shard: %q", rec.Error, want)
		}
	}
	if !found {
		t.Fatalf("no misfire record from the slot after the last claim (%s): %+v", last.Add(time.Second), records(t, b, "x"))
	}
}

// A leader records the job set it runs when its term starts and whenever
// it changes during the term.
func TestLeaderRecordsEachJobSetItRuns(t *testing.T) {
	b, _ := setupScripted(t)
	term := b.waitLeader(t)
	// The term's first epoch names the set the runner led with (none yet);
	// it is written in the background once the term starts. Wait for it, so
	// the sets below are epochs of their own, not raced onto its key.
	termSets := func() []string {
		es, err := b.coord.Epochs(context.Background(), 0)
		if err != nil {
			return nil
		}
		var got []string // consecutive epochs with one set count once
		for _, e := range es {
			if e.Token == term.Token && (len(got) == 0 || got[len(got)-1] != e.JobSet) {
				got = append(got, e.JobSet)
			}
		}
		return got
	}
	waitCount(t, "the term's first epoch", func() float64 { return float64(len(termSets())) }, 1)
	opening := termSets()[0]
	first := []*runner.Job{job("a", "")}
	b.r.SetJobs(first)
	second := []*runner.Job{job("a", ""), job("b", "")}
	b.r.SetJobs(second)
	want := []string{opening, runner.JobSetOf(first, 1).Fingerprint, runner.JobSetOf(second, 1).Fingerprint}
	waitCount(t, "the term's epochs to name the opening set, the first, then the second", func() float64 {
		if slices.Equal(termSets(), want) {
			return 1
		}
		return 0
	}, 1)
	set, err := b.coord.JobSet(context.Background(), want[2])
	if err != nil || len(set.Jobs) != 2 {
		t.Fatalf("stored set %+v, %v", set, err)
	}
	rec, _ := json.Marshal(set.Jobs)
	t.Logf("stored job set %s: %s", coord.Short(want[2]), rec)
}

func manyJobs(n int) []*runner.Job {
	jobs := make([]*runner.Job, n)
	for i := range jobs {
		j := baseJob()
		j.ID = fmt.Sprintf("job-%05d", i)
		j.Params = map[string]any{"command": []any{"/usr/local/bin/report", "--shard", fmt.Sprint(i)}, "env": map[string]any{"REGION": "eu"}}
		jobs[i] = j
	}
	return jobs
}

// The cost of summing up a config's jobs, paid at start and at each reload,
// beside the whole of a reload's SetJobs (which includes it): the
// fingerprint's share of a reload.
func BenchmarkJobSetOf(b *testing.B) {
	for _, n := range []int{100, 10000} {
		jobs := manyJobs(n)
		b.Run(fmt.Sprintf("fingerprint/%d", n), func(b *testing.B) {
			for b.Loop() {
				runner.JobSetOf(jobs, 1)
			}
		})
		b.Run(fmt.Sprintf("reload/%d", n), func(b *testing.B) {
			r := runner.New(runner.Options{})
			defer r.Stop(context.Background())
			other := manyJobs(n)
			for _, j := range other {
				j.Timeout = 2 * time.Minute // every job changed: a new set each time
			}
			r.SetJobs(other) // the jobs' metric series exist, as on a running replica
			sets, i := [][]*runner.Job{jobs, other}, 0
			for b.Loop() {
				r.SetJobs(sets[i%2])
				i++
			}
		})
	}
}

// A definition hash is part of what replicas compare: a change of the
// canonical text (not of a job) would make replicas of two versions
// disagree on every job during an upgrade. These values are pinned; change
// them only with a note in the CHANGELOG that a mixed-version cluster
// disagrees until every replica runs the new version.
func TestDefinitionHashIsStable(t *testing.T) {
	j := baseJob()
	x, y := baseJob(), baseJob()
	x.ID, y.ID = "x", "y"
	y.InheritEnv, y.Jitter = []string{"AWS_*"}, 3*time.Second
	for _, tc := range []struct{ what, got, want string }{
		{"baseJob", j.DefinitionHash(), "c4aa46730156b010"},
		{"with inherit_env and jitter", y.DefinitionHash(), "26c55baf0c4934c3"},
		{"set of x and y", runner.JobSetOf([]*runner.Job{x, y}, 1).Fingerprint, "d7714e6e717f3ecdc15f7ad34e51b18ee77df6b05fcd33cc3b98c3c513baffe6"},
		// The SHA-256 of "#shards\t16/v1\nx\t434309b1bd918b05\ny\t26c55baf0c4934c3\n".
		{"set of x and y in 16 shards", runner.JobSetOf([]*runner.Job{x, y}, 16).Fingerprint, "ae58b5425514f5573354fd729fffb8914cb174e82d0a08e2005461dd4b6ecaa2"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.what, tc.got, tc.want)
		}
	}
}

// epochsFail is a JobSetStore whose epochs cannot be written (a permission
// missing on the key, a full etcd): reading works.
type epochsFail struct{ runner.JobSetStore }

func (epochsFail) RecordEpoch(context.Context, *coord.Term, coord.JobSet, time.Time) error {
	return errors.New("etcdserver: permission denied")
}

// An epoch only explains missed slots later; failing to write one must not
// hold up the new leader's catch-up of the slots missed before its term,
// nor its trigger decisions.
func TestCatchUpDoesNotWaitForTheEpoch(t *testing.T) {
	b, tasks := setupScripted(t)
	b.r.Stop(context.Background())
	b.r = runner.New(runner.Options{Node: "n1", Coord: b.coord, Tasks: tasks, Metrics: b.metrics,
		Tracer: b.tp.Tracer("t"), Logger: discardLogger(), JobSets: epochsFail{b.coord}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.r.Stop(ctx)
	})
	term := b.waitLeader(t)
	j := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Spec: "@every 1s", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireOnce, Grace: time.Hour}}
	b.r.SetJobs([]*runner.Job{j})
	last := time.Now().UTC().Truncate(time.Second).Add(-5 * time.Second)
	if err := b.coord.Claim(context.Background(), term, "x", last, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { b.r.OnTerm(term); close(done) }() // returns once the catch-up is done
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// End the term (its lease revoked), so that the waiting ends too.
		if ls, err := b.admin.Leases(context.Background()); err == nil {
			for _, l := range ls.Leases {
				_, _ = b.admin.Revoke(context.Background(), l.ID)
			}
		}
		<-done
		t.Fatal("the new leader's catch-up waited for an epoch that cannot be written")
	}
	waitCount(t, "runs of the slots missed before the term (misfire once)", func() float64 {
		n := 0.0
		for _, c := range tasks.called() {
			if c.Info.ScheduledTime.After(last) {
				n++
			}
		}
		return min(n, 1)
	}, 1)
}

// Attack 29, F1: a leader without job x (its set lacked it) handed the
// shard over gracefully; a slot of x due after it stopped firing, before
// the next leader (which has x) led, was recorded not_in_job_set against
// the leader that had stepped down, and not run, though x's misfire
// policy is all. The epoch of a term that handed the shard over ends
// where it stopped firing: such a slot is decided by the hand-over and
// the misfire policy, here run late. Slots due while that leader led
// without x are still recorded not_in_job_set.
func TestSlotAfterAHandOverIsNotPutDownToTheLeaderThatLeft(t *testing.T) {
	b, tasks := setupScripted(t)
	first := b.waitLeader(t)
	ctx := context.Background()
	x := &runner.Job{ID: "x", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Second), Spec: "@every 1s", Timeout: time.Minute,
		Misfire: runner.Misfire{Policy: runner.MisfireAll, Grace: time.Hour}}
	other := &runner.Job{ID: "other", Plugin: "p", Task: "t", Schedule: schedule.Every(time.Hour), Spec: "@every 1h", Timeout: time.Minute}
	b.r.SetJobs([]*runner.Job{x, other})

	// The first term ran x until 20 s ago, then a set without it; it
	// stopped firing 12 s ago and resigned 11 s ago (a hand-over mark the
	// next term takes more than a lease TTL later: the slots since then
	// came due while nobody led).
	now := time.Now().UTC().Truncate(time.Second)
	with, without := runner.JobSetOf([]*runner.Job{x, other}, 1), runner.JobSetOf([]*runner.Job{other}, 1)
	for _, e := range []struct {
		set coord.JobSet
		at  time.Duration
	}{{with, -30 * time.Second}, {without, -20 * time.Second}} {
		if err := b.coord.RecordEpoch(ctx, first, e.set, now.Add(e.at)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.coord.Claim(ctx, first, "x", now.Add(-25*time.Second), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	stopped := now.Add(-12 * time.Second)
	b.putHandOver(t, first, stopped, now.Add(-11*time.Second))
	second := failover(t, b, first)
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopAfterRuns(stop, b.r, second)

	ran, absent := ranSlots(tasks.called()), notInJobSet(t, b, "x")
	for s := now.Add(-24 * time.Second); s.Before(now.Add(-2 * time.Second)); s = s.Add(time.Second) {
		notIn := !s.Before(now.Add(-20*time.Second)) && s.Before(stopped)
		if ran[s] == notIn || (absent[s] > 0) != notIn {
			t.Errorf("slot %s: ran %v, not_in_job_set %v; want %s", s.Sub(now), ran[s], absent[s] > 0,
				map[bool]string{true: "not_in_job_set (the leader of the time did not have x)", false: "run (misfire all)"}[notIn])
		}
	}
}
