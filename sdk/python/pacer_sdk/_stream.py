"""The plumbing of RunStream (docs/plugin-protocol.md, section 13): the
stream's outgoing events, each run's share of them, and the bound the
runner's lease puts on the stream's runs. The service itself is in
_server.py (TaskPluginServicer.RunStream)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque, List, Optional, Tuple

from . import _context, _duration
from ._pb.pacer.plugin.v1 import plugin_pb2 as pb

# A message stays below the transport's limit; an event that alone would not
# fit (a span with huge attributes: results and log records are cut down
# before) is dropped. Runs wait to add events while MAX_QUEUED_BYTES are
# waiting to go out, as a Run call's task waits on a full stream. The same
# bounds as the Go SDK's (sdk/internal/server/stream.go).
MAX_BATCH_BYTES = _context.MAX_MESSAGE_BYTES - (16 << 10)
MAX_QUEUED_BYTES = 2 * _context.MAX_MESSAGE_BYTES
# What an event costs in a RunStreamResponse beyond its own size: its tag
# and length, counted generously.
EVENT_OVERHEAD = 8


class Out:
    """A RunStream's outgoing side: events of every run in the order added,
    taken in batches that fit one message; and the state that says when the
    stream's generator may return (its reader has ended and every run has
    returned), under one condition so that the generator sleeps until
    something changes."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self._queue: Deque[Tuple[pb.StreamEvent, int]] = collections.deque()
        self._queued = 0
        self.closed = False  # the call ended: nothing more goes out
        self.reader_done = False  # the runner's side ended
        self.live = 0  # runs whose threads have not returned

    def add(self, ev: pb.StreamEvent) -> bool:
        """Queue ev to be sent, waiting while too much is queued. False: it
        was dropped (too large, or the call ended)."""
        n = ev.ByteSize()
        if n + EVENT_OVERHEAD > MAX_BATCH_BYTES:
            return False
        with self.cond:
            while not self.closed and self._queued > 0 and self._queued + n > MAX_QUEUED_BYTES:
                self.cond.wait()
            if self.closed:
                return False
            self._queue.append((ev, n))
            self._queued += n
            self.cond.notify_all()
            return True

    def next_batch(self) -> Optional[List[pb.StreamEvent]]:
        """Wait for events and take as many as fit one message; None once
        the stream is over: its reader ended (or the call did), every run
        returned, and nothing is left to send."""
        with self.cond:
            while True:
                if self._queue and not self.closed:
                    batch: List[pb.StreamEvent] = []
                    size = 0
                    while self._queue and (not batch or size + self._queue[0][1] + EVENT_OVERHEAD <= MAX_BATCH_BYTES):
                        ev, n = self._queue.popleft()
                        batch.append(ev)
                        size += n + EVENT_OVERHEAD
                        self._queued -= n
                    self.cond.notify_all()
                    return batch
                if (self.reader_done or self.closed) and self.live == 0:
                    return None
                self.cond.wait()

    def run_started(self) -> None:
        with self.cond:
            self.live += 1

    def run_returned(self) -> None:
        with self.cond:
            self.live -= 1
            self.cond.notify_all()

    def end_reading(self) -> None:
        with self.cond:
            self.reader_done = True
            self.cond.notify_all()

    def close(self) -> None:
        """The call ended: drop what is queued, and whatever comes after."""
        with self.cond:
            self.closed = True
            self._queue.clear()
            self._queued = 0
            self.cond.notify_all()


class RunSink(_context.Sink):
    """One run's events on the stream, tagged with its ID. A result or a
    status ends the run (end): nothing of it is sent after that."""

    def __init__(self, out: Out, run_id: int):
        self.out = out
        self.id = run_id
        self._lock = threading.Lock()  # keeps the run's events in order
        self._ended = False

    def emit(self, event: pb.RunEvent) -> None:
        with self._lock:
            if not self._ended:
                self.out.add(pb.StreamEvent(id=self.id, event=event))

    def end(self, ev: pb.StreamEvent) -> None:
        with self._lock:
            if not self._ended:
                self._ended = True
                self.out.add(ev)


class LeaseBound:
    """Bounds a RunStream's runs by the runner's lease (pb.Lease): each lease
    the runner sends moves the bound to its arrival + remaining_ms, on the
    monotonic clock; when the bound passes with no newer one, cancel_all is
    called with why. A runner frozen alone (SIGSTOP, a debugger) cannot
    fence itself when its lease runs out; this is how its runs still end
    before a new leader's runs of the same jobs start. Until the first lease
    there is no bound."""

    # The longest single wait: a bound far away (remaining_ms of years) is
    # waited for in steps threads can take.
    MAX_WAIT = 3600.0

    def __init__(self, cancel_all: Callable[[str], None]):
        self._cancel_all = cancel_all
        self._cond = threading.Condition(threading.Lock())
        self._set = False
        self._armed = False  # the bound has not passed since it last moved
        self._received = 0.0  # when the last lease arrived
        self._deadline = 0.0
        self._stopped = False
        self._thread: Optional[threading.Thread] = None

    def renew(self, remaining_ms: int) -> None:
        now = time.monotonic()
        with self._cond:
            if self._stopped:
                return
            self._set, self._armed, self._received, self._deadline = True, True, now, now + remaining_ms / 1000.0
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="pacer-stream-lease", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def expired(self) -> Optional[str]:
        """Why the stream's runs may not go on, or None while they may."""
        with self._cond:
            return self._expired_locked()

    def _expired_locked(self) -> Optional[str]:
        now = time.monotonic()
        if not self._set or self._stopped or now < self._deadline:
            return None
        since = int(round((now - self._received) * 1000)) * _duration.MILLISECOND
        return (
            f"the runner has not renewed its lease for {_duration.format(since)} (it may be frozen, and another replica may lead): "
            "the runs are cancelled so that a new leader's runs do not overlap them"
        )

    def _watch(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._armed:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(min(left, self.MAX_WAIT))
                    continue
                self._armed = False
                reason = self._expired_locked()
                if reason is None:
                    continue
                self._cond.release()
                try:
                    self._cancel_all(reason)
                finally:
                    self._cond.acquire()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
