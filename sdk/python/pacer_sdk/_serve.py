"""Serving a plugin process: the go-plugin handshake, AutoMTLS, the stdout
guard, and stopping when the runner asks, signals or dies.

The sequence (docs/plugin-protocol.md has the protocol behind it):

1. Check the magic cookie: started by hand, the plugin says so and exits 1.
   On Linux, make the process non-dumpable (prctl PR_SET_DUMPABLE 0), so
   that tasks, which run as the same user, cannot read its memory or
   environment through /proc.
2. Guard stdout: keep the real stdout for the handshake line alone. File
   descriptor 1 is pointed at stderr, so that a child process or C code
   writing to it cannot corrupt the protocol, and sys.stdout and sys.stderr
   forward Python's own output to the runner over go-plugin's stdio stream.
3. Serve gRPC (TaskPlugin, health, controller, stdio) over TLS on a Unix
   socket in a private directory, with a fresh certificate, accepting only
   the runner's (PLUGIN_CLIENT_CERT).
4. Print the handshake line: 1|1|unix|<socket>|grpc|<certificate>.
5. Run until the runner calls the controller's Shutdown, sends SIGTERM (the
   runner asks the kernel to send it when it dies), or the parent process
   changes (the runner died and the plugin was re-parented). Then cancel
   every run, give them 3 seconds to return, kill every process left below
   the plugin, and exit 0. When the runner died, the processes below the
   plugin are killed first, at once: nothing a run started may outlive the
   runner that would have recorded it. A watchdog process (_watchdog.py)
   kills the plugin when a task holding the GIL keeps all of this from
   running.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures
from typing import Optional

import grpc

from . import _goplugin, _mtls, _proctree, _watchdog
from ._context import MAX_MESSAGE_BYTES
from ._pb import pacer_sdk_goplugin_pb2 as gp
from ._pb.pacer.plugin.v1 import plugin_pb2_grpc as pb_grpc
from ._plugin import Plugin
from ._server import TaskPluginServicer

# The handshake, shared with the runner (sdk/pluginv1/handshake.go).
COOKIE_KEY = "PACER_PLUGIN_COOKIE"
COOKIE_VALUE = "5c1a3f0e-pacer-task-plugin"
CORE_PROTOCOL_VERSION = 1  # go-plugin's own protocol
PROTOCOL_VERSION = 1  # Pacer's plugin protocol (pacer.plugin.v1)

# How long in-flight tasks get to return once the plugin stops.
DRAIN_GRACE = 3.0
# How often the plugin checks that its runner is alive.
PARENT_POLL = 0.25
# gRPC worker threads: one per run in flight, plus the stdio stream and the
# short calls (Describe, Cancel, health). Threads are made as needed.
MAX_WORKERS = 1024

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class Listener:
    """A served plugin: the gRPC server, where it listens and its certificate."""

    def __init__(self, server: grpc.Server, network: str, address: str, cert_der: Optional[bytes], cleanup_dir: Optional[str]):
        self.server = server
        self.network = network
        self.address = address
        self.cert_der = cert_der
        self._dir = cleanup_dir

    def handshake_line(self) -> str:
        cert = _mtls.encode_cert(self.cert_der) if self.cert_der else ""
        return f"{CORE_PROTOCOL_VERSION}|{PROTOCOL_VERSION}|{self.network}|{self.address}|grpc|{cert}\n"

    def close(self, grace: Optional[float] = None) -> None:
        self.server.stop(grace).wait()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def listen(servicer: TaskPluginServicer, stdio: _goplugin.Stdio, shutdown, client_cert_pem: Optional[bytes]) -> Listener:  # type: ignore[no-untyped-def]
    """Start a gRPC server for servicer the way go-plugin's Serve does: on a
    Unix socket in a fresh private directory (under PLUGIN_UNIX_SOCKET_DIR if
    set), with TLS requiring client_cert_pem's holder when it is given."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="pacer-grpc"), options=SERVER_OPTIONS)
    pb_grpc.add_TaskPluginServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((_goplugin.health_handler(), _goplugin.controller_handler(shutdown), stdio.handler()))
    creds, cert_der = None, None
    if client_cert_pem:
        cert_pem, key_pem, cert_der = _mtls.generate()
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert_pem, require_client_auth=True)
    sock_dir = tempfile.mkdtemp(prefix="pacer-plugin-", dir=os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or None)
    path = os.path.join(sock_dir, "plugin.sock")
    network, address, cleanup = "unix", path, sock_dir
    if len(path) > 100:  # beyond what sockaddr_un holds: loopback TCP, as go-plugin does on Windows
        shutil.rmtree(sock_dir, ignore_errors=True)
        network, address, cleanup = "tcp", _tcp_address(), None
    target = "unix:" + address if network == "unix" else address
    port = server.add_secure_port(target, creds) if creds else server.add_insecure_port(target)
    if port == 0:
        raise OSError(f"cannot listen on {target}")
    if network == "tcp":
        address = f"127.0.0.1:{port}"
    server.start()
    return Listener(server, network, address, cert_der, cleanup)


def _tcp_address() -> str:
    lo, hi = int(os.environ.get("PLUGIN_MIN_PORT") or 0), int(os.environ.get("PLUGIN_MAX_PORT") or 0)
    return f"127.0.0.1:{lo if lo == hi else 0}"


class _Process:
    """The process-wide state of a served plugin."""

    def __init__(self) -> None:
        self.stop_reason: Optional[str] = None  # set from the signal handler: a plain assignment
        self.shutdown_requested = threading.Event()


def _non_dumpable() -> None:
    """Keep processes of the same user out of this one's /proc/PID/environ
    and /proc/PID/mem, and ptrace (Linux; elsewhere nothing is done)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_DUMPABLE = 4
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not fatal: the plugin works as before


def serve(plugin: Plugin) -> None:
    """Serve plugin as a Pacer plugin process. Call it from the plugin's main
    code; it never returns.

    Nothing may be written to stdout before serve() runs (not even at import
    time): stdout carries the handshake. Afterwards stray output, print()
    included, goes to the runner's log. The plugin exits on its own when the
    runner stops it or dies.
    """
    problems = plugin.problems()
    if problems:
        sys.stderr.write(f"pacer plugin {plugin.name!r}: {'; '.join(problems)}\n")
        sys.exit(1)
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins, which will\n"
            "load any plugins automatically\n"
        )
        sys.exit(1)
    _non_dumpable()
    proc = _Process()
    ppid = os.getppid()
    # Forked before the plugin has a thread of its own (gRPC's start them).
    watchdog = _watchdog.start(DRAIN_GRACE + DESCENDANTS_GRACE + 1.0)
    spare = (watchdog.pid,) if watchdog is not None else ()

    def on_sigterm(signum, frame):  # type: ignore[no-untyped-def]
        proc.stop_reason = "SIGTERM"

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C in a terminal is for the runner, which stops its plugins itself
    # (go-plugin's plugins ignore it too).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    handshake_fd = _guard_stdout()
    stdio = _goplugin.Stdio()
    sys.stdout = _goplugin.StdioWriter(stdio, gp.StdioData.STDOUT, 1)  # type: ignore[assignment]
    sys.stderr = _goplugin.StdioWriter(stdio, gp.StdioData.STDERR, 2)  # type: ignore[assignment]

    servicer = TaskPluginServicer(plugin)
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "").encode() or None
    try:
        listener = listen(servicer, stdio, proc.shutdown_requested.set, client_cert)
    except Exception as e:
        _write_all(2, f"pacer plugin {plugin.name!r}: cannot serve: {e}\n".encode())
        os._exit(1)
    _write_all(handshake_fd, listener.handshake_line().encode())

    reason = _wait(proc, ppid)
    if watchdog is not None:
        watchdog.stopping()
    if reason == "parent" or (reason == "signal" and os.getppid() != ppid):  # SIGTERM from the parent-death signal
        _end_descendants(spare)
        _write_all(2, b"pacer plugin: runner process is gone; killed every process of its runs; stopping\n")
    servicer.stop("plugin stopping: the runner went away", DRAIN_GRACE)
    _end_descendants(spare)
    for w in (sys.stdout, sys.stderr):
        try:
            w.flush()
        except Exception:
            pass
    stdio.close()
    listener.close(grace=0.5)
    os._exit(0)


# How long a stopping plugin waits for the processes it killed to die.
DESCENDANTS_GRACE = 2.0


def _end_descendants(spare: tuple = ()) -> None:
    try:
        alive = _proctree.end_descendants(DESCENDANTS_GRACE, spare=spare)
    except Exception as e:  # never keep the plugin from exiting
        _write_all(2, f"pacer plugin: ending the processes of its runs: {e}\n".encode())
        return
    if alive:
        _write_all(2, f"pacer plugin: {len(alive)} processes of its runs still alive {DESCENDANTS_GRACE:g}s after SIGKILL\n".encode())


def _wait(proc: _Process, ppid: int) -> str:
    """Block until the plugin should stop; say why."""
    last_poll = time.monotonic()
    while True:
        if proc.stop_reason is not None:
            return "signal"
        if proc.shutdown_requested.wait(0.05):
            return "shutdown"
        now = time.monotonic()
        if now - last_poll >= PARENT_POLL:
            last_poll = now
            if os.getppid() != ppid:
                return "parent"


def _guard_stdout() -> int:
    """Keep the real stdout for the handshake line alone; return it."""
    sys.stdout.flush()
    fd = os.dup(1)  # not inherited by child processes
    os.dup2(2, 1)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    """Write data to fd; a reader that is gone (the runner died) is no error."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


