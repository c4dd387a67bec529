"""The plugin's guard against outliving its runner while its GIL is held.

A served plugin notices its runner's death in Python code: the SIGTERM the
runner asks the kernel to send when it dies, and the main thread's poll of
the parent process. Neither runs while a task thread is inside one long
call that keeps the GIL (C code: ``sum(range(10**10))``, a backtracking
``re`` search, a big ``json.loads``, many C extensions). The plugin then
lived on after a ``kill -9`` of its runner until the call returned, and the
task's code after the call ran with no runner to record it, while another
replica might run the slot again.

The watchdog is a small process of its own interpreter (this file, run as
``python3 -I -S _watchdog.py PLUGIN RUNNER_PIDFD ACK_FD STOP_GRACE``),
started by serve() before the plugin serves. It shares no GIL with the
plugin. It waits for the runner (the plugin's parent) to exit; then it
gives the plugin ACK_GRACE to show that its main thread runs (a byte on a
pipe, written as the plugin starts to stop, for whatever reason). A plugin
that does not answer in time is stuck: the watchdog stops it (SIGSTOP),
kills every process below it but itself, and kills it (SIGKILL). A plugin
that answered gets the stop grace, more than its own stop takes (the drain,
and the kill of what is left), and is killed the same way if it is still
there after it (a task that took the GIL back during the drain). The
watchdog dies with the plugin (PR_SET_PDEATHSIG), so it never outlives it
either.

Linux only (pidfds, the parent-death signal): elsewhere there is none.
"""

import os
import select
import signal
import sys
import time

#: How long the plugin has, once its runner is gone, to show that its main
#: thread runs (it polls its parent every 0.25 s).
ACK_GRACE = 1.0

PR_SET_PDEATHSIG = 1

_SCRIPT = os.path.abspath(__file__)


class Watchdog:
    """The plugin's side of its watchdog: the process, and the pipe to tell
    it that the plugin is stopping."""

    def __init__(self, proc, ack_w):
        self.proc = proc
        self.pid = proc.pid
        self._ack_w = ack_w

    def stopping(self):
        """Tell the watchdog that the plugin's main thread runs and stops
        the plugin: from here it gets the stop grace. Safe to call again."""
        fd, self._ack_w = self._ack_w, None
        if fd is None:
            return
        try:
            os.write(fd, b"s")
        except OSError:
            pass  # the watchdog is gone: nothing to tell
        finally:
            os.close(fd)


def start(stop_grace):
    """Start the watchdog of this process against its parent; return it, or
    None where there is none (not Linux, no pidfds, the parent gone, or it
    could not start: the plugin serves without it, as before)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return None
    import subprocess  # here: the watchdog itself does without it

    runner = os.getppid()
    if runner == 1:
        return None
    try:
        runner_fd = os.pidfd_open(runner)
    except OSError:
        return None
    ack_r = ack_w = None
    try:
        if os.getppid() != runner:  # it died before the pidfd was opened: the fd may be another process's
            return None
        ack_r, ack_w = os.pipe()
        proc = subprocess.Popen(
            [sys.executable or "/usr/bin/python3", "-I", "-S", _SCRIPT, str(os.getpid()), str(runner_fd), str(ack_r), repr(float(stop_grace))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(runner_fd, ack_r),
            env={"PATH": os.environ.get("PATH", os.defpath)},
        )
    except OSError:
        if ack_w is not None:
            os.close(ack_w)
        return None
    finally:
        os.close(runner_fd)
        if ack_r is not None:
            os.close(ack_r)
    return Watchdog(proc, ack_w)


def _watch(plugin, runner_fd, ack_r, stop_grace):
    import ctypes

    sys.path.insert(0, os.path.dirname(_SCRIPT))
    import _tree  # standalone, as this file: no package

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != plugin:
        return  # no guard against outliving the plugin, or it is already gone
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the runner

    # The runner's exit; the plugin's stop (its byte) may come first.
    acked, fds = False, [ack_r, runner_fd]
    while True:
        ready, _, _ = select.select(fds, [], [])
        if ack_r in ready:
            if not os.read(ack_r, 1):
                return  # closed without a word: the plugin exited
            acked, fds = True, [runner_fd]
        if runner_fd in ready:
            break
    if not acked:
        ready, _, _ = select.select([ack_r], [], [], ACK_GRACE)
        acked = bool(ready) and bool(os.read(ack_r, 1))
    if acked:
        time.sleep(stop_grace)
    if os.getppid() != plugin:
        return  # the plugin exited meanwhile
    start = _tree.stat(plugin)
    if start is None:
        return
    _tree.send(plugin, start[2], signal.SIGSTOP)
    _tree.end_all(root=plugin, spare=(os.getpid(),))
    _tree.send(plugin, start[2], signal.SIGKILL)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
