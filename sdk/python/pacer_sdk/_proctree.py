"""Commands whose whole process tree ends with them (Context.run), and the
end of everything below a stopping plugin.

A task's command does not run as the plugin's own child: between them is a
keeper (_tree.py, a process of its own) that is a child subreaper, so that
nothing the command starts (children, a setsid grandchild, a daemon's double
fork) leaves the tree; it kills what is left when the command exits, stops
the tree when the run is cancelled, and confirms the tree is gone (it has no
child left). The plugin itself stays an ordinary process: it is no
subreaper and reaps nothing it did not start, so plain subprocess calls in
tasks keep their exit statuses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._context import Cancelled, RunState, TaskError
# The spawner's own /proc readers and its pidfd-guarded signal (it runs
# _tree.py as a script, so the plugin borrows them, not the other way).
from ._tree import children as _children
from ._tree import send as _send
from ._tree import stat as _stat

#: The environment variable that marks every process of a command's tree.
MARKER = "PACER_PROCESS_TREE"
#: How long a cancelled command's tree gets between SIGTERM and SIGKILL.
DEFAULT_GRACE = 2.0
#: How long processes get to die after SIGKILL before they are reported.
DEFAULT_KILL_TIMEOUT = 5.0
#: Output kept by default (the runner keeps 64 KiB of a run's output).
DEFAULT_MAX_OUTPUT = 64 << 10
#: How long the output may take to reach its end once the tree is gone (a
#: process outside the tree that was handed the pipe must not hold the run).
DRAIN_TIMEOUT = 1.0
#: The variables of the plugin's own environment a command gets by default
#: ("LC_*": every one starting with LC_), as in the shell plugin.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER")

_SPAWNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tree.py")


class ProcessesAlive(TaskError):
    """Processes of a command's tree could not be confirmed dead: the attempt
    did not end whole, and the runner starts no retry after it. The run's
    result says so (RunResult.processes_left) even if the task catches this."""

    def __init__(self, pids: Sequence[int], after: float, detail: str = ""):
        self.pids = list(pids)
        self.after = after
        what = f"{len(self.pids)} still alive {after:g}s after SIGKILL (pids {', '.join(map(str, self.pids))})" if self.pids else detail
        super().__init__(
            f"processes of the command could not be confirmed dead: {what}; a process in uninterruptible sleep "
            "(e.g. on a hung NFS mount) cannot die until its I/O returns"
        )


@dataclasses.dataclass
class Completed:
    """How a command and its process tree ended (Context.run)."""

    args: List[str]
    #: The command's exit status; negative: the signal that ended it.
    returncode: int
    #: E.g. "exit status 3", "signal: kill".
    state: str
    #: Its stdout and stderr, interleaved as written, up to max_output bytes.
    output: str
    #: Bytes of output beyond max_output, not kept.
    truncated: int
    #: The run was cancelled before the command exited.
    stopped: bool
    #: Processes of the tree still running when the command exited. They
    #: were killed.
    leftovers: List[int]
    #: A scan found nothing of the tree alive afterwards (always False where
    #: the system has no child subreapers).
    confirmed: bool


def command_env(run: RunState, env: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """The command's environment: env as given, or by default the plugin's
    base variables, the variables the job lets the task see (RunInfo.env)
    and the run's identity (PACER_JOB_ID, PACER_RUN_ID, PACER_CORRELATION_ID,
    PACER_ATTEMPT)."""
    if env is not None:
        return dict(env)
    out = {}
    for k, v in os.environ.items():
        if any(k.startswith(b[:-1]) if b.endswith("*") else k == b for b in BASE_ENV):
            out[k] = v
    out.update(run.info.env)
    info = run.info
    out.update(
        PACER_JOB_ID=info.job_id,
        PACER_RUN_ID=info.run_id,
        PACER_CORRELATION_ID=info.correlation_id,
        PACER_ATTEMPT=str(info.attempt),
    )
    return out


def run(
    state: RunState,
    args: Union[str, Sequence[str]],
    *,
    shell: bool = False,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    input: Union[bytes, str, None] = None,
    on_line: Optional[Callable[[str], None]] = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    grace: float = DEFAULT_GRACE,
    kill_timeout: float = DEFAULT_KILL_TIMEOUT,
    check: bool = False,
) -> Completed:
    """See Context.run."""
    if shell:
        if not isinstance(args, str):
            raise TypeError("with shell=True, args must be one string")
        argv = ["/bin/sh", "-c", args]
    else:
        argv = [args] if isinstance(args, str) else [str(a) for a in args]
    if not argv or not argv[0]:
        raise ValueError("run: no command")
    if state.cancellation.reason is not None:
        raise Cancelled(state.cancellation.reason)
    full_env = command_env(state, env)
    full_env[MARKER] = uuid.uuid4().hex
    path = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=full_env.get("PATH", os.defpath))
    if path is None:
        raise FileNotFoundError(2, f"{argv[0]}: not found in PATH", argv[0])
    if isinstance(input, str):
        input = input.encode()
    req = {"path": path, "argv": argv, "env": full_env, "cwd": cwd, "grace": float(grace), "kill_timeout": float(kill_timeout)}

    report_r, report_w = os.pipe()
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe() if input is not None else (os.open(os.devnull, os.O_RDONLY), None)
    try:
        _spawner.request(req, (in_r, out_w, report_w))
    except BaseException:
        for fd in (report_r, out_r, in_w):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, report_w):
            os.close(fd)

    out = _Output(out_r, max_output, on_line)
    feeder = None
    if in_w is not None:
        feeder = threading.Thread(target=_feed, args=(in_w, input), name="pacer-task-stdin", daemon=True)
        feeder.start()
    keeper: Optional[int] = None
    with os.fdopen(report_r, "rb") as report:
        first = _line(report)
        unregister = lambda: None  # noqa: E731
        try:
            if first is not None and "error" in first:
                out.drain(DRAIN_TIMEOUT)
                err = first.get("errno") or 0
                msg = f"{argv[0]}: cannot start: {first['error']}"
                raise OSError(err, msg, argv[0]) if err else OSError(msg)
            if first is not None:
                keeper = _Keeper(int(first["keeper"]), int(first.get("keeper_start", 0)))
                unregister = state.cancellation.add(lambda _reason: keeper.stop(state.cancellation.no_grace))  # type: ignore[union-attr]
            last = _line(report) if first is not None else None
        finally:
            unregister()
            if keeper is not None:
                keeper.close()
    if feeder is not None:
        feeder.join(DRAIN_TIMEOUT)
    if last is None:
        # The keeper died without a word (killed): end what carries the
        # tree's marker, wherever it is now.
        alive = _end_marked(full_env[MARKER], kill_timeout)
        out.drain(DRAIN_TIMEOUT)
        if alive:
            _left(state, ProcessesAlive(alive, kill_timeout))
        raise TaskError(f"{argv[0]}: the process keeping the command's tree was killed; the tree's processes were killed too")
    out.drain(DRAIN_TIMEOUT)
    returncode = int(last["returncode"])
    res = Completed(
        args=argv,
        returncode=returncode,
        state=_state(returncode) if last.get("exited", True) else "not exited",
        output=out.text(),
        truncated=out.cut,
        stopped=bool(last["stopped"]),
        leftovers=list(last["leftovers"]),
        confirmed=bool(last["confirmed"]),
    )
    if "alive" in last:
        _left(state, ProcessesAlive(last["alive"], float(last.get("after", kill_timeout))))
    if res.stopped and check:
        raise Cancelled(state.cancellation.reason or "cancelled")
    if check and res.returncode != 0:
        raise TaskError(f"command {argv[0]!r} {_state(res.returncode)}")
    return res


class _Keeper:
    """A command's keeper, to signal: through a pidfd opened while it is
    surely alive (it has not reported the end yet), so a later signal never
    reaches a process that reused its pid."""

    def __init__(self, pid: int, start: int):
        self.pid = pid
        try:
            self.fd: Optional[int] = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None
        st = _stat(pid)
        self.gone = st is None or (start != 0 and st[2] != start)  # it ended already

    def stop(self, no_grace: bool) -> None:
        """Tell the keeper the run was cancelled: SIGTERM, on which it gives
        the tree SIGTERM and then SIGKILL after the grace; or, with no_grace
        (the runner's lease ran out), SIGUSR1, on which it kills the tree at
        once."""
        if self.gone:
            return
        sig = signal.SIGUSR1 if no_grace else signal.SIGTERM
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Spawner:
    """The plugin's spawner process (_tree.py), started with the first
    command and again if it died. It is started from whatever thread runs
    that command, so it gets no parent-death signal (that would fire when
    the thread ends); it exits when the plugin's end of its socket closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._sock: Optional[socket.socket] = None

    def request(self, req: Dict[str, Any], fds: Sequence[int]) -> None:
        data = json.dumps(req).encode()
        with self._lock:
            for attempt in (1, 2):
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                try:
                    socket.send_fds(self._sock, [data], list(fds))  # type: ignore[arg-type]
                    return
                except OSError:
                    if attempt == 2:
                        raise
                    self._stop()

    def _start(self) -> None:
        self._stop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable or "/usr/bin/python3", "-I", "-S", _SPAWNER, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


_spawner = _Spawner()


def _state(returncode: Optional[int]) -> str:
    if returncode is None:
        return "not exited"
    if returncode < 0:
        try:
            return f"signal: {signal.Signals(-returncode).name[3:].lower()}"
        except ValueError:
            return f"signal: {-returncode}"
    return f"exit status {returncode}"


def _left(state: RunState, err: ProcessesAlive) -> None:
    state.processes_left.append(str(err))
    raise err


def _line(f: Any) -> Optional[Dict[str, Any]]:
    b = f.readline()
    if not b:
        return None
    try:
        return json.loads(b)
    except ValueError:
        return None


def _feed(fd: int, data: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError:
        pass


class _Output:
    """Reads the command's output: keeps the first max bytes, counts the
    rest, passes complete lines to on_line."""

    def __init__(self, fd: int, max_bytes: int, on_line: Optional[Callable[[str], None]]):
        self._fd = fd
        self._max = max(0, max_bytes)
        self._buf = bytearray()
        self.cut = 0
        self._on_line = on_line
        self._line = bytearray()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, name="pacer-task-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                # A timeout, not a blocking read: a process outside the tree
                # that holds the pipe must not hold this thread.
                if not select.select([self._fd], [], [], 0.1)[0]:
                    continue
                try:
                    b = os.read(self._fd, 65536)
                except OSError:
                    break
                if not b:
                    break
                room = self._max - len(self._buf)
                if room < len(b):
                    self.cut += len(b) - max(room, 0)
                self._buf += b[: max(room, 0)]
                if self._on_line is not None:
                    self._lines(b)
            if self._on_line is not None and self._line:
                self._emit()
        finally:
            self._done.set()

    def _lines(self, b: bytes) -> None:
        while b:
            i = b.find(b"\n")
            if i < 0:
                self._line += b
                if len(self._line) > 4096:
                    self._emit()
                return
            self._line += b[:i]
            self._emit()
            b = b[i + 1 :]

    def _emit(self) -> None:
        line, self._line = bytes(self._line), bytearray()
        try:
            self._on_line(line.decode(errors="replace"))  # type: ignore[misc]
        except Exception:  # a callback must not stop the reading
            pass

    def drain(self, timeout: float) -> None:
        """Wait up to timeout for the end of the output, then stop reading."""
        if not self._done.wait(timeout):
            self._stop.set()
            self._done.wait()
        self._thread.join()
        os.close(self._fd)

    def text(self) -> str:
        return self._buf.decode(errors="replace")


def _marked(marker: str) -> List[tuple]:
    """Live processes whose environment carries MARKER=marker: (pid, start)."""
    want = f"{MARKER}={marker}".encode()
    out = []
    try:
        pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        st = _stat(pid)
        if st is not None and st[0] not in ("Z", "X") and want in env.split(b"\0"):
            out.append((pid, st[2]))
    return out


def _end_marked(marker: str, kill_timeout: float) -> List[int]:
    """Kill every process carrying marker and wait for them; return those
    still alive after kill_timeout."""
    deadline = time.monotonic() + kill_timeout
    while True:
        found = _marked(marker)
        if not found:
            return []
        for pid, start in found:
            _send(pid, start, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return [pid for pid, _ in found]
        time.sleep(0.02)


def descendants(pid: int, spare: Sequence[int] = ()) -> List[tuple]:
    """Every live process below pid, parents first: (pid, start); a process
    in spare, and what is below it, is left out."""
    out: List[tuple] = []
    todo = [c for c in _children(pid) if c not in spare]
    while todo:
        c = todo.pop(0)
        st = _stat(c)
        if st is None:
            continue
        if st[0] not in ("Z", "X"):
            out.append((c, st[2]))
        todo += _children(c)
    return out


def end_descendants(timeout: float, root: Optional[int] = None, spare: Sequence[int] = ()) -> List[int]:
    """Kill every process below root (this one by default) but those in
    spare, and wait up to timeout for them to die; return those still
    alive. They are stopped (SIGSTOP) first, from the top down, until no
    new one appears, so that none can fork or be re-parented out of reach
    (root is no subreaper) before the kill."""
    top = os.getpid() if root is None else root
    frozen: Dict[int, int] = {}
    for _ in range(100):
        new = [(p, s) for p, s in descendants(top, spare) if p not in frozen]
        if not new:
            break
        for p, s in new:
            _send(p, s, signal.SIGSTOP)
            frozen[p] = s
    for p, s in frozen.items():
        _send(p, s, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p, s in frozen.items() if (st := _stat(p)) is not None and st[2] == s and st[0] not in ("Z", "X")]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.01)
