"""Shared test helpers: every test checks that it leaves no thread of the SDK
or the harness and no child process behind (what goleak does for Go)."""

import os
import queue
import sys
import threading
import time
import unittest
import uuid

from pacer_sdk import _values
from pacer_sdk._pb.pacer.plugin.v1 import plugin_pb2 as pb

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
    return {t for t in threading.enumerate() if t.name.startswith(("pacer-task", "pacer-harness", "pacer-stream"))}


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


def stream_run(run_id, task, params=None, timeout=None, traceparent="", info_run_id=None):
    """A StreamRun as the runner sends it."""
    ctx = pb.RunContext(job_id="test-job", run_id=info_run_id or uuid.uuid4().hex, correlation_id=f"corr-{run_id}", attempt=1, node="test")
    ctx.scheduled_time.GetCurrentTime()
    req = pb.RunRequest(task=task, context=ctx)
    req.params.CopyFrom(_values.struct(dict(params or {})))
    if timeout is not None:
        req.timeout.FromNanoseconds(int(timeout * 1e9))
    return pb.StreamRun(id=run_id, request=req, traceparent=traceparent)


class Stream:
    """A RunStream call, as the runner makes it: send() messages, and read
    the plugin's with recv() or ends()."""

    def __init__(self, harness):
        self._requests = queue.Queue()
        self._responses = queue.Queue()
        self.call = harness._stub.RunStream(iter(self._requests.get, None))
        self.error = None
        self._reader = threading.Thread(target=self._read, name="pacer-harness-stream", daemon=True)
        self._reader.start()
        #: Every event received, by run ID, in order.
        self.events = {}

    def _read(self):
        try:
            for m in self.call:
                self._responses.put(m)
        except Exception as e:  # grpc.RpcError: the call ended
            self.error = e
        finally:
            self._responses.put(None)

    def send(self, runs=(), cancels=(), lease_ms=None):
        req = pb.RunStreamRequest(runs=list(runs), cancels=[pb.StreamCancel(id=i, reason=r) for i, r in cancels])
        if lease_ms is not None:
            req.lease.remaining_ms = lease_ms
        self._requests.put(req)

    def close_send(self):
        """The runner closes its side (CloseSend)."""
        self._requests.put(None)

    def recv(self, timeout=30):
        """The next message, or None once the stream has ended."""
        try:
            m = self._responses.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message on the run stream within {timeout}s") from None
        if m is not None:
            for ev in m.events:
                self.events.setdefault(ev.id, []).append(ev)
        return m

    def ends(self, *ids, timeout=30):
        """Read until each run in ids has ended (a result or a status);
        return each run's last event."""
        deadline = time.monotonic() + timeout
        while True:
            last = {i: self.events[i][-1] for i in ids if i in self.events and _ends(self.events[i][-1])}
            if len(last) == len(ids):
                return last
            left = deadline - time.monotonic()
            if left <= 0 or self.recv(left) is None:
                raise AssertionError(f"runs {sorted(set(ids) - set(last))} did not end; events {self.events}, error {self.error}")

    def finish(self, timeout=30):
        """Read until the plugin ends the stream; return its error, if any."""
        deadline = time.monotonic() + timeout
        while self.recv(max(0.0, deadline - time.monotonic())) is not None:
            pass
        self._reader.join(timeout)
        return self.error

    def hang_up(self):
        self.call.cancel()
        self._requests.put(None)


def _ends(ev):
    return ev.HasField("status") or (ev.HasField("event") and ev.event.WhichOneof("event") == "result")
