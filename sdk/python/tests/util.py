"""Shared test helpers: every test checks that it leaves no thread of the SDK
or the harness and no child process behind (what goleak does for Go)."""

import os
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTPLUGIN = os.path.join(HERE, "plugins", "testplugin.py")
EXAMPLE = os.path.join(HERE, "..", "..", "..", "examples", "python-plugin", "hello_python.py")
PYTHON = sys.executable


def children(pid=None):
    """The pids of live (non-zombie) child processes of pid (default: this one)."""
    pid = pid or os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _ours():
    return {t for t in threading.enumerate() if t.name.startswith(("pacer-task", "pacer-harness"))}


class TestCase(unittest.TestCase):
    def setUp(self):
        self._threads = _ours()
        self.addCleanup(self._no_leaks)

    def _no_leaks(self):
        try:
            wait_for(lambda: not (_ours() - self._threads), 10, "the SDK's threads to end")
        except AssertionError:
            self.fail(f"threads left running: {sorted(t.name for t in _ours() - self._threads)}")
        try:
            wait_for(lambda: not children(), 10, "child processes to exit")
        except AssertionError:
            self.fail(f"child processes left running: {children()}")
