//go:build chaos

package main

// Scenario 11 of docs/chaos-results.md: clock jumps and skew on a runner.
//
// Go reads the clock through the vDSO, so libfaketime cannot shift a pacer
// process. These replicas run a pacer built with the tag faultclock instead
// (runner/clock_faultclock.go): the runner's wall clock, which alone decides
// which slots are due, is shifted by the offset in a file the test writes.
// Leases, the self-fence and every timeout use the monotonic clock and are
// not shifted, exactly as a real clock step leaves them.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultClockBuild builds pacer with the fault clock once per test binary.
var faultClockBuild struct {
	once     sync.Once
	bin, err string
}

func faultClockPacer(t *testing.T) string {
	t.Helper()
	faultClockBuild.once.Do(func() {
		bin := filepath.Join(binDir, "pacer-faultclock")
		cmd := exec.Command("go", "build", "-tags", "faultclock", "-o", bin, "github.com/pacerun/pacer/cmd/pacer")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			faultClockBuild.err = fmt.Sprintf("go build -tags faultclock: %v\n%s", err, out)
			return
		}
		faultClockBuild.bin = bin
	})
	if faultClockBuild.err != "" {
		t.Fatal(faultClockBuild.err)
	}
	return faultClockBuild.bin
}

// clockReplica is a runner with a fault clock, shifted by the offset in the
// file clock.
type clockReplica struct {
	*proc
	clock string
}

// startClockReplica starts a fault-clock runner whose wall clock is offset
// from the start, logging at debug level (refused claims are debug lines).
func startClockReplica(t *testing.T, name string, eps []string, jobs string, offset time.Duration) clockReplica {
	t.Helper()
	chaosBinaries(t)
	r := clockReplica{clock: filepath.Join(t.TempDir(), name+".clock")}
	if offset != 0 {
		r.write(offset)
	}
	httpAddr := freeAddr(t)
	cfg := "observability: {log: {level: debug}}" + replicaConfig(t, name, httpAddr, eps, jobs)
	r.proc = startPacerBin(t, faultClockPacer(t), name, httpAddr, cfg, "PACER_FAULT_CLOCK_FILE="+r.clock)
	r.waitLogs("the fault clock's warning", 30*time.Second, func([]logLine) bool {
		return len(rawWith(r.proc, "fault clock compiled in")) > 0
	})
	return r
}

// write replaces the offset file in one step: the runner must never read
// it half written.
func (r clockReplica) write(offset time.Duration) {
	tmp := r.clock + ".tmp"
	must(os.WriteFile(tmp, []byte(offset.String()), 0o644))
	must(os.Rename(tmp, r.clock))
}

// shift sets the runner's clock offset and waits until the runner says it
// follows it.
func (r clockReplica) shift(offset time.Duration) {
	r.t.Helper()
	const shifted = "fault clock: wall clock shifted"
	n := len(rawWith(r.proc, shifted))
	r.write(offset)
	r.waitLogs(fmt.Sprintf("%s's clock to shift by %s", r.name, offset), 10*time.Second, func([]logLine) bool {
		ls := rawWith(r.proc, shifted)
		return len(ls) > n && strings.HasSuffix(ls[len(ls)-1], "offset="+offset.String())
	})
}

// rawWith returns p's stderr lines, JSON or not, that contain s.
func rawWith(p *proc, s string) []string {
	var out []string
	for _, l := range strings.Split(p.rawLogs(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// slotOf returns a log line's scheduled_time.
func slotOf(l logLine) time.Time {
	ts, _ := time.Parse(time.RFC3339Nano, l.str("scheduled_time"))
	return ts.UTC()
}

// refusedAfter returns the slots whose claim p found already taken, logged
// after ts.
func refusedAfter(lines []logLine, ts time.Time) []time.Time {
	var out []time.Time
	for _, l := range match(lines, msgIs("slot already claimed")) {
		if logTime(l).After(ts) {
			out = append(out, slotOf(l))
		}
	}
	return out
}

// startedAfter returns the "run started" lines logged after ts whose
// slot is after from.
func startedAfter(lines []logLine, ts, from time.Time) []logLine {
	var out []logLine
	for _, l := range match(lines, msgIs("run started")) {
		if logTime(l).After(ts) && slotOf(l).After(from) {
			out = append(out, l)
		}
	}
	return out
}

// Scenario 11: clock jumps on the leader and skew on standbys. Claims are
// keyed by the slot, and guarded by the fencing token, so a clock that is
// wrong changes when a runner thinks a slot is due, never whether a slot
// can run twice.
//
// Three replicas: r1 leads with a true clock; r2 (clock 30 s behind) and
// r3 (30 s ahead) wait behind it, in that order.
//
//	a. r1's clock jumps an hour forward: it runs the slots an hour ahead and
//	   reports the hour in between as missed. It steps back to the true
//	   time: the scheduler notices the step (wall clock behind the monotonic
//	   clock) and runs the true time's slots again, rather than idling for
//	   the hour. Then its clock steps further back, to just after its first
//	   slot: it re-lives every slot it ran, each claim is refused as taken,
//	   and it goes on with the slots the forward jump skipped, which nobody
//	   ran. No leadership change throughout: leases and the fence use the
//	   monotonic clock.
//	b. r1 is killed (kill -9). r2 leads, its schedule 30 s behind: it
//	   re-lives the slots r1 ran, each refused, before it runs the next
//	   (F includes that wait). Then r2 is killed, and r3 leads, 30 s ahead:
//	   it runs slots 30 s early.
//
// D must be 0. M is counted up to the last slot before the hour ahead (the
// slots in between have not come due) and must be 0 too: r3's misfire
// catch-up starts from the last slot claimed before its own now, so the
// slots r1 claimed an hour early do not hide the ones missed meanwhile.
func TestChaosClockJumps(t *testing.T) {
	skipChaos(t)
	eps := endpoints(startCluster(t, 1))
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	jobs := ledgerJob(path, "100ms")
	res := chaosResult{scenario: 11}

	// The cluster's one shard goes to the member the assignment names
	// (shard.Assign): "one" of the three, "two" of the two left after
	// one is killed. So r1 leads throughout, then r2, then r3, with no
	// hand-over in between.
	r1 := startClockReplica(t, "one", eps, jobs, 0)
	r1.waitLogs("r1 to lead", 30*time.Second, leading)
	r2 := startClockReplica(t, "two", eps, jobs, -30*time.Second)
	r2.waitLogs("r2 to join", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("job set is the cluster's: may lead"))) > 0 })
	r3 := startClockReplica(t, "three", eps, jobs, 30*time.Second)
	ps := []*proc{r1.proc, r2.proc, r3.proc}
	for _, p := range ps {
		p.waitLogs("the scheduler to start", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("scheduler started"))) > 0 })
	}
	if l := waitLeader(t, ps, 30*time.Second); l != r1.proc {
		t.Fatalf("%s leads, want r1", l.name)
	}
	waitRunsAfter(r1.proc, 5, time.Time{}, 30*time.Second)
	first := readLedger(t, path)[0].ScheduledTime

	// a. An hour forward, held while r1 runs three slots of that hour.
	jumped := time.Now()
	r1.shift(time.Hour)
	res.runs++
	r1.waitLogs("three runs an hour ahead", 30*time.Second, func(ls []logLine) bool {
		return len(startedAfter(ls, jumped, jumped.Add(30*time.Minute))) >= 3
	})
	for _, l := range match(r1.logs(), msgIs("slots missed while the scheduler could not run")) {
		t.Logf("r1 after the forward jump: %q missed=%v", l.str("msg"), l["missed"])
	}

	// Back to the true time: r1 notices the step and runs today's slots.
	back := time.Now()
	r1.shift(0)
	res.runs++
	r1.waitLogs("r1 to run a slot of the true time", 15*time.Second, func(ls []logLine) bool {
		for _, l := range startedAfter(ls, back, time.Time{}) {
			if slotOf(l).Before(back.Add(time.Minute)) {
				return true
			}
		}
		return false
	})
	if len(match(r1.logs(), msgIs("wall clock stepped back; every job's next slot computed again from the new time"))) == 0 {
		t.Error("r1 did not log the step back")
	}
	t.Logf("r1 ran the true time's slots again %s after its clock stepped back",
		logTime(startedAfter(r1.logs(), back, time.Time{})[0]).Sub(back).Round(time.Millisecond))

	// Further back, to just after r1's first slot.
	behind := -(time.Since(first) - 500*time.Millisecond).Round(time.Millisecond)
	if behind < -25*time.Second {
		t.Fatalf("setup too slow: r1 would lag %s, want less than r2's 30 s skew", -behind)
	}
	stepped := time.Now()
	r1.shift(behind)
	res.runs++
	r1.waitLogs("r1 to refuse three slots it already ran", 30*time.Second, func(ls []logLine) bool {
		return len(refusedAfter(ls, stepped)) >= 3
	})
	relived := waitRunsAfter(r1.proc, 2, stepped, 60*time.Second)
	t.Logf("r1, %s behind: first run after the step is slot %s, %d slots refused before it",
		-behind, slotOf(relived).Format(time.TimeOnly), len(refusedAfter(r1.logs(), stepped)))
	noLeaderChange(t, ps, jumped)

	// b. Kill r1 once its last slot is more than 30 s after its first, so
	// that r2 re-lives slots that r1 ran.
	waitRunsAfter(r1.proc, 1, first.Add(32*time.Second), 60*time.Second)
	kill := func(p *proc) time.Time {
		pids := pluginPIDs(p.logs())
		fault := time.Now()
		p.signal(syscall.SIGKILL)
		p.wait(10 * time.Second)
		for _, pid := range pids {
			waitGone(t, pid, 10*time.Second)
		}
		res.runs++
		return fault
	}
	takeOver := func(want clockReplica, fault time.Time, candidates ...*proc) {
		t.Helper()
		if l := waitLeader(t, candidates, chaosTTL+10*time.Second); l != want.proc {
			t.Fatalf("%s leads, want %s", l.name, want.name)
		}
		became, _ := firstAfter(want.logs(), fault, msgIs("became leader"))
		if d := logTime(became).Sub(fault); d > chaosTTL+3*time.Second {
			t.Errorf("%s became leader %s after the fault", want.name, d.Round(time.Millisecond))
		}
		started := waitRunsAfter(want.proc, 2, fault, 60*time.Second)
		res.F = append(res.F, logTime(started).Sub(fault))
		refused := refusedAfter(want.logs(), fault)
		t.Logf("%s led %s after the fault, refused %d slots already claimed, then ran slot %s %s after the fault",
			want.name, logTime(became).Sub(fault).Round(time.Millisecond), len(refused),
			slotOf(started).Format(time.TimeOnly), logTime(started).Sub(fault).Round(time.Millisecond))
	}
	fault := kill(r1.proc)
	takeOver(r2, fault, r2.proc, r3.proc)
	if n := len(refusedAfter(r2.logs(), fault)); n < 3 {
		t.Errorf("r2 (30 s behind) refused %d slots r1 had claimed, want at least 3", n)
	}
	fault = kill(r2.proc)
	takeOver(r3, fault, r3.proc)

	res.Z = stopAll(t, ps)
	res.checkLedgerUntil(t, path, eps, time.Now().Add(10*time.Minute))

	// Every refused claim is of a slot that ran once, before the refusal,
	// or whose claim's run never finished (its runner was killed).
	ran := map[time.Time][]ledgerEntry{}
	for _, e := range res.entries {
		if e.Accepted {
			ran[e.ScheduledTime.UTC()] = append(ran[e.ScheduledTime.UTC()], e)
		}
	}
	refusals, once := 0, 0
	for _, p := range ps {
		for _, l := range match(p.logs(), msgIs("slot already claimed")) {
			refusals++
			switch es := ran[slotOf(l)]; {
			case len(es) == 1 && es[0].Start.Before(logTime(l)):
				once++
			case len(es) == 0:
				t.Logf("%s refused slot %s: claimed, no accepted run (its runner was killed mid-run)", p.name, slotOf(l).Format(time.TimeOnly))
			default:
				t.Errorf("%s refused slot %s: accepted runs %+v", p.name, slotOf(l).Format(time.TimeOnly), es)
			}
		}
	}
	t.Logf("%d claims refused as taken; %d of slots that had run once before", refusals, once)
	res.report(t)
	if res.D != 0 || res.M != 0 || res.Z != 0 {
		t.Fatalf("D=%d M=%d Z=%d, want 0", res.D, res.M, res.Z)
	}
}
