"""Test a plugin over the real protocol, the way the runner calls it.

``Harness.start`` runs a plugin executable as the runner does (magic
cookie, AutoMTLS, the handshake line, gRPC over TLS, the runner's minimal
environment: see ``runner_env``) and ``Harness.serve``
serves a Plugin object inside the test process, over real gRPC and TLS too,
so that its tasks' state stays inspectable. Either way, ``run`` calls a task
and returns everything it produced: result, logs, progress and spans::

    class GreetTest(unittest.TestCase):
        def test_greet(self):
            with Harness.serve(plugin) as h:
                res = h.run("greet", {"name": "Ada"})
                self.assertEqual(res.output, "hello, Ada")
                self.assertEqual(res.logs[0].message, "greeting")

The harness is what sdk/sdktest is for Go plugins.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import queue
import subprocess
import threading
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import grpc

from . import _goplugin, _mtls, _schema, _values
from ._context import MAX_MESSAGE_BYTES, RunInfo
from ._pb import pacer_sdk_goplugin_pb2 as gp
from ._pb.pacer.plugin.v1 import plugin_pb2 as pb
from ._pb.pacer.plugin.v1 import plugin_pb2_grpc as pb_grpc
from ._plugin import Plugin
from ._serve import COOKIE_KEY, COOKIE_VALUE, CORE_PROTOCOL_VERSION, PROTOCOL_VERSION, listen
from ._server import TaskPluginServicer

__all__ = ["Harness", "Call", "Outcome", "Log", "SpanRecord", "TaskInfo", "StartError", "BASE_ENV", "runner_env"]

# The variables of the runner's environment every plugin process gets
# ("LC_*": all starting with LC_); the runner's own list (Go's
# internal/pluginenv.Base), which a test keeps this one equal to.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER")


def runner_env(inherit_env: Sequence[str] = (), environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment the runner starts a plugin process with, taken from
    environ (default: os.environ): the variables BASE_ENV names, and those
    inherit_env names (NAME, or PREFIX_* for all starting with PREFIX_), as
    the operator's plugins.inherit_env does. Harness.start adds the
    handshake's variables. To give a plugin more under test, pass
    ``env={**runner_env(["DB_URL"]), "EXTRA": "1"}`` to Harness.start."""
    patterns = list(BASE_ENV) + list(inherit_env)

    def matches(name: str) -> bool:
        for p in patterns:
            if p.endswith("*"):
                if len(p) > 1 and name.startswith(p[:-1]):
                    return True
            elif name == p:
                return True
        return False

    source = os.environ if environ is None else environ
    return {k: v for k, v in sorted(source.items()) if k and matches(k)}


class StartError(RuntimeError):
    """The plugin did not start: no handshake, a bad one, or no connection."""


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    #: The JSON Schema the runner checks jobs' params against ("" = any).
    params_schema: str


@dataclasses.dataclass(frozen=True)
class Log:
    level: int  # -4 debug, 0 info, 4 warn, 8 error
    message: str
    attrs: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: Dict[str, Any]
    events: List[str]
    status_code: int  # 0 unset, 1 error, 2 ok
    status_message: str
    kind: int


@dataclasses.dataclass
class Outcome:
    """Everything a call produced."""

    output: str = ""
    data: Dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The task's own failure message (RunResult.error), or None.
    error: Optional[str] = None
    #: Processes the run started that could not be confirmed dead
    #: (RunResult.processes_left), or "".
    processes_left: str = ""
    #: The call's gRPC status when it did not end with a result (unknown
    #: task, invalid params, a crash, a cancelled call), or None.
    status: Optional[grpc.StatusCode] = None
    details: str = ""
    logs: List[Log] = dataclasses.field(default_factory=list)
    progress: List[tuple] = dataclasses.field(default_factory=list)
    #: Spans the task finished, in the order they ended.
    spans: List[SpanRecord] = dataclasses.field(default_factory=list)
    #: The trace the call ran in, and the span standing for the runner's.
    trace_id: str = ""
    span_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status is None and self.error is None

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.status.name}: {self.details}"
        return f"error: {self.error}" if self.error is not None else f"ok: {self.output!r}"


@dataclasses.dataclass
class Call:
    """A task invocation in flight (see Harness.call)."""

    run_id: str
    _harness: "Harness"
    _done: threading.Event
    _outcome: Outcome
    _rpc: Any

    def cancel(self, reason: str = "cancelled by the test") -> bool:
        """Send Cancel for this run, as the runner does on a timeout. Returns
        the plugin's answer: whether the run was in flight."""
        return self._harness._stub.Cancel(pb.CancelRequest(run_id=self.run_id, reason=reason), timeout=10).found

    def hang_up(self) -> None:
        """Cancel the RPC itself, as a runner that goes away does."""
        self._rpc.cancel()

    def result(self, timeout: Optional[float] = 60.0) -> Outcome:
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} did not end within {timeout}s")
        return self._outcome

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Harness:
    """A running plugin and a client connected to it (see the module doc).
    Use it as a context manager, or call close()."""

    def __init__(self) -> None:
        self._channel: Optional[grpc.Channel] = None
        self._stub: pb_grpc.TaskPluginStub
        self._desc = pb.DescribeResponse()
        self._proc: Optional[subprocess.Popen] = None
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._stderr = bytearray()
        self._stdio = {gp.StdioData.STDOUT: bytearray(), gp.StdioData.STDERR: bytearray()}
        self._stray_stdout = bytearray()
        self._stdio_attached = threading.Event()
        self._in_process: Optional[tuple] = None
        self.handshake = ""

    # Starting.

    @classmethod
    def start(cls, argv: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None, start_timeout: float = 30.0) -> "Harness":
        """Run the plugin executable argv (a path, or a command line such as
        [sys.executable, "plugin.py"]) as the runner does.

        The process's environment is env and the handshake's variables;
        without env, runner_env(): the runner's minimal environment taken
        from os.environ, not all of it, so that a plugin that reads a
        variable the runner does not pass fails here too. A variable a task
        gets from its job is the run's (RunInfo.env), not the process's."""
        h = cls()
        try:
            h._start_process([argv] if isinstance(argv, str) else list(argv), env, start_timeout)
        except BaseException:
            h.close()
            raise
        return h

    @classmethod
    def serve(cls, plugin: Plugin) -> "Harness":
        """Serve plugin inside this process, over real gRPC and TLS."""
        problems = plugin.problems()
        if problems:
            raise ValueError("; ".join(problems))
        h = cls()
        try:
            cert_pem, key_pem, _ = _mtls.generate("Pacer test harness")
            servicer = TaskPluginServicer(plugin)
            stdio = _goplugin.Stdio()
            listener = listen(servicer, stdio, lambda: None, cert_pem)
            h._in_process = (servicer, stdio, listener)
            h.handshake = listener.handshake_line().strip()
            h._connect(listener.network, listener.address, _mtls.pem(listener.cert_der or b""), cert_pem, key_pem, 30.0)
        except BaseException:
            h.close()
            raise
        return h

    def _start_process(self, argv: List[str], env: Optional[Mapping[str, str]], timeout: float) -> None:
        cert_pem, key_pem, _ = _mtls.generate("Pacer test harness")
        full_env = runner_env() if env is None else dict(env)
        full_env.update(
            {
                COOKIE_KEY: COOKIE_VALUE,
                "PLUGIN_PROTOCOL_VERSIONS": str(PROTOCOL_VERSION),
                "PLUGIN_MIN_PORT": "0",
                "PLUGIN_MAX_PORT": "0",
                "PLUGIN_CLIENT_CERT": cert_pem.decode(),
            }
        )
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        lines: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._spawn(self._read_stdout, self._proc.stdout, lines)
        self._spawn(self._read_stderr, self._proc.stderr)
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            raise StartError(f"no handshake line on stdout within {timeout}s; stderr: {self.stderr[-2000:]!r}") from None
        if first is None:
            code = self._proc.wait(timeout=5)
            raise StartError(f"the plugin exited ({code}) before its handshake; stderr: {self.stderr[-2000:]!r}")
        self.handshake = first.decode(errors="replace").strip()
        network, address, server_pem = parse_handshake(self.handshake)
        self._connect(network, address, server_pem, cert_pem, key_pem, timeout)

    def _connect(self, network: str, address: str, server_pem: bytes, cert_pem: bytes, key_pem: bytes, timeout: float) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=server_pem, private_key=key_pem, certificate_chain=cert_pem)
        target = "unix:" + address if network == "unix" else address
        self._channel = grpc.secure_channel(
            target,
            creds,
            options=[
                ("grpc.ssl_target_name_override", _mtls.HOST),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise StartError(f"no gRPC connection to {target} over mTLS within {timeout}s") from None
        self._stub = pb_grpc.TaskPluginStub(self._channel)
        stdio = self._channel.unary_stream(
            f"/{_goplugin.STDIO_SERVICE}/StreamStdio", request_serializer=gp.Empty.SerializeToString, response_deserializer=gp.StdioData.FromString
        )(gp.Empty())
        self._stdio_call = stdio
        self._spawn(self._read_stdio, stdio)
        self._desc = self._stub.Describe(pb.DescribeRequest(), timeout=timeout)
        # Until the plugin has attached the stdio stream, what its tasks
        # print goes to its stderr. This SDK says when it has: wait for that,
        # so a test's first run prints through the stream, as a runner's
        # later runs do. A plugin that never says so is waited for briefly.
        self._stdio_attached.wait(min(timeout, 5.0))

    def _spawn(self, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"pacer-harness-{fn.__name__}")
        t.start()
        self._threads.append(t)

    def _read_stdout(self, f: Any, lines: "queue.Queue[Optional[bytes]]") -> None:
        first = f.readline()
        lines.put(first if first else None)
        while True:
            chunk = f.read1(65536) if hasattr(f, "read1") else f.read(65536)
            if not chunk:
                return
            with self._lock:
                self._stray_stdout += chunk

    def _read_stderr(self, f: Any) -> None:
        while True:
            chunk = f.read1(65536) if hasattr(f, "read1") else f.read(65536)
            if not chunk:
                return
            with self._lock:
                self._stderr += chunk

    def _read_stdio(self, stream: Any) -> None:
        try:
            if any(k == _goplugin.STDIO_ATTACHED for k, _ in stream.initial_metadata() or ()):
                self._stdio_attached.set()
            for data in stream:
                with self._lock:
                    if data.channel in self._stdio:
                        self._stdio[data.channel] += data.data
        except grpc.RpcError:
            pass

    # What the plugin says about itself.

    @property
    def name(self) -> str:
        return self._desc.name

    @property
    def version(self) -> str:
        return self._desc.version

    @property
    def sdk_version(self) -> str:
        return self._desc.sdk_version

    @property
    def tasks(self) -> List[TaskInfo]:
        return [TaskInfo(t.name, t.description, t.params_schema_json) for t in self._desc.tasks]

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def stdout(self) -> str:
        """What reached the runner through the stdio stream's stdout channel (print())."""
        with self._lock:
            return self._stdio[gp.StdioData.STDOUT].decode(errors="replace")

    def wait_stdout(self, text: str, timeout: float = 10.0) -> str:
        """Wait until text has reached stdout through the stdio stream and
        return stdout. print() travels apart from the run's result, so it
        may arrive just after run() returns. Raises TimeoutError if text
        has not arrived within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.stdout
            if text in out:
                return out
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{text!r} not on the plugin's stdout within {timeout}s; it has {out[-2000:]!r}")
            time.sleep(0.01)

    @property
    def stderr(self) -> str:
        """The process's stderr plus the stdio stream's stderr channel."""
        with self._lock:
            return (bytes(self._stderr) + bytes(self._stdio[gp.StdioData.STDERR])).decode(errors="replace")

    @property
    def stray_stdout(self) -> bytes:
        """Bytes on the process's real stdout after the handshake line: must stay empty."""
        with self._lock:
            return bytes(self._stray_stdout)

    def check_params(self, task: str, params: Mapping[str, Any]) -> List[str]:
        """The problems the runner reports for a job with these params when it
        loads its config, in its words (an unknown task included)."""
        for t in self._desc.tasks:
            if t.name == task:
                try:
                    schema = _schema.parse(t.params_schema_json)
                except _schema.SchemaError as e:
                    return [str(e)]
                return [str(p) for p in _schema.validate(schema, dict(params))]
        names = ", ".join(sorted(t.name for t in self._desc.tasks))
        return [f"plugin {_schema.go_quote(self.name)} has no task {_schema.go_quote(task)} (it has: {names})"]

    def healthy(self, timeout: float = 5.0) -> bool:
        """The runner's health probe: grpc.health.v1 Check of "plugin"."""
        assert self._channel is not None
        check = self._channel.unary_unary(
            f"/{_goplugin.HEALTH_SERVICE}/Check",
            request_serializer=gp.HealthCheckRequest.SerializeToString,
            response_deserializer=gp.HealthCheckResponse.FromString,
        )
        try:
            return check(gp.HealthCheckRequest(service=_goplugin.PLUGIN_HEALTH_NAME), timeout=timeout).status == gp.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    # Calling tasks.

    def run(
        self,
        task: str,
        params: Optional[Mapping[str, Any]] = None,
        *,
        info: Optional[RunInfo] = None,
        timeout: Optional[float] = None,
        wait: Optional[float] = 60.0,
    ) -> Outcome:
        """Call a task and wait for its outcome. timeout is the attempt's
        timeout, as a job's timeout would be; info the run identity the task
        sees (zero fields get test values)."""
        return self.call(task, params, info=info, timeout=timeout).result(wait)

    def call(
        self,
        task: str,
        params: Optional[Mapping[str, Any]] = None,
        *,
        info: Optional[RunInfo] = None,
        timeout: Optional[float] = None,
        sampled: bool = True,
    ) -> Call:
        """Start a call and return at once; see Call for cancelling it."""
        info = info or RunInfo()
        run_id = info.run_id or uuid.uuid4().hex
        ctx = pb.RunContext(
            job_id=info.job_id or "test-job",
            run_id=run_id,
            correlation_id=info.correlation_id or "test-" + uuid.uuid4().hex[:12],
            attempt=info.attempt or 1,
            fencing_token=info.fencing_token,
            shard=info.shard,
            node=info.node or "pacer-testing",
            env=dict(info.env),
        )
        scheduled = info.scheduled_time or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        ctx.scheduled_time.FromDatetime(scheduled.astimezone(datetime.timezone.utc).replace(tzinfo=None))
        req = pb.RunRequest(task=task, context=ctx)
        req.params.CopyFrom(_values.struct(dict(params or {})))
        if timeout is not None:
            req.timeout.FromNanoseconds(int(timeout * 1e9))
        trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
        outcome = Outcome(trace_id=trace_id, span_id=span_id)
        done = threading.Event()
        rpc = self._stub.Run(req, metadata=[("traceparent", f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}")])
        call = Call(run_id, self, done, outcome, rpc)
        self._spawn(self._collect, rpc, outcome, done)
        return call

    @staticmethod
    def _collect(rpc: Any, out: Outcome, done: threading.Event) -> None:
        try:
            for ev in rpc:
                kind = ev.WhichOneof("event")
                if kind == "log":
                    out.logs.append(Log(ev.log.level, ev.log.message, {a.key: _values.from_value(a.value) for a in ev.log.attrs}))
                elif kind == "progress":
                    out.progress.append((ev.progress.percent, ev.progress.message))
                elif kind == "span":
                    out.spans.append(_span(ev.span))
                elif kind == "result":
                    out.output = ev.result.output
                    out.data = _values.from_struct(ev.result.data)
                    out.error = ev.result.error or None
                    out.processes_left = ev.result.processes_left
        except grpc.RpcError as e:
            out.status, out.details = e.code(), e.details() or ""
        finally:
            done.set()

    # Stopping.

    def close(self) -> None:
        """Stop the plugin as the runner does: the controller's Shutdown, then
        a kill if it has not exited within 2 seconds."""
        if self._channel is not None:
            shutdown = self._channel.unary_unary(
                f"/{_goplugin.CONTROLLER_SERVICE}/Shutdown", request_serializer=gp.Empty.SerializeToString, response_deserializer=gp.Empty.FromString
            )
            try:
                shutdown(gp.Empty(), timeout=2)
            except grpc.RpcError:
                pass
            if getattr(self, "_stdio_call", None) is not None:
                self._stdio_call.cancel()
            self._channel.close()
            self._channel = None
        if self._in_process is not None:
            servicer, stdio, listener = self._in_process
            servicer.stop("plugin stopping: the test ended", 3.0)
            stdio.close()
            listener.close(0.5)
            self._in_process = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        if self._proc is not None:
            for f in (self._proc.stdout, self._proc.stderr):
                if f is not None:
                    f.close()

    @property
    def exit_code(self) -> Optional[int]:
        return self._proc.poll() if self._proc else None

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_handshake(line: str) -> tuple:
    """Check a handshake line as the runner (go-plugin's client) does and
    return (network, address, the plugin's certificate as PEM). Raises
    StartError naming what is wrong."""
    parts = line.strip().split("|")
    if len(parts) < 4:
        raise StartError(f"unrecognized handshake line {line!r}: want CORE|APP|NETWORK|ADDRESS|grpc|CERT")
    if parts[0] != str(CORE_PROTOCOL_VERSION):
        raise StartError(f"handshake: core protocol version {parts[0]!r}, want {CORE_PROTOCOL_VERSION}")
    if parts[1] != str(PROTOCOL_VERSION):
        raise StartError(f"handshake: app protocol version {parts[1]!r}, want {PROTOCOL_VERSION}")
    if parts[2] not in ("unix", "tcp"):
        raise StartError(f"handshake: network {parts[2]!r}, want unix or tcp")
    if len(parts) < 5 or parts[4] != "grpc":
        raise StartError(f"handshake: protocol {parts[4] if len(parts) > 4 else ''!r}, want grpc")
    if len(parts) < 6 or len(parts[5]) <= 50:
        raise StartError("handshake: no certificate (6th field): the plugin must serve AutoMTLS when PLUGIN_CLIENT_CERT is set")
    try:
        pem = _mtls.decode_cert(parts[5])
    except Exception as e:
        raise StartError(f"handshake: certificate field: {e}") from None
    return parts[2], parts[3], pem


def _span(sd: pb.SpanData) -> SpanRecord:
    return SpanRecord(
        name=sd.name,
        trace_id=sd.trace_id.hex(),
        span_id=sd.span_id.hex(),
        parent_span_id=sd.parent_span_id.hex(),
        attributes={a.key: _values.from_value(a.value) for a in sd.attributes},
        events=[e.name for e in sd.events],
        status_code=sd.status_code,
        status_message=sd.status_message,
        kind=sd.kind,
    )

