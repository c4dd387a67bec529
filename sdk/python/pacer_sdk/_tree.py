"""The keepers of commands' process trees (Context.run), and the process that
starts them.

A plugin starts this file once, as ``python3 -I -S _tree.py SOCKET_FD``: the
spawner. It is single-threaded, so unlike the plugin it may fork; it never
runs anything itself. For every command the plugin sends it a request over
SOCKET_FD (a SOCK_SEQPACKET socket: one message a request) with three file
descriptors: the command's stdin, its stdout and stderr (one pipe), and the
report pipe. The spawner forks a keeper for it (no interpreter to start) and
goes back to waiting. When the plugin's end of the socket closes (the plugin
exited or was killed), the spawner kills every keeper and tree below it and
exits; a keeper dies with the spawner (PR_SET_PDEATHSIG).

A keeper is a child subreaper (prctl(PR_SET_CHILD_SUBREAPER)), so every
process the command starts stays below it, daemons and setsid grandchildren
included; it reaps all of them. The command runs in a process group of its
own (started by subprocess, with vfork). When the command exits, what is
left of the tree is killed (SIGKILL); on SIGTERM (the run was cancelled) the
tree gets SIGTERM, then SIGKILL after the grace period; on SIGUSR1 (the run
was cancelled with no grace: the runner's lease ran out) SIGKILL at once. The tree is
confirmed gone when the keeper has no child left: with a subreaper, a live
descendant always has a live ancestor that is the keeper's child. Processes
still alive kill_timeout after SIGKILL are reported instead. If a keeper is
killed, the plugin kills what carries the tree's marker (_proctree.py).

A request is a JSON object: "path", "argv", "env" (an object), "cwd" (or
null), "grace" and "kill_timeout" (seconds). The report pipe gets JSON
lines: {"pid": N, "keeper": N, "keeper_start": N} once the command runs (or
{"error": ..., "errno": N} if it cannot start), then how it ended:
"returncode" (negative: the signal that ended it), "exited" (false if even
SIGKILL did not end it), "stopped", "leftovers" (processes alive when it
exited, then killed), "confirmed" and, if some could not be confirmed dead,
"alive" and "after".

Neither process writes to the command's stdout or stderr.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PROC = os.path.isdir("/proc/self/task")
MAX_REQUEST = 4 << 20


try:
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)  # loaded once, in the spawner: keepers fork with it
except (ImportError, OSError):  # pragma: no cover - no ctypes, or no C library to load
    ctypes = None
    _libc = None


def prctl(option, arg):
    if _libc is None or not hasattr(_libc, "prctl"):
        raise OSError(0, "prctl is not available on this system")
    libc = _libc
    if libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def stat(pid):
    """(state, ppid, start time) of pid from /proc, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            b = f.read()
    except OSError:
        return None
    fields = b[b.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def children(pid):
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def descendants(pid, spare=()):
    """Every process below pid, parents before their children, with the
    start time that identifies it: [(pid, start, zombie)]; a process in
    spare, and what is below it, is left out. Empty without /proc."""
    out, todo = [], [c for c in children(pid) if c not in spare]
    while todo:
        c = todo.pop(0)
        st = stat(c)
        if st is None:
            continue
        out.append((c, st[2], st[0] in ("Z", "X")))
        todo += children(c)
    return out


def send(pid, start, sig):
    """Signal pid if it is still the process that started at start: through
    a pidfd where there is one, so a reused pid is never hit."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        st = stat(pid)
        if st is None or st[2] != start:
            return
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


def signal_tree(sig, command):
    if not PROC:  # no /proc (not Linux): the command's process group
        try:
            os.killpg(command, sig)
        except OSError:
            pass
        return
    for pid, start, zombie in descendants(os.getpid()):
        if not zombie:
            send(pid, start, sig)


class Signals:
    """SIGCHLD, SIGTERM and SIGUSR1 as they come: through sigtimedwait with
    all three blocked (Linux), else through handlers and polling."""

    STOPS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.got = None
        self.wait_ok = hasattr(signal, "sigtimedwait")
        if self.wait_ok:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD, *self.STOPS])
        else:
            for sig in self.STOPS:
                signal.signal(sig, self._on_stop)

    def _on_stop(self, signum, frame):
        if self.got != signal.SIGUSR1:  # no grace wins
            self.got = signum

    def wait(self, timeout):
        """Wait up to timeout for a signal; return SIGTERM or SIGUSR1 if one
        of them came, else None."""
        if self.wait_ok:
            got = signal.sigtimedwait([signal.SIGCHLD, *self.STOPS], timeout)
            return got.si_signo if got is not None and got.si_signo in self.STOPS else None
        time.sleep(min(timeout, 0.05))
        got, self.got = self.got, None
        return got


def reap(command, status):
    """Reap every child that exited; return the command's wait status once
    it has one, and whether any child is left."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status, False
        if pid == 0:
            return status, True
        if pid == command:
            status = st


def keep(req, stdin, out, report_fd, spawner):
    """A keeper: run one command and end its tree (see the module doc)."""
    report = os.fdopen(report_fd, "w")

    def say(**kv):
        report.write(json.dumps(kv) + "\n")
        report.flush()

    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != spawner:  # the spawner died before the line above
        return
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        subreaper = True
    except (OSError, AttributeError):
        subreaper = False  # not Linux: orphans escape, nothing is confirmed
    grace, kill_timeout = float(req["grace"]), float(req["kill_timeout"])
    term = []
    for sig in Signals.STOPS:
        signal.signal(sig, lambda signum, frame: term.append(signum))
    keeper = os.getpid()
    # subprocess starts the command with vfork and exec: a fork of this
    # Python process would cost more than the rest of the keeper. It is
    # started before SIGTERM and SIGCHLD are blocked below, which it would
    # inherit; a SIGTERM meanwhile is seen by the handler above.
    kw = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
    try:
        proc = subprocess.Popen(req["argv"], executable=req["path"], stdin=stdin, stdout=out, stderr=out, cwd=req.get("cwd") or None,
                                env=req["env"], close_fds=True, **kw)
    except OSError as e:
        msg = e.strerror or str(e)
        if req.get("cwd") and e.filename == req.get("cwd"):
            msg += " (cwd " + req["cwd"] + ")"
        say(error=msg, errno=e.errno or 0)
        return
    except (ValueError, TypeError) as e:
        say(error=str(e), errno=0)
        return
    finally:
        os.close(stdin)
        os.close(out)  # the output ends when the tree has ended, not the keeper
    command = proc.pid
    signals = Signals()
    if term:  # seen by signals.wait below; no grace wins
        os.kill(keeper, signal.SIGUSR1 if signal.SIGUSR1 in term else signal.SIGTERM)
    me = stat(keeper)
    say(pid=command, keeper=keeper, keeper_start=me[2] if me else 0)

    status, stopped, kill_at, give_up_at = None, False, None, None
    while True:
        status, _ = reap(command, status)
        if status is not None:
            break
        now = time.monotonic()
        if kill_at is not None and now >= kill_at and give_up_at is None:
            signal_tree(signal.SIGKILL, command)
            give_up_at = now + kill_timeout
        if give_up_at is not None and now >= give_up_at:
            alive = [pid for pid, _, zombie in descendants(keeper) if not zombie]
            say(returncode=-1, exited=False, stopped=True, leftovers=[], confirmed=False, alive=alive, after=kill_timeout)
            return
        wait = 1.0
        if kill_at is not None and give_up_at is None:
            wait = max(0.0, min(wait, kill_at - now))
        if give_up_at is not None:
            wait = max(0.0, min(wait, give_up_at - now))
        got = signals.wait(wait)
        if got == signal.SIGUSR1 and give_up_at is None:
            # No grace (the runner's lease ran out): SIGKILL now.
            stopped = True
            signal_tree(signal.SIGKILL, command)
            give_up_at = time.monotonic() + kill_timeout
        elif got == signal.SIGTERM and not stopped:
            stopped = True
            signal_tree(signal.SIGTERM, command)
            kill_at = time.monotonic() + grace

    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    leftovers = [pid for pid, _, zombie in descendants(keeper) if not zombie]
    deadline = time.monotonic() + kill_timeout
    while True:
        _, left = reap(command, status)
        if not left:
            say(returncode=returncode, stopped=stopped, leftovers=leftovers, confirmed=subreaper)
            return
        tree = descendants(keeper)
        for pid, start_time, zombie in tree:
            if not zombie:
                send(pid, start_time, signal.SIGKILL)
        if not PROC:
            signal_tree(signal.SIGKILL, command)
        if time.monotonic() >= deadline:
            alive = [pid for pid, _, zombie in tree if not zombie]
            say(returncode=returncode, stopped=stopped, leftovers=leftovers, confirmed=False, alive=alive, after=kill_timeout)
            return
        signals.wait(0.05)


def end_all(root=None, spare=()):
    """Kill every process below root (the spawner by default: each keeper
    and its tree) but those in spare and below them. They are stopped
    (SIGSTOP) first, from the top down, until no new one appears, so that
    none can fork or be re-parented out of reach before the kill."""
    top, frozen = os.getpid() if root is None else root, {}
    for _ in range(100):
        new = [(p, t) for p, t, zombie in descendants(top, spare) if not zombie and p not in frozen]
        if not new:
            break
        for p, t in new:
            send(p, t, signal.SIGSTOP)
            frozen[p] = t
    for p, t in frozen.items():
        send(p, t, signal.SIGKILL)


def serve(sock_fd):
    """The spawner: fork a keeper per request until the plugin goes away."""
    sock = socket.socket(fileno=sock_fd)
    spawner = os.getpid()

    def reap_keepers(signum=None, frame=None):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    signal.signal(signal.SIGCHLD, reap_keepers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            end_all()
            return
        if not msg:
            end_all()  # the plugin's end closed: the plugin is gone
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        stdin, out, report = fds
        try:
            req = json.loads(msg)
            keeper = os.fork()
        except (ValueError, OSError) as e:
            try:
                os.write(report, (json.dumps({"error": "cannot start a keeper: " + str(e), "errno": getattr(e, "errno", 0) or 0}) + "\n").encode())
            except OSError:
                pass
            keeper = -1
        if keeper == 0:
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                keep(req, stdin, out, report, spawner)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
    os._exit(0)
