package pluginhost

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/sdk/proctree"
)

// Orphans of dead plugins.
//
// With Options.Subreaper the host's process is a child subreaper
// (PR_SET_CHILD_SUBREAPER, Linux): when a plugin process dies (kill -9, a
// crash, a kill for ignoring cancellation), whatever its tasks started, its
// commands and their setsid or daemonised descendants, is re-parented to the
// host's process instead of init. The host then owns those processes: after
// a plugin process is gone it kills every child of its own process that it
// did not start (and all that child's descendants) and waits until they are
// dead, before the call that saw the plugin die returns. So a retry never
// starts while a process of the attempt before it lives. It also reaps them.
//
// A plugin that is not a subreaper itself (one that does not use
// sdk/proctree, or a plugin in another language) loses the orphans of its
// runs to the host's process. So when a run ends, whatever it left there
// (no longer spared) is killed before the call returns, and a sweep runs
// every second besides those on SIGCHLD: adopting an orphan sends none.
//
// That rule needs every child of the process to be a plugin the host
// started: spawn is held (read) while a plugin process starts, and (write)
// while orphans are swept, so a plugin being started is never taken for an
// orphan. A live orphan whose environment names a run still in progress on
// a live plugin (PACER_RUN_ID) is left alone: a plugin that does not keep
// its own tree (not a subreaper) lost it, and its run decides.

// runIDEnv is the environment variable plugins set on the processes of a run.
const runIDEnv = "PACER_RUN_ID"

// enableSubreaper makes the host's process a subreaper and starts sweeping
// when a child exits.
func (h *Host) enableSubreaper() {
	if err := proctree.EnableSubreaper(); err != nil {
		h.log.Warn("not a child subreaper: processes a dead plugin leaves behind cannot be found and killed", "error", err)
		h.opts.Subreaper = false
		return
	}
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGCHLD)
	tick := time.NewTicker(sweepEvery)
	h.sweeper.Add(1)
	go func() {
		defer h.sweeper.Done()
		defer signal.Stop(ch)
		defer tick.Stop()
		for {
			select {
			case <-h.done:
				return
			case <-ch:
			case <-tick.C:
				if !h.orphaned(false) {
					continue
				}
			}
			_, _ = h.sweep(0)
		}
	}()
}

// sweepEvery is how often the host looks for orphans without a SIGCHLD.
const sweepEvery = time.Second

// orphaned reports whether the host's process has a child it did not
// start: an orphan to sweep (or reap). It reads only the host's children
// (childPIDs): with adopted, only those its main thread adopted, where
// orphans go.
func (h *Host) orphaned(adopted bool) bool {
	kids, err := childPIDs(adopted)
	if err != nil || len(kids) == 0 {
		return false
	}
	own := h.ownPIDs()
	for _, pid := range kids {
		if own[pid] == nil {
			return true
		}
	}
	return false
}

// orphanedSince is orphaned for a run that ended: it answers with a look
// that began after the call, shared by the runs that ended meanwhile (runs
// due together end together), so that runs ending together cost one look
// at the host's children, not one each. The rule afterRun relies on holds:
// what a run left when it ended is seen by a look that began after that.
func (h *Host) orphanedSince() bool {
	return h.looks.Do(func() bool { return h.orphaned(true) })
}

// afterRun ends what a run of a live plugin left below the host's process
// (see above) before the call returns: the kill is noted in the run's
// output, and processes that cannot be confirmed dead are named in
// ProcessesLeft (or the error), so that no retry starts while they live.
func (h *Host) afterRun(c Call, res *Result, err error) (*Result, error) {
	if !h.opts.Subreaper || !h.orphanedSince() {
		return res, err
	}
	killed, serr := h.sweep(h.opts.TreeTimeout)
	if len(killed) > 0 {
		h.log.Warn("killed processes a run left behind", "plugin", c.Plugin, "run_id", c.Info.RunID, "pids", killed)
		if res != nil {
			res.Output = strings.TrimSuffix(res.Output, "\n") + fmt.Sprintf("\n[the run left %d processes outside its plugin; killed: pids %s]",
				len(killed), joinPIDs(killed))
		}
	}
	if serr != nil {
		h.log.Error("processes a run left behind are still alive", "plugin", c.Plugin, "run_id", c.Info.RunID, "error", serr)
		if res == nil {
			return nil, errors.Join(err, serr)
		}
		res.ProcessesLeft = strings.TrimPrefix(res.ProcessesLeft+"; "+serr.Error(), "; ")
	}
	return res, err
}

// registered records a started plugin process, so sweeps leave it alone
// until it has been reaped.
func (h *Host) registered(inst *instance) {
	h.ownMu.Lock()
	h.own[inst.pid] = inst
	h.ownMu.Unlock()
}

// ownPIDs returns the processes the host started that are not reaped yet:
// plugins, and processes forked for a start still in progress.
func (h *Host) ownPIDs() map[int]*instance {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	out := make(map[int]*instance, len(h.own)+len(h.forked))
	for pid := range h.forked {
		out[pid] = starting
	}
	for pid, inst := range h.own {
		if inst.client.Exited() {
			delete(h.own, pid) // go-plugin reaped it
			continue
		}
		out[pid] = inst
	}
	return out
}

// starting stands, in ownPIDs, for a plugin process forked and not yet
// started (or reaped after its start failed): no sweep touches it.
var starting = &instance{}

// sweep kills every live orphan, with its descendants, reaps the ones that
// exited, and waits up to wait for the killed ones to die (0: does not
// wait). It returns the pids it killed, and an error wrapping
// proctree.ErrTreeAlive if some are still alive when it gives up.
func (h *Host) sweep(wait time.Duration) ([]int, error) {
	if !h.opts.Subreaper {
		return nil, nil
	}
	h.spawn.Lock()
	defer h.spawn.Unlock()
	self := os.Getpid()
	deadline := time.Now().Add(wait)
	var killed []int
	for {
		kids, err := proctree.Children(self)
		if err != nil {
			return killed, err
		}
		own := h.ownPIDs()
		var targets []proctree.Process
		runs := map[int]string{} // the run each target's orphan belonged to
		for _, k := range kids {
			switch {
			case own[k.PID] != nil:
			case k.Zombie():
				k.Reap()
			default:
				run := runOf(k)
				if h.spared(run, own) {
					continue
				}
				runs[k.PID] = run
				targets = append(targets, k)
				// Each process below it is its own run's, by its own
				// environment: a dead plugin's command dying of Pdeathsig
				// has none left to read, and its children, which carry
				// their run's ID, were all put down to no run (attack 15,
				// F2). One without an ID it can show at once (none, or in
				// the middle of an exec) is taken for the orphan's,
				// without runOf's wait; one of a run still going on a
				// live plugin is spared.
				below, _ := proctree.Descendants(k.PID)
				for _, p := range below {
					id, _ := p.Env(runIDEnv)
					r := cmp.Or(id, run)
					if r != run && h.spared(r, own) {
						continue
					}
					runs[p.PID] = r
					targets = append(targets, p)
				}
			}
		}
		targets = slices.DeleteFunc(targets, proctree.Process.Zombie)
		if len(targets) == 0 {
			return killed, nil
		}
		for _, p := range targets {
			if err := p.Signal(syscall.SIGKILL); err != nil {
				h.log.Warn("cannot kill a process a dead plugin left", "pid", p.PID, "error", err)
			}
			if !slices.Contains(killed, p.PID) {
				killed = append(killed, p.PID)
			}
		}
		h.ownMu.Lock()
		h.swept = slices.DeleteFunc(h.swept, func(s sweptPID) bool { return time.Since(s.at) > h.opts.TreeTimeout })
		for _, p := range targets {
			h.swept = append(h.swept, sweptPID{p.PID, runs[p.PID], time.Now()})
		}
		h.ownMu.Unlock()
		if wait <= 0 {
			return killed, nil
		}
		// A killed process's children are re-parented before it dies; once
		// all are dead, the next round finds their children here.
		poll := backoff.New(backoff.Policy{Initial: time.Millisecond, Max: 50 * time.Millisecond})
		for {
			alive := slices.DeleteFunc(slices.Clone(targets), func(p proctree.Process) bool { return !p.Alive() })
			if len(alive) == 0 {
				break
			}
			if time.Now().After(deadline) {
				pids := make([]int, len(alive))
				for i, p := range alive {
					pids[i] = p.PID
				}
				return killed, &proctree.AliveError{PIDs: pids, After: wait}
			}
			time.Sleep(poll.Next())
		}
	}
}

// spared reports whether an orphan of run (runOf; "": of no run) belongs
// to a run still in progress on a live plugin.
func (h *Host) spared(run string, own map[int]*instance) bool {
	if run == "" {
		return false
	}
	h.ownMu.Lock()
	inst := h.runs[run]
	h.ownMu.Unlock()
	return inst != nil && own[inst.pid] == inst && inst.alive()
}

// runOf returns the run an orphan's environment names (runIDEnv), or "".
//
// A process in the middle of an execve has no environment to read for a
// moment (the new program's is not set up yet: proctree.ErrExecing), and a
// child of a non-dumpable plugin between fork and exec cannot be read by
// another user: such a read is tried again while the process lives, for up
// to execSettle and envSettle, so that a run's process caught in an exec
// is not taken for no run's and killed while its run goes on. A process
// with an empty environment (env -i) costs a sweep envSettle.
//
// The environment is read in one piece (proctree.Process.Environ): read in
// parts, as os.ReadFile does, that of a process execing between two parts
// came out cut, without the run's ID at its end, and the process was
// killed while its run went on (a run of
// TestOrphansOfRunsEndingTogetherDieBeforeTheirCallsReturn then waited out
// its deadline: 4 runs in 90 under load).
func runOf(p proctree.Process) string {
	poll := backoff.New(backoff.Policy{Initial: 100 * time.Microsecond, Max: 5 * time.Millisecond})
	began := time.Now()
	for {
		env, err := p.Environ() // whole or empty, even mid-exec
		if len(env) > 0 {
			prefix := []byte(runIDEnv + "=")
			for kv := range bytes.SplitSeq(env, []byte{0}) {
				if v, ok := bytes.CutPrefix(kv, prefix); ok {
					return string(v)
				}
			}
			return ""
		}
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || !p.Alive():
			return ""
		case errors.Is(err, proctree.ErrExecing):
			if time.Since(began) > execSettle {
				return ""
			}
		case time.Since(began) > envSettle:
			return ""
		}
		time.Sleep(poll.Next())
	}
}

// envSettle is how long runOf waits for an environment it cannot read yet;
// execSettle how long for that of a process in the middle of an exec, which
// a loaded machine can leave waiting for a CPU well past envSettle (seen:
// a sweep took a run's process, in its exec of setsid for 100 ms, for no
// run's, and killed it while its run went on). execSettle only bounds a
// process stuck in an exec.
const (
	envSettle  = 100 * time.Millisecond
	execSettle = 10 * time.Second
)

// sweptPID is a process a sweep killed, the run it belonged to ("": none
// its environment named), and when.
type sweptPID struct {
	pid int
	run string
	at  time.Time
}

// sweptRecently returns the processes sweeps killed within the last
// TreeTimeout for run, and those of no run, and forgets them: a sweep on
// SIGCHLD may have killed a dead plugin's orphans before the call that saw
// the plugin die swept. The processes of other runs are left for their own
// calls: the health probe, which also sees a plugin die (run ""), must not
// take a run's processes from the call whose record names them (scenario
// 18 once recorded a killed plugin's run without them, the probe having
// taken them first).
func (h *Host) sweptRecently(run string) []int {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	var out []int
	h.swept = slices.DeleteFunc(h.swept, func(s sweptPID) bool {
		switch {
		case time.Since(s.at) >= h.opts.TreeTimeout:
			return true
		case s.run != run && s.run != "":
			return false
		}
		if !slices.Contains(out, s.pid) {
			out = append(out, s.pid)
		}
		return true
	})
	return out
}

// afterDeath ends what a dead plugin process left, for the call that saw it
// die: err is that call's error, to which the outcome is added.
//
// A call can see the process die before it is dead: the process's
// connection closes while it exits, and the kernel closes its files before
// it hands its children to the host's process. So afterDeath first waits,
// up to TreeTimeout, until the process has ended as a whole (reaped, gone,
// or a zombie whose other threads have all exited: a Go plugin's main
// thread is a zombie while its other threads still exit, and its children
// are handed over only when the last has); a sweep before that finds none
// of its orphans, and the call would return while they live (seen under
// load, before and after the wait for a zombie was added: the run's error
// did not name the processes killed, a sweep on SIGCHLD killed them after
// the call returned).
//
// run is the run of the call (its record names the processes of the run
// killed, and of none), "" for the health probe's.
func (h *Host) afterDeath(inst *instance, run string, err error) error {
	if h.opts.Subreaper && !inst.waitDead(h.opts.TreeTimeout) {
		h.log.Error("a killed plugin process is still alive", "pid", inst.pid, "after", h.opts.TreeTimeout)
		return fmt.Errorf("%w; %w", err, &proctree.AliveError{PIDs: []int{inst.pid}, After: h.opts.TreeTimeout})
	}
	_, serr := h.sweep(h.opts.TreeTimeout)
	if killed := h.sweptRecently(run); len(killed) > 0 {
		h.log.Warn("killed processes a dead plugin left behind", "pids", killed)
		err = fmt.Errorf("%w; killed %d processes it left behind (pids %s)", err, len(killed), joinPIDs(killed))
	}
	if serr != nil {
		h.log.Error("processes a dead plugin left behind are still alive", "error", serr)
		err = fmt.Errorf("%w; %w", err, serr)
	}
	return err
}

// waitDead waits up to d until the process has ended as a whole (reaped,
// gone, or a zombie with no thread left exiting: proctree.Process.Ended),
// and reports whether it has.
func (i *instance) waitDead(d time.Duration) bool {
	deadline := time.Now().Add(d)
	poll := backoff.New(backoff.Policy{Initial: time.Millisecond, Max: 20 * time.Millisecond})
	for !i.proc.Ended() && !i.client.Exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll.Next())
	}
	return true
}

func joinPIDs(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}
