package proctree

import (
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacerun/pacer/internal/coalesce"
)

// reaperState is process-wide because what it manages is: a subreaper
// adopts orphans for the whole process, and reaping must know every child
// the process started itself.
type reaperState struct {
	once sync.Once
	err  error

	mu      sync.Mutex   // held while a command starts and while adopted children are reaped
	own     map[int]bool // commands started by Run that os/exec has not waited for yet
	live    int          // commands whose trees have not ended yet
	started uint64       // commands started by Run so far

	// kids is this process's main thread's children list
	// (/proc/self/task/PID/children), opened once by enable, or -1: where
	// the kernel puts the orphans a subreaper adopts (kernel/exit.c:
	// find_new_reaper re-parents to the subreaper's first live thread, its
	// thread-group leader). A /proc seq_file lists the children anew when
	// read from offset 0, so a pread of it is a fresh look; kidsMu keeps
	// reads of it whole (two at once would interleave their offsets).
	kids   int
	kidsMu sync.Mutex
}

// alone is what a tree knew of the other commands when a scan began:
// whether it was the only one running, and how many had started by then.
type alone struct {
	only    bool
	started uint64
}

// scanHook, when set by a test, runs between a tree's scan and its reading
// of which processes are unclaimed.
var scanHook func()

var reaper = reaperState{own: map[int]bool{}, kids: -1}

// reapPause spaces out the reaper's scans: a busy plugin's commands exit
// many times a second, and an adopted zombie harms nobody for that long.
const reapPause = 100 * time.Millisecond

// start reaps adopted children when children exit (SIGCHLD), at most once
// per reapPause, and once more after it if more exited meanwhile.
func (r *reaperState) start() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() {
		for range ch {
			reapAdopted()
			time.Sleep(reapPause) // a rate limit, not a wait for anything
		}
	}()
}

// sysProcAttr: a process group of its own, so a signal to the group reaches
// the command's ordinary descendants; Pdeathsig SIGKILL, so the command dies
// with the plugin even if the plugin is killed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// tree is one running command and what it started.
type tree struct {
	pid    int    // the command; also its process group
	marker string // value of Marker in its environment
	self   int    // this process, the tree's subreaper
	sub    bool   // this process is a subreaper: the tree cannot leave it
	busy   bool   // other commands were running when it started (awaitExit)
}

// enable makes this process a subreaper that reaps what it adopts, once.
func (r *reaperState) enable() error {
	r.once.Do(func() {
		if r.err = EnableSubreaper(); r.err == nil {
			// Without the file every end scans (see gone).
			r.kids, _ = openProc("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children")
			r.start()
		}
	})
	return r.err
}

func start(ec *exec.Cmd, marker string) (*tree, error) {
	sub := reaper.enable() == nil
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if err := ec.Start(); err != nil {
		return nil, err
	}
	reaper.own[ec.Process.Pid] = true
	reaper.live++
	reaper.started++
	return &tree{pid: ec.Process.Pid, marker: marker, self: os.Getpid(), sub: sub, busy: reaper.live > 1}, nil
}

// awaitExit returns once the command has exited, without reaping it, when
// other commands were running as it started: it waits in the runtime's
// poller for the command's pidfd to turn readable, so that os/exec's Wait
// after it returns at once instead of holding a thread in waitid(2) for
// the command's whole life (a thread the runtime must hand the goroutine's
// processor away from, and back to). A busy plugin's commands cost about
// 30 % less CPU so (BenchmarkRun/proctree-concurrency=32); a command
// running alone costs more (BenchmarkRun/proctree, the pidfd and the
// poller's wake-up), so it returns at once and Wait waits, as it does where
// it cannot (kernels before 5.10).
func (t *tree) awaitExit() {
	if !t.busy {
		return
	}
	fd, err := unix.PidfdOpen(t.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: in the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err != nil || info.Signo != 0 // exited (or cannot tell: Wait will)
	})
}

// waited records that os/exec has reaped the command (or given up on it).
func (t *tree) waited(reaped bool) {
	if !reaped {
		return // still ours to wait for; never reaped as adopted
	}
	reaper.mu.Lock()
	delete(reaper.own, t.pid)
	reaper.mu.Unlock()
}

// members lists the processes of the tree in all (a snapshot of the
// processes below this one), zombies included: those in the command's
// process group, below the command, or carrying its marker.
func (t *tree) members(all []Process) []Process {
	parent := make(map[int]int, len(all))
	for _, p := range all {
		parent[p.PID] = p.PPID
	}
	below := func(pid int) bool {
		for n := 0; pid > 1 && n < len(all); n++ {
			if pid == t.pid {
				return true
			}
			pid = parent[pid]
		}
		return false
	}
	var out []Process
	for _, p := range all {
		if p.PGID == t.pid || below(p.PID) {
			out = append(out, p)
			continue
		}
		if v, ok := p.Env(Marker); ok && v == t.marker {
			out = append(out, p)
		}
	}
	return out
}

// snapshot lists the processes below this one, from a scan that began
// after the call.
func (t *tree) snapshot() []Process {
	if t.self != os.Getpid() {
		all, _ := Descendants(t.self)
		return all
	}
	// Callers share a scan: each gets its own copy.
	return slices.Clone(scans.Do(func() []Process {
		all, _ := Descendants(os.Getpid())
		return all
	}))
}

// scans shares the scans of this process's descendants between the commands
// that want one at the same time: commands that end together (a plugin's
// runs due at the same instant) would each read every process below the
// plugin, n commands n² reads of /proc. A caller waits for a scan that
// begins after its call, so it sees at least what a scan of its own would
// have: every process its command left, as they were once it had ended.
var scans coalesce.After[[]Process]

// live lists the pids of the tree's processes that still run.
func (t *tree) live() []int {
	var pids []int
	for _, p := range t.members(t.snapshot()) {
		if !p.Zombie() {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// signal sends sig to every live process of the tree.
func (t *tree) signal(sig syscall.Signal) {
	for _, p := range t.members(t.snapshot()) {
		if !p.Zombie() {
			_ = p.Signal(sig)
		}
	}
}

// end kills what is left of the tree after the command ended and waits
// until a scan finds none of it alive, for up to killTimeout. It returns the
// processes it found still running at first.
func (t *tree) end(killTimeout time.Duration) (leftovers []int, confirmed bool, err error) {
	defer func() {
		reaper.mu.Lock()
		reaper.live--
		reaper.mu.Unlock()
	}()
	if t.gone() {
		return nil, true, nil
	}
	deadline := time.Now().Add(killTimeout)
	for round := 0; ; round++ {
		before := t.alone()
		all := t.snapshot()
		if scanHook != nil {
			scanHook()
		}
		var alive []Process
		for _, p := range append(t.members(all), t.unclaimed(all, before)...) {
			if !p.Zombie() && !slices.ContainsFunc(alive, func(q Process) bool { return q.PID == p.PID }) {
				alive = append(alive, p)
			}
		}
		reapZombies(all)
		if round == 0 {
			for _, p := range alive {
				leftovers = append(leftovers, p.PID)
			}
		}
		if len(alive) == 0 {
			// Without the subreaper an orphan could have left for init
			// unseen: then nothing is confirmed.
			return leftovers, t.sub, nil
		}
		for _, p := range alive {
			_ = p.Signal(syscall.SIGKILL)
		}
		// A killed process's children are re-parented before it turns
		// into a zombie, so once every one of them is dead the next scan
		// sees their children where they now are.
		if !waitDead(alive, deadline) {
			var pids []int
			for _, p := range alive {
				if p.Alive() {
					pids = append(pids, p.PID)
				}
			}
			return leftovers, false, &AliveError{PIDs: pids, After: killTimeout}
		}
	}
}

// gone reports, from two cheap looks instead of a scan of the processes
// below this one, that nothing of the tree is left now that the command
// has exited and been reaped: its process group is empty, and this process
// has no child that Run did not start (none adopted). The command's
// children were re-parented to this process, the subreaper, when it
// exited, and a live descendant always has a live ancestor that is a child
// of its subreaper: so with none adopted, nothing the command started is
// alive, whether it left the group or the ancestry, cleared its
// environment or not. (What the looks cannot see, a process of another
// command's tree that was given this command's marker by hand, belongs to
// that tree too, which still runs: the package doc's limits.) A command
// that leaves something, or a process adopted from any command, makes
// every command that ends meanwhile scan.
func (t *tree) gone() bool {
	if !t.sub || reaper.kids < 0 || t.self != os.Getpid() {
		return false
	}
	if err := unix.Kill(-t.pid, 0); err != unix.ESRCH {
		return false // a process in the group, or one that cannot be signalled
	}
	var buf [4096]byte
	list, err := readKids(buf[:0])
	if err != nil {
		return false
	}
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	// A command started meanwhile is in own before anyone can read its
	// pid: start records it under the lock it starts it under.
	for pid := range pidsOf(list) {
		if !reaper.own[pid] {
			return false
		}
	}
	return true
}

// alone reads, before a scan, whether this tree is the only command running.
func (t *tree) alone() alone {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	return alone{only: reaper.live == 1, started: reaper.started}
}

// unclaimed lists, when no other command ran at any time during the scan
// all came from (before was read as it began), the live processes in all
// (below this one) that no command started as far as the tree can tell
// (orphans that left their group and ancestry and cleared their
// environment), and what they started: with no other command running, they
// can only be this command's. Counting the other commands after the scan
// is not enough: one that ended meanwhile is in the scan but no longer
// counted, and its processes would be taken for this one's.
func (t *tree) unclaimed(all []Process, before alone) []Process {
	reaper.mu.Lock()
	only := before.only && reaper.started == before.started
	own := maps.Clone(reaper.own)
	reaper.mu.Unlock()
	if !only {
		return nil
	}
	orphan := map[int]bool{}
	var out []Process
	for _, p := range all { // parents come before their children
		if (p.PPID == t.self && !own[p.PID] && !p.Zombie()) || orphan[p.PPID] {
			orphan[p.PID] = true
			out = append(out, p)
		}
	}
	return out
}

// reapZombies reaps the zombies in all that are adopted children of this
// process.
func reapZombies(all []Process) {
	self := os.Getpid()
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	for _, p := range all {
		if p.PPID == self && p.Zombie() && !reaper.own[p.PID] {
			p.Reap()
		}
	}
}

// waitDead waits until none of ps runs, or the deadline passes.
func waitDead(ps []Process, deadline time.Time) bool {
	wait := time.Millisecond
	for {
		n := 0
		for _, p := range ps {
			if p.Alive() {
				n++
			}
		}
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// reapAdopted reaps this process's children that exited and that it did
// not start through Run: orphans it adopted as a subreaper. When no command
// runs, a live adopted child can belong to no tree any more (it left its
// command's group and ancestry, and cleared its environment): it is killed,
// with what it started.
func reapAdopted() {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	for _, k := range adopted() {
		switch {
		case k.Zombie():
			k.Reap()
		case reaper.live == 0:
			below, _ := Descendants(k.PID)
			_ = k.Signal(syscall.SIGKILL)
			for _, p := range below {
				_ = p.Signal(syscall.SIGKILL)
			}
		}
	}
}

// readKids reads the main thread's children list (reaper.kids) into buf,
// whole.
func readKids(buf []byte) ([]byte, error) {
	reaper.kidsMu.Lock()
	defer reaper.kidsMu.Unlock()
	return preadProc(reaper.kids, buf)
}

// adopted lists the children of this process that Run did not start,
// with reaper.mu held. It reads the state of those alone, from the main
// thread's list, where adopted orphans go (every thread's lists if that
// file is not open): a busy plugin's own commands are many.
func adopted() []Process {
	self := os.Getpid()
	if reaper.kids < 0 {
		kids, _ := Children(self)
		return slices.DeleteFunc(kids, func(k Process) bool { return reaper.own[k.PID] })
	}
	var buf [4096]byte
	list, err := readKids(buf[:0])
	if err != nil {
		return nil
	}
	var out []Process
	for pid := range pidsOf(list) {
		if reaper.own[pid] {
			continue
		}
		if p, err := Read(pid); err == nil && p.PPID == self {
			out = append(out, p)
		}
	}
	return out
}
