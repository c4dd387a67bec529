"""What a task sees of its run: identity, cancellation, deadline, logger,
progress and spans."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import logging
import os
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _values
from ._pb.pacer.plugin.v1 import plugin_pb2 as pb

if TYPE_CHECKING:
    from ._proctree import Completed

# slog levels, which the runner's log uses.
DEBUG, INFO, WARN, ERROR = -4, 0, 4, 8

# Bounds on what a run sends, below the transport's 4 MiB message limit so the
# runner gets a clear error instead of a broken stream (as in the Go SDK).
MAX_MESSAGE_BYTES = 4 << 20
MAX_RESULT_BYTES = MAX_MESSAGE_BYTES - (64 << 10)
MAX_LOG_BYTES = 64 << 10


class InvalidParams(Exception):
    """Raise it when a run's params are unusable. The runner reports such a run
    as a configuration problem rather than a task failure."""


class TaskError(Exception):
    """Raise it to fail the attempt with its message and nothing more: unlike
    other exceptions, no traceback is logged."""


class Cancelled(Exception):
    """Raised by Context.check() once the run is cancelled or past its deadline."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class Result:
    """What a task returns: output shown to operators and stored in the run
    record (the runner bounds and sanitizes it), and structured data
    (JSON-compatible values)."""

    output: str = ""
    data: Optional[Dict[str, Any]] = None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Identifies the attempt a task is running. The runner fills it in."""

    job_id: str = ""
    run_id: str = ""
    #: Ties together every log line, span and record of the run, in the
    #: runner and in the plugin. Pass it on to systems you call.
    correlation_id: str = ""
    #: Counts from 1; retries of a slot have higher numbers.
    attempt: int = 0
    #: The slot's fire time (UTC): identical on every replica, so a good
    #: deduplication key.
    scheduled_time: Optional[datetime.datetime] = None
    #: Increases every time leadership of the job's shard changes hands; a
    #: system that stores the highest token it has seen (per shard: tokens of
    #: different shards are unrelated) can reject writes from a stale leader.
    fencing_token: int = 0
    #: The job's shard (cluster.shards); 0 from a runner without shards.
    shard: int = 0
    #: The runner replica that started the attempt.
    node: str = ""
    #: The run's trace ID (32 hex digits), or "" if the runner does not trace.
    trace_id: str = ""
    #: The variables of the runner's environment that the job's
    #: ``inherit_env`` names, resolved by the runner for this attempt. The
    #: plugin process's own environment is minimal (PATH, HOME, LANG, LC_*,
    #: TZ, TMPDIR, USER and what ``plugins.inherit_env`` adds), so a task
    #: that needs more reads it here. Never holds the API token's or the
    #: etcd password's variable.
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


class _Cancellation:
    """A run's cancellation: set once, with a reason; callbacks run once.
    no_grace says the run's commands (ctx.run) are to be killed at once,
    not given SIGTERM and their grace: the runner's lease ran out, and
    another replica may start the same slot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self.reason: Optional[str] = None
        self.no_grace = False
        self._callbacks: Dict[int, Callable[[str], None]] = {}
        self._next = 0

    def cancel(self, reason: str, no_grace: bool = False) -> bool:
        with self._lock:
            if self.reason is not None:
                return False
            self.reason, self.no_grace = reason, no_grace
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        self._event.set()
        if callbacks:
            # Off the caller's thread: it is the run stream's reader (a
            # cancel from the runner) or its lease watcher, which every run
            # on the stream shares. A callback that blocks (terminate a
            # child and wait for it) holds up its own run only.
            threading.Thread(target=_call_all, args=(callbacks, reason), name="pacer-on-cancel", daemon=True).start()
        return True

    def add(self, fn: Callable[[str], None]) -> Callable[[], None]:
        with self._lock:
            if self.reason is None:
                key = self._next
                self._next += 1
                self._callbacks[key] = fn

                def remove() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return remove
            reason = self.reason
        _call_quietly(fn, reason)
        return lambda: None

    def wait(self, timeout: Optional[float]) -> bool:
        return self._event.wait(timeout)


def _call_all(callbacks: List[Callable[[str], None]], reason: str) -> None:
    for fn in callbacks:
        _call_quietly(fn, reason)


def _call_quietly(fn: Callable[[str], None], reason: str) -> None:
    try:
        fn(reason)
    except Exception:  # a callback must not break cancellation
        traceback.print_exc()


class Sink:
    """Where a run's events go: the run's gRPC stream."""

    def emit(self, event: pb.RunEvent) -> None:
        raise NotImplementedError


@dataclasses.dataclass
class TraceParent:
    trace_id: bytes
    span_id: bytes
    sampled: bool


class RunState:
    """One attempt in progress: the plugin server's side of a Context."""

    def __init__(
        self,
        task: str,
        params: Dict[str, Any],
        info: RunInfo,
        sink: Sink,
        parent: Optional[TraceParent],
        timeout_ns: int,
    ):
        self.task = task
        self.params = params
        self.info = info
        self.sink = sink
        self.parent = parent
        self.cancellation = _Cancellation()
        self.started = time.monotonic()
        self.deadline_mono: Optional[float] = None
        self.deadline: Optional[datetime.datetime] = None
        if timeout_ns > 0:
            self.deadline_mono = self.started + timeout_ns / 1e9
            self.deadline = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(microseconds=timeout_ns // 1000)
        self.open = True  # false once the run's result is sent: later events are dropped
        #: Processes the run started that could not be confirmed dead (Context.run).
        self.processes_left: List[str] = []

    def emit(self, event: pb.RunEvent) -> None:
        if self.open:
            self.sink.emit(event)

    def log(self, level: int, msg: str, attrs: List[Tuple[str, Any]]) -> None:
        rec = pb.LogRecord(level=level, message=_values.text(msg), attrs=_values.attrs(attrs))
        rec.time.CopyFrom(_values.timestamp_ns(time.time_ns()))
        if rec.ByteSize() > MAX_LOG_BYTES:
            if len(rec.message) > MAX_LOG_BYTES // 2:
                # Between words, so that no secret is left half shown: the
                # runner's sanitizer would not recognise its first half.
                cut = rec.message.rfind(" ", MAX_LOG_BYTES // 4, MAX_LOG_BYTES // 2)
                if cut >= 0:
                    rec.message = rec.message[:cut]
                else:
                    # Inside a word: marked with "…", as the Go SDK marks a
                    # JWT or a URL's authority cut inside, so that the
                    # sanitizer masks what is kept of one.
                    rec.message = rec.message[: MAX_LOG_BYTES // 2 - 1] + "\u2026"
            rec.message += " [log record truncated]"
            del rec.attrs[:]
        self.emit(pb.RunEvent(log=rec))

    def progress(self, percent: float, message: str) -> None:
        self.emit(pb.RunEvent(progress=pb.Progress(percent=float(percent), message=_values.text(message))))


# The run (and span) the current thread works for, for LogHandler, current()
# and Context.span. The task's own thread has them set; a thread it starts
# has them only if it runs in a copy of the task's context
# (contextvars.copy_context().run): a new thread starts in an empty one.
_current_run: contextvars.ContextVar[Optional[RunState]] = contextvars.ContextVar("pacer_run", default=None)
_current_span: contextvars.ContextVar[Optional["Span"]] = contextvars.ContextVar("pacer_span", default=None)


class Logger:
    """A logger whose records reach the runner's log, tagged there with the
    run's correlation ID, job, run ID and trace ID and passed through the
    runner's sanitizer. Attributes are keyword arguments::

        ctx.log.info("copied", files=12, took=elapsed)

    Any name is an attribute's, ``level`` and ``msg`` included (the level and
    the message are positional only); the runner writes one named like a
    field of its own (``time``, ``level``, ``msg``, ``job``, …) as
    ``plugin.<name>``, as it does for a Go plugin's.
    """

    def __init__(self, run: Optional[RunState], attrs: Tuple[Tuple[str, Any], ...] = ()):
        self._run = run
        self._attrs = attrs

    def with_attrs(self, /, **attrs: Any) -> "Logger":
        """A logger that adds attrs to every record."""
        return Logger(self._run, self._attrs + tuple(attrs.items()))

    def log(self, level: int, msg: str, /, **attrs: Any) -> None:
        if self._run is not None:
            self._run.log(level, msg, list(self._attrs) + list(attrs.items()))

    def debug(self, msg: str, /, **attrs: Any) -> None:
        self.log(DEBUG, msg, **attrs)

    def info(self, msg: str, /, **attrs: Any) -> None:
        self.log(INFO, msg, **attrs)

    def warning(self, msg: str, /, **attrs: Any) -> None:
        self.log(WARN, msg, **attrs)

    warn = warning

    def error(self, msg: str, /, **attrs: Any) -> None:
        self.log(ERROR, msg, **attrs)

    def exception(self, msg: str, /, **attrs: Any) -> None:
        """error() with the exception being handled, and its traceback."""
        attrs.setdefault("traceback", traceback.format_exc())
        self.log(ERROR, msg, **attrs)


class LogHandler(logging.Handler):
    """Sends standard-library log records made during a run to that run's log
    (with the run's identity, like Context.log); records made outside a run go
    to stderr, which the runner logs as the plugin's own output::

        logging.getLogger().addHandler(pacer_sdk.LogHandler())

    A record is the run's when the thread that makes it works for the run:
    the task's thread, and a thread that runs in a copy of its context::

        threading.Thread(target=contextvars.copy_context().run, args=(fn, x)).start()
        pool.submit(contextvars.copy_context().run, fn, x)

    A thread started plainly (a new thread does not inherit contextvars) or
    one of a library's own pools works for no run, and neither does a thread
    still logging after the run has ended: their records go to stderr.
    ctx.log, handed to the code that logs, reaches the run from any thread.
    """

    _SKIP = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def emit(self, record: logging.LogRecord) -> None:
        run = _current_run.get()
        if run is None or not run.open:
            try:
                import sys

                sys.stderr.write(self.format(record) + "\n")
            except Exception:
                self.handleError(record)
            return
        try:
            level = DEBUG if record.levelno < logging.INFO else INFO if record.levelno < logging.WARNING else WARN if record.levelno < logging.ERROR else ERROR
            attrs: List[Tuple[str, Any]] = [("logger", record.name)]
            attrs += [(k, v) for k, v in vars(record).items() if k not in self._SKIP]
            if record.exc_info:
                attrs.append(("traceback", "".join(traceback.format_exception(*record.exc_info))))
            run.log(level, record.getMessage(), attrs)
        except Exception:
            self.handleError(record)


SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS = {"unset": 0, "error": 1, "ok": 2}


class Span:
    """A span of work inside a run. It joins the run's trace (under the
    runner's span for the call, or the span it was started in) and is shipped
    to the runner when it ends; the runner exports it with its own spans."""

    def __init__(self, run: Optional[RunState], name: str, parent_span_id: bytes, trace_id: bytes, sampled: bool, kind: int, scope: str):
        self._run = run
        self.name = name
        self.trace_id = trace_id
        self.span_id = _new_id(8)
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self.kind = kind
        self.scope = scope
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.attributes: Dict[str, Any] = {}
        self.events: List[Tuple[str, int, Dict[str, Any]]] = []
        self.status = 0
        self.status_message = ""
        self._lock = threading.Lock()

    def set_attribute(self, key: str, value: Any) -> "Span":
        with self._lock:
            self.attributes[str(key)] = value
        return self

    def set_attributes(self, attributes: Mapping[str, Any]) -> "Span":
        for k, v in attributes.items():
            self.set_attribute(k, v)
        return self

    def add_event(self, name: str, attributes: Optional[Mapping[str, Any]] = None) -> "Span":
        with self._lock:
            self.events.append((str(name), time.time_ns(), dict(attributes or {})))
        return self

    def set_status(self, status: str, message: str = "") -> "Span":
        """status is "ok", "error" or "unset"; message goes with "error"."""
        if status not in _STATUS:
            raise ValueError(f"span status {status!r}: want ok, error or unset")
        with self._lock:
            self.status = _STATUS[status]
            self.status_message = message if status == "error" else ""
        return self

    def record_exception(self, exc: BaseException) -> "Span":
        return self.add_event(
            "exception",
            {
                "exception.type": type(exc).__name__,
                "exception.message": str(exc),
                "exception.stacktrace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            },
        )

    @property
    def recording(self) -> bool:
        return self.sampled and self._run is not None and self.end_ns == 0

    def end(self) -> None:
        with self._lock:
            if self.end_ns:
                return
            self.end_ns = time.time_ns()
        if self.sampled and self._run is not None:
            self._run.emit(pb.RunEvent(span=self.data()))

    def data(self) -> pb.SpanData:
        sd = pb.SpanData(
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_span_id,
            name=_values.text(self.name),
            kind=self.kind,
            attributes=_values.attrs(self.attributes.items()),
            status_code=self.status,
            status_message=_values.text(self.status_message),
            scope_name=self.scope,
        )
        sd.start_time.CopyFrom(_values.timestamp_ns(self.start_ns))
        sd.end_time.CopyFrom(_values.timestamp_ns(self.end_ns or time.time_ns()))
        for name, t, a in self.events:
            ev = sd.events.add(name=_values.text(name), attributes=_values.attrs(a.items()))
            ev.time.CopyFrom(_values.timestamp_ns(t))
        return sd


def _new_id(n: int) -> bytes:
    while True:
        b = os.urandom(n)
        if any(b):
            return b


def start_span(run: Optional[RunState], name: str, kind: str = "internal", attributes: Optional[Mapping[str, Any]] = None, scope: str = "pacer_sdk") -> Span:
    """A span under the current span of run, or under the runner's span."""
    if kind not in SPAN_KINDS:
        raise ValueError(f"span kind {kind!r}: want one of {', '.join(SPAN_KINDS)}")
    cur = _current_span.get()
    if cur is not None and cur._run is run:
        parent_id, trace_id, sampled = cur.span_id, cur.trace_id, cur.sampled
    elif run is not None and run.parent is not None:
        parent_id, trace_id, sampled = run.parent.span_id, run.parent.trace_id, run.parent.sampled
    else:
        parent_id, trace_id, sampled = b"", _new_id(16), False  # a root span is never sampled
    span = Span(run, name, parent_id, trace_id, sampled, SPAN_KINDS[kind], scope)
    if attributes:
        span.set_attributes(attributes)
    return span


class Context:
    """A task's view of its run, passed as its first argument.

    It carries the run's identity (info), cancellation and deadline, a logger
    (log), progress reports and spans. Everything in it is safe to use from
    several threads.
    """

    def __init__(self, run: RunState):
        self._run = run
        self.log = Logger(run)

    @property
    def task(self) -> str:
        """The name the task was called by."""
        return self._run.task

    @property
    def info(self) -> RunInfo:
        return self._run.info

    @property
    def params(self) -> Dict[str, Any]:
        """The run's params as decoded JSON, before any typed decoding."""
        return self._run.params

    # Cancellation and deadline.

    @property
    def cancelled(self) -> bool:
        """True once the run is cancelled: by the runner (a timeout, a lost
        lease, a replaced run, a stopping runner) or at its deadline."""
        return self._run.cancellation.reason is not None

    @property
    def cancel_reason(self) -> Optional[str]:
        """Why the run was cancelled, e.g. "timed out after 10s"; None while it was not."""
        return self._run.cancellation.reason

    def check(self) -> None:
        """Raise Cancelled if the run is cancelled: call it between steps."""
        reason = self._run.cancellation.reason
        if reason is not None:
            raise Cancelled(reason)

    def wait(self, seconds: Optional[float] = None) -> bool:
        """Sleep up to seconds (None: until cancelled); wake early on
        cancellation. Returns True if the run is cancelled."""
        return self._run.cancellation.wait(seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep for seconds, or raise Cancelled as soon as the run is cancelled."""
        if self.wait(seconds):
            self.check()

    def on_cancel(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """Call fn(reason) once when the run is cancelled (at once if it already
        is), from another thread: e.g. to stop a subprocess or close a socket.
        Returns a function that unregisters fn."""
        return self._run.cancellation.add(fn)

    @property
    def deadline(self) -> Optional[datetime.datetime]:
        """When the attempt times out (UTC), or None without a timeout."""
        return self._run.deadline

    def time_remaining(self) -> Optional[float]:
        """Seconds left until the deadline (never negative), or None without one."""
        if self._run.deadline_mono is None:
            return None
        return max(0.0, self._run.deadline_mono - time.monotonic())

    # Processes.

    def run(
        self,
        args: Union[str, Sequence[str]],
        *,
        shell: bool = False,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Union[bytes, str, None] = None,
        on_line: Optional[Callable[[str], None]] = None,
        max_output: int = 64 << 10,
        grace: float = 2.0,
        kill_timeout: float = 5.0,
        check: bool = False,
    ) -> "Completed":
        """Run a command so that its whole process tree ends with it, and
        return how it ended (a Completed)::

            res = ctx.run(["pg_dump", "-f", path, db], on_line=ctx.log.info)
            if res.returncode != 0:
                raise pacer_sdk.TaskError(f"pg_dump: {res.state}: {res.output[-500:]}")

        Every process the command starts, including ones that call setsid or
        daemonise, stays in its tree (Linux). When the command exits, what is
        left of the tree is killed (Completed.leftovers names it); when the
        run is cancelled or times out, the tree gets SIGTERM, then SIGKILL
        after grace seconds. ctx.run returns only once nothing of the tree is
        alive; processes still alive kill_timeout seconds after SIGKILL raise
        ProcessesAlive, and the run's result then says so, so that the
        runner starts no retry while they may live.

        args is a list (or a program name), or with shell=True one string run
        by /bin/sh -c. stdout and stderr are read together: Completed.output
        keeps their first max_output bytes, on_line gets every line as it
        comes. input (bytes or str) is the command's stdin, else /dev/null.
        env replaces the default environment: the plugin's PATH, HOME, LANG,
        LC_*, TZ, TMPDIR and USER, the job's inherit_env variables
        (info.env) and the run's PACER_JOB_ID, PACER_RUN_ID,
        PACER_CORRELATION_ID and PACER_ATTEMPT. With check=True a non-zero
        exit raises TaskError and a stop raises Cancelled. A program that
        cannot start raises OSError (FileNotFoundError if it is not found).

        Start every process a task needs through ctx.run: a plain
        subprocess's children are not kept, and end at the latest with the
        plugin process.
        """
        from . import _proctree

        return _proctree.run(
            self._run,
            args,
            shell=shell,
            cwd=cwd,
            env=env,
            input=input,
            on_line=on_line,
            max_output=max_output,
            grace=grace,
            kill_timeout=kill_timeout,
            check=check,
        )

    # Reports.

    def report_progress(self, percent: float, message: str = "") -> None:
        """Tell the runner how far the task has got: percent in [0, 100]."""
        self._run.progress(percent, message)

    @contextlib.contextmanager
    def span(self, name: str, attributes: Optional[Mapping[str, Any]] = None, kind: str = "internal") -> Iterator[Span]:
        """A span around a block of work, nested under the span it is opened
        in. An exception leaving the block is recorded on it and marks it
        failed::

            with ctx.span("fetch", {"url": url}) as span:
                ...
        """
        span = start_span(self._run, name, kind, attributes)
        token = _current_span.set(span)
        try:
            yield span
        except BaseException as e:
            span.record_exception(e)
            span.set_status("error", str(e) or type(e).__name__)
            raise
        finally:
            _current_span.reset(token)
            span.end()


def current() -> Optional[Context]:
    """The Context of the run the calling thread works for, or None."""
    run = _current_run.get()
    return Context(run) if run is not None else None
