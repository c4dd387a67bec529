"""The TaskPlugin gRPC service: Describe, Run (the event stream), Cancel,
and RunStream (many runs over one stream; its plumbing is in _stream.py)."""

from __future__ import annotations

import contextvars
import datetime
import queue
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import grpc

from . import _context, _duration, _stream, _values
from ._context import Cancelled, Context, InvalidParams, Result, RunInfo, RunState, TaskError, TraceParent
from ._params import ParamsError
from ._pb.pacer.plugin.v1 import plugin_pb2 as pb
from ._pb.pacer.plugin.v1 import plugin_pb2_grpc as pb_grpc
from ._plugin import VERSION, Plugin, Task
from ._schema import go_quote

# How long a Cancel that arrived before its Run waits for it, and how many
# such Cancels are remembered at most (the oldest are forgotten first).
TOMBSTONE_TTL = 60.0
MAX_TOMBSTONES = 10_000
# Events a run may have in flight to the runner before its task waits.
EVENT_QUEUE = 1024


def parse_traceparent(metadata: Any) -> Optional[TraceParent]:
    """The W3C trace context the runner sent (metadata key "traceparent")."""
    for key, value in metadata or ():
        if key != "traceparent":
            continue
        parts = value.strip().split("-")
        if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
            return None
        if parts[0] == "00" and len(parts) != 4:
            return None
        try:
            tid, sid, flags = bytes.fromhex(parts[1]), bytes.fromhex(parts[2]), int(parts[3][:2], 16)
        except ValueError:
            return None
        if len(tid) != 16 or len(sid) != 8 or not any(tid) or not any(sid) or len(parts[3]) != 2:
            return None
        return TraceParent(tid, sid, bool(flags & 1))
    return None


class _StreamSink(_context.Sink):
    """A run's events on their way to its gRPC stream. The task's threads put,
    the RPC's thread sends: a full queue holds the task back (as a blocked
    Send does in the Go SDK) until the runner hangs up, after which events are
    dropped."""

    def __init__(self) -> None:
        self.q: "queue.Queue[Any]" = queue.Queue(maxsize=EVENT_QUEUE)
        self.closed = threading.Event()

    def emit(self, event: pb.RunEvent) -> None:
        while not self.closed.is_set():
            try:
                self.q.put(event, timeout=0.25)
                return
            except queue.Full:
                continue


_END = object()


class _Active:
    def __init__(self, run: RunState, sink: _context.Sink):
        self.run = run
        self.sink = sink


class TaskPluginServicer(pb_grpc.TaskPluginServicer):
    """Serves one Plugin. The same object serves a plugin process (serve) and
    the in-process test harness."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active: Dict[str, _Active] = {}
        self._tombstones: Dict[str, Tuple[str, float]] = {}
        self._seq = 0
        self._stopping: Optional[str] = None
        self._streams: "set[_RunStream]" = set()  # open RunStreams

    # Describe.

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        resp = pb.DescribeResponse(name=self.plugin.name, version=self.plugin.version, sdk_version=VERSION)
        resp.capabilities.run_stream = True  # the optional parts of the protocol it serves
        for name in sorted(self.plugin.tasks):
            t = self.plugin.tasks[name]
            resp.tasks.add(name=name, description=_values.text(t.description), params_schema_json=t.params_schema_json())
        return resp

    # Cancel.

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        reason = request.reason or "cancelled by the runner"
        with self._lock:
            active = self._active.get(request.run_id)
            if active is None and request.run_id:
                # Cancel can overtake its Run on the wire: remember it, so
                # that the Run starts cancelled.
                now = time.monotonic()
                for rid in [r for r, (_, at) in self._tombstones.items() if now - at > TOMBSTONE_TTL]:
                    del self._tombstones[rid]
                while len(self._tombstones) >= MAX_TOMBSTONES:
                    del self._tombstones[next(iter(self._tombstones))]
                self._tombstones[request.run_id] = (reason, now)
        if active is not None:
            active.run.cancellation.cancel(reason)
        return pb.CancelResponse(found=active is not None)

    # Run.

    def Run(self, request: pb.RunRequest, context: grpc.ServicerContext) -> Iterator[pb.RunEvent]:
        sink = _StreamSink()
        try:
            att = _Attempt(self, request, parse_traceparent(context.invocation_metadata()), sink)
        except RunStatus as st:
            context.abort(st.code, st.details)

        def hung_up() -> None:
            sink.closed.set()
            att.run.cancellation.cancel("the runner ended the call")

        context.add_callback(hung_up)
        try:
            outcome: Dict[str, Any] = {}
            try:
                att.start(outcome, lambda: sink.emit(_END))
            except RunStatus as st:
                context.abort(st.code, st.details)
            while True:
                try:
                    ev = sink.q.get(timeout=0.25)
                except queue.Empty:
                    if sink.closed.is_set() or not context.is_active():
                        return
                    continue
                if ev is _END:
                    break
                yield ev
            if "status" in outcome:
                context.abort(*outcome["status"])
            yield outcome["result"]
        finally:
            att.finish()

    # RunStream.

    def RunStream(self, request_iterator: Iterator[pb.RunStreamRequest], context: grpc.ServicerContext) -> Iterator[pb.RunStreamResponse]:
        """Many runs over one stream, each exactly as if it had its own Run
        call (docs/plugin-protocol.md, section 13). A run's events go out
        tagged with its stream ID, several runs' in one message when they
        are ready together. When the stream ends (the runner closes its
        side, or the call ends), every run on it is cancelled, and the
        stream ends once they all have returned."""
        s = _RunStream(self)
        context.add_callback(s.hung_up)
        with self._lock:
            self._streams.add(s)
            if self._stopping is not None:
                s.out.end_reading()  # the plugin stops: the stream ends once its runs have
        try:
            # An empty message opens the plugin's side: the runner sends
            # runs once it has it.
            yield pb.RunStreamResponse()
            reader = threading.Thread(target=s.read, args=(request_iterator,), name="pacer-stream-reader", daemon=True)
            reader.start()
            while True:
                batch = s.out.next_batch()
                if batch is None:
                    return
                yield pb.RunStreamResponse(events=batch)
        finally:
            s.out.close()  # nothing is sent after RunStream returns
            with self._lock:
                self._streams.discard(s)

    def _execute(self, task: Task, run: RunState, params: Any, outcome: Dict[str, Any], done: Callable[[], None]) -> None:
        """The task's thread: run it, turn its answer into the last event
        (outcome["result"]), or the status the run ends with instead
        (outcome["status"]), then call done."""
        _context._current_run.set(run)
        ctx = Context(run)
        try:
            try:
                answer = task.fn(ctx, params) if task.takes_params else task.fn(ctx)
                res = _result(task.name, answer)
            except InvalidParams as e:
                outcome["status"] = (grpc.StatusCode.INVALID_ARGUMENT, _values.text(f"invalid params: {e}"))
                return
            except Cancelled as e:
                res = pb.RunResult(error=_values.text(f"cancelled: {e.reason}"))
            except TaskError as e:
                res = pb.RunResult(error=_values.text(e) or "task failed")
            except BaseException as e:  # noqa: B902 - every failure ends the attempt, not the plugin
                ctx.log.error(f"task raised {type(e).__name__}", error=str(e), traceback=traceback.format_exc())
                res = pb.RunResult(error=_values.text(f"{type(e).__name__}: {e}") if str(e) else type(e).__name__)
            if run.processes_left:
                # Whatever the task made of the exception: no retry may start.
                res.processes_left = _values.text("; ".join(run.processes_left))
            ev = pb.RunEvent(result=res)
            if ev.ByteSize() > _context.MAX_RESULT_BYTES:
                ev = pb.RunEvent(
                    result=pb.RunResult(
                        error=f"task {go_quote(task.name)} returned a result of {ev.ByteSize()} bytes, over the "
                        f"{_context.MAX_RESULT_BYTES}-byte limit: return less, or store large output elsewhere and return a reference",
                        processes_left=res.processes_left,
                    )
                )
            outcome["result"] = ev
        finally:
            run.open = False  # spans ending after the result are dropped, as in the Go SDK
            done()

    def _track(self, run: RunState, sink: _context.Sink) -> str:
        with self._lock:
            tomb = self._tombstones.pop(run.info.run_id, None)
            if tomb is not None:
                run.cancellation.cancel(tomb[0])
            if self._stopping is not None:
                run.cancellation.cancel(self._stopping)
            self._seq += 1
            key = run.info.run_id
            if not key or key in self._active:
                key = f"{key}#{self._seq}"
            self._active[key] = _Active(run, sink)
            return key

    def _untrack(self, key: str) -> None:
        with self._lock:
            self._active.pop(key, None)
            if not self._active:
                self._idle.notify_all()

    def runs(self) -> int:
        with self._lock:
            return len(self._active)

    def stop(self, reason: str, grace: float) -> bool:
        """Cancel every run (and every later one) with reason, then wait up to
        grace seconds for them to end. Returns whether they all did. Open
        RunStreams end once their runs have returned, so that the server's
        stop need not wait for the runner to close them."""
        with self._lock:
            self._stopping = reason
            active = list(self._active.values())
        for a in active:
            a.run.cancellation.cancel(reason)
        deadline = time.monotonic() + grace
        try:
            with self._lock:
                while self._active:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(left)
            return True
        finally:
            with self._lock:
                streams = list(self._streams)
            for s in streams:
                s.out.end_reading()


class RunStatus(Exception):
    """The gRPC status a run ends with instead of a result: its Run call's,
    or on a RunStream its StreamStatus."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


class _Attempt:
    """One run, on its own Run call or on a RunStream: the same code either
    way, so that a run means the same on both (its params checked, its
    timeout, its tracking for Cancel and for the plugin's stop, its task's
    thread)."""

    def __init__(self, servicer: TaskPluginServicer, request: pb.RunRequest, tp: Optional[TraceParent], sink: _context.Sink):
        task = servicer.plugin.tasks.get(request.task)
        if task is None:
            raise RunStatus(grpc.StatusCode.NOT_FOUND, f"plugin {go_quote(servicer.plugin.name)} has no task {go_quote(request.task)}")
        self._servicer = servicer
        self.task = task
        self.params = _values.from_struct(request.params)
        timeout_ns = request.timeout.seconds * 1_000_000_000 + request.timeout.nanos if request.HasField("timeout") else 0
        # A timeout longer than threads can wait (about 292 years) is none.
        if timeout_ns / 1e9 >= threading.TIMEOUT_MAX:
            timeout_ns = 0
        self.timeout_ns = timeout_ns
        self.run = RunState(request.task, self.params, _run_info(request.context, tp), sink, tp, timeout_ns)
        self._key = servicer._track(self.run, sink)
        self._timer: Optional[threading.Timer] = None

    def start(self, outcome: Dict[str, Any], done: Callable[[], None]) -> None:
        """Check the params and start the task's thread, which fills in
        outcome and calls done when the task has returned. Raises RunStatus
        (InvalidArgument) for params the task's spec refuses."""
        task, run = self.task, self.run
        try:
            typed = task.spec.decode(self.params) if task.spec is not None else self.params
        except ParamsError as e:
            raise RunStatus(grpc.StatusCode.INVALID_ARGUMENT, _values.text(f"invalid params: {e}")) from None
        if self.timeout_ns > 0:
            self._timer = threading.Timer(self.timeout_ns / 1e9, run.cancellation.cancel, (f"timed out after {_duration.format(_shown(self.timeout_ns))}",))
            self._timer.daemon = True
            self._timer.start()
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._servicer._execute, task, run, typed, outcome, done),
            name=f"pacer-task-{task.name}",
            daemon=True,
        )
        thread.start()

    def finish(self) -> None:
        """The run is over for the plugin: stop its timer, forget it."""
        if self._timer is not None:
            self._timer.cancel()
        self._servicer._untrack(self._key)


# Why a stream's runs are cancelled when the stream ends.
STREAM_CLOSED = "the runner closed the run stream"


class _RunStream:
    """One RunStream call: the runs on it by their stream IDs, the lease
    that bounds them, and its outgoing events (_stream.Out)."""

    def __init__(self, servicer: TaskPluginServicer):
        self._servicer = servicer
        self.out = _stream.Out()
        self._lock = threading.Lock()
        self._runs: Dict[int, _Attempt] = {}
        self._ended: Optional[str] = None  # set once the stream ended: runs start cancelled
        # A lease that ran out kills the runs' commands without grace.
        self.lease = _stream.LeaseBound(lambda reason: self._cancel_all(reason, no_grace=True))

    def read(self, requests: Iterator[pb.RunStreamRequest]) -> None:
        """The stream's reader thread: start and cancel runs as the runner
        asks, until its side ends; then cancel every run on the stream."""
        try:
            for req in requests:
                if req.HasField("lease"):
                    self.lease.renew(req.lease.remaining_ms)
                for r in req.runs:
                    self._start(r)
                for c in req.cancels:
                    with self._lock:
                        att = self._runs.get(c.id)
                    if att is not None:
                        att.run.cancellation.cancel(c.reason or "cancelled by the runner")
        except grpc.RpcError:
            pass  # the call ended: the runs are cancelled below
        except Exception:  # a bug here must not leave the stream's runs going
            traceback.print_exc()
        finally:
            self.lease.stop()
            self._cancel_all(STREAM_CLOSED, ended=True)
            self.out.end_reading()

    def hung_up(self) -> None:
        """The call ended (gRPC's callback, also after a normal end)."""
        self.out.close()
        self._cancel_all(STREAM_CLOSED, ended=True)

    def _cancel_all(self, reason: str, ended: bool = False, no_grace: bool = False) -> None:
        with self._lock:
            if ended and self._ended is None:
                self._ended = reason
            runs = list(self._runs.values())
        for att in runs:
            att.run.cancellation.cancel(reason, no_grace=no_grace)

    def _start(self, r: pb.StreamRun) -> None:
        sink = _stream.RunSink(self.out, r.id)
        with self._lock:
            dup = r.id in self._runs
        if dup:
            sink.end(_status_event(r.id, grpc.StatusCode.INVALID_ARGUMENT, "run stream: a run with this ID is running already"))
            return
        tp = parse_traceparent((("traceparent", r.traceparent),)) if r.traceparent else None
        try:
            att = _Attempt(self._servicer, r.request, tp, sink)
        except RunStatus as st:
            sink.end(_status_event(r.id, st.code, st.details))
            return
        with self._lock:
            self._runs[r.id] = att
            ended = self._ended
        # A run that arrives once the lease passed (no newer one came with
        # it) starts cancelled, and ends as one cancelled.
        expired = None if ended else self.lease.expired()
        why = ended or expired
        if why is not None:
            att.run.cancellation.cancel(why, no_grace=expired is not None)
        outcome: Dict[str, Any] = {}
        self.out.run_started()
        try:
            att.start(outcome, lambda: self._end(r.id, att, sink, outcome))
        except RunStatus as st:
            self._forget(r.id)
            sink.end(_status_event(r.id, st.code, st.details))
            att.finish()
            self.out.run_returned()

    def _end(self, run_id: int, att: _Attempt, sink: _stream.RunSink, outcome: Dict[str, Any]) -> None:
        """A run's task returned (on its thread): send its end."""
        try:
            self._forget(run_id)
            if "status" in outcome:
                sink.end(_status_event(run_id, *outcome["status"]))
            elif "result" in outcome:
                sink.end(pb.StreamEvent(id=run_id, event=outcome["result"]))
            else:
                sink.end(_status_event(run_id, grpc.StatusCode.INTERNAL, "the task's thread ended without a result"))
        finally:
            att.finish()
            self.out.run_returned()

    def _forget(self, run_id: int) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


def _status_event(run_id: int, code: grpc.StatusCode, details: str) -> pb.StreamEvent:
    return pb.StreamEvent(id=run_id, status=pb.StreamStatus(code=code.value[0], message=_values.text(details)))


def _shown(ns: int) -> int:
    """A run's timeout as its cancellation reason names it (Go SDK: server.Shown).

    The runner sends what is left of the job's timeout when the run starts
    (1.99996s of 2s): rounded to a tenth of a second from one second up, to
    the millisecond below, so the reason reads like the job's config.
    """
    unit = 100 * _duration.MILLISECOND if ns >= _duration.SECOND else _duration.MILLISECOND
    return ns if ns < _duration.MILLISECOND else (ns + unit // 2) // unit * unit


def _run_info(c: pb.RunContext, tp: Optional[TraceParent]) -> RunInfo:
    scheduled = None
    if c.HasField("scheduled_time"):
        scheduled = datetime.datetime.fromtimestamp(c.scheduled_time.seconds, datetime.timezone.utc) + datetime.timedelta(
            microseconds=c.scheduled_time.nanos // 1000
        )
    return RunInfo(
        job_id=c.job_id,
        run_id=c.run_id,
        correlation_id=c.correlation_id,
        attempt=c.attempt,
        scheduled_time=scheduled,
        fencing_token=c.fencing_token,
        shard=c.shard,
        node=c.node,
        trace_id=tp.trace_id.hex() if tp is not None else "",
        env=dict(c.env),
    )


def _result(task: str, answer: Any) -> pb.RunResult:
    if answer is None:
        return pb.RunResult()
    if isinstance(answer, str):
        return pb.RunResult(output=_values.text(answer))
    if isinstance(answer, Result):
        res = pb.RunResult(output=_values.text(answer.output or ""))
        if answer.data:
            try:
                res.data.CopyFrom(_values.struct(answer.data))
            except TypeError as e:
                res.error = f"task {go_quote(task)} returned data that is not JSON-compatible: {e}"
        return res
    return pb.RunResult(error=f"task {go_quote(task)} returned a {type(answer).__name__}; return a str, a pacer_sdk.Result or None")
