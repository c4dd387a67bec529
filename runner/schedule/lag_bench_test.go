package schedule_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/schedule"
)

var lagDuration = flag.Duration("lag.duration", 4*time.Second,
	"how long BenchmarkFireLag lets each scheduler run")

const lagJobs = 10_000

// BenchmarkFireLag runs, one after the other in the same benchmark,
//
//	pacer:  the real runner.Scheduler (one min-heap, one timer) with 10,000
//	        jobs on schedule.Every(time.Second);
//	robfig: robfig/cron v3, cron.New(cron.WithSeconds()), with 10,000 jobs
//	        "@every 1s";
//
// each for -lag.duration (4s), and reports the lag of every fire, that is the
// time the callback ran minus the time the fire was scheduled for, as
// min/p50/p99/max in milliseconds, and the fires missed. With all 10,000
// jobs due at the same second, min is roughly the wake-up delay plus the
// work a scheduler does before its first callback, and max−min the time it
// takes to get through the batch.
//
// How the scheduled time is known:
//   - pacer passes it: Slot.Time, an epoch-aligned whole second.
//   - robfig does not pass it to the job. Its "@every 1s" is a
//     ConstantDelaySchedule whose Next(now) is now + 1s with the sub-second
//     part dropped, i.e. the next whole second, and every wake-up runs the
//     entries due at that whole second; so every fire robfig intends is at a
//     whole second, and the one a callback belongs to is the callback time
//     truncated to the second. That is exact while lag < 1s; a later callback
//     would be charged to the wrong second, which shows up as a count that
//     does not match (see missed).
//
// Both callbacks only read the clock and store it in a preallocated slice: the
// pacer one runs on the scheduler goroutine (its contract is "must not
// block"), robfig's on the goroutine robfig starts for every fire, so
// robfig's lag includes that goroutine's start.
//
// missed = 10,000 × (whole seconds in the window) − fires counted for them,
// where the window runs from the first whole second after start to the last
// whole second at least 1s before stop. For pacer, slots it reported to
// onMiss are missed too, and counted there.
func BenchmarkFireLag(b *testing.B) {
	var p, r lagStats
	for b.Loop() {
		runtime.GC()
		p = p.merge(measurePacer(lagJobs, *lagDuration))
		runtime.GC()
		r = r.merge(measureRobfig(lagJobs, *lagDuration))
	}
	p.report(b, "pacer")
	r.report(b, "robfig")
}

// recorder stores (callback time, scheduled time) pairs without locks.
type recorder struct {
	n         atomic.Int64
	actual    []int64 // UnixNano
	scheduled []int64 // UnixNano
}

func newRecorder(capacity int) *recorder {
	return &recorder{actual: make([]int64, capacity), scheduled: make([]int64, capacity)}
}

func (r *recorder) add(actual, scheduled int64) {
	if i := r.n.Add(1) - 1; i < int64(len(r.actual)) {
		r.actual[i], r.scheduled[i] = actual, scheduled
	}
}

type lagStats struct {
	lags     []time.Duration
	expected int64
	missed   int64
}

func (s lagStats) merge(o lagStats) lagStats {
	return lagStats{append(s.lags, o.lags...), s.expected + o.expected, s.missed + o.missed}
}

// stats keeps the fires scheduled inside the window [start, stop-1s], both
// truncated to whole seconds.
func (r *recorder) stats(start, stop time.Time, jobs int, reportedMissed int64) lagStats {
	first := start.Truncate(time.Second).Add(time.Second).UnixNano()
	last := stop.Truncate(time.Second).Add(-time.Second).UnixNano()
	seconds := (last-first)/int64(time.Second) + 1
	n := min(r.n.Load(), int64(len(r.actual)))
	lags := make([]time.Duration, 0, n)
	for i := range n {
		if sch := r.scheduled[i]; sch >= first && sch <= last {
			lags = append(lags, time.Duration(r.actual[i]-sch))
		}
	}
	expected := int64(jobs) * seconds
	return lagStats{lags: lags, expected: expected, missed: max(expected-int64(len(lags)), 0) + reportedMissed}
}

func (s lagStats) report(b *testing.B, name string) {
	if len(s.lags) == 0 {
		b.Fatalf("%s: no fires recorded", name)
	}
	slices.Sort(s.lags)
	q := func(p float64) float64 {
		return float64(s.lags[int(p*float64(len(s.lags)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0), name+"-min-ms")
	b.ReportMetric(q(0.50), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
	b.ReportMetric(q(1), name+"-max-ms")
	b.ReportMetric(float64(s.missed), name+"-missed")
	b.ReportMetric(float64(len(s.lags)), name+"-fires")
}

func measurePacer(jobs int, d time.Duration) lagStats {
	js := make([]*runner.Job, jobs)
	for i := range js {
		js[i] = &runner.Job{ID: fmt.Sprintf("job-%d", i), Schedule: schedule.Every(time.Second)}
	}
	rec := newRecorder(jobs * (int(d/time.Second) + 2))
	var missed atomic.Int64
	s := runner.NewScheduler(
		func(sl runner.Slot) { rec.add(time.Now().UnixNano(), sl.Time.UnixNano()) },
		func(m runner.Missed) { missed.Add(int64(m.N)) },
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	s.Set(js)
	go func() { s.Run(ctx); close(done) }()
	time.Sleep(d) // the measurement window, not synchronisation
	stop := time.Now()
	cancel()
	<-done
	return rec.stats(start, stop, jobs, missed.Load())
}

func measureRobfig(jobs int, d time.Duration) lagStats {
	rec := newRecorder(jobs * (int(d/time.Second) + 2))
	c := cron.New(cron.WithSeconds())
	job := func() {
		now := time.Now()
		rec.add(now.UnixNano(), now.Truncate(time.Second).UnixNano())
	}
	for range jobs {
		if _, err := c.AddFunc("@every 1s", job); err != nil {
			panic(err)
		}
	}
	start := time.Now()
	c.Start()
	time.Sleep(d) // the measurement window, not synchronisation
	stop := time.Now()
	<-c.Stop().Done() // waits for running callbacks
	return rec.stats(start, stop, jobs, 0)
}

// BenchmarkMemoryPerJob reports the heap growth per registered job, over
// 100,000 jobs, as B/job:
//
//	pacer:  runner.Scheduler.Set (the scheduler's own heap entries; the Jobs
//	        are built first) and, as B/job-incl-job, including building the
//	        runner.Job values with their IDs and Every schedules;
//	robfig: cron.AddFunc("@every 1s", f) on a stopped cron.Cron.
func BenchmarkMemoryPerJob(b *testing.B) {
	const n = 100_000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	perJob := func(before, after uint64) float64 { return (float64(after) - float64(before)) / n }
	b.Run("pacer", func(b *testing.B) {
		var sched, total float64
		for b.Loop() {
			h0 := heap()
			js := make([]*runner.Job, n)
			for i := range js {
				js[i] = &runner.Job{ID: fmt.Sprintf("job-%d", i), Schedule: schedule.Every(time.Second)}
			}
			h1 := heap()
			s := runner.NewScheduler(func(runner.Slot) {}, nil)
			s.Set(js)
			h2 := heap()
			runtime.KeepAlive(s)
			runtime.KeepAlive(js)
			sched, total = perJob(h1, h2), perJob(h0, h2)
		}
		b.ReportMetric(sched, "B/job")
		b.ReportMetric(total, "B/job-incl-job")
	})
	b.Run("robfig", func(b *testing.B) {
		var per float64
		for b.Loop() {
			h0 := heap()
			c := cron.New(cron.WithSeconds())
			for range n {
				if _, err := c.AddFunc("@every 1s", func() {}); err != nil {
					b.Fatal(err)
				}
			}
			h1 := heap()
			runtime.KeepAlive(c)
			per = perJob(h0, h1)
		}
		b.ReportMetric(per, "B/job")
	})
}

// BenchmarkFireLag100k: the Pacer scheduler alone with 100,000 jobs at
// @every 1s, reporting fire lag and the process's resident memory
// (VmRSS) at the end.
func BenchmarkFireLag100k(b *testing.B) {
	var p lagStats
	for b.Loop() {
		runtime.GC()
		p = p.merge(measurePacer(100_000, *lagDuration))
	}
	p.report(b, "pacer")
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				var kb float64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
				b.ReportMetric(kb/1024, "rss-MiB")
			}
		}
	}
}
