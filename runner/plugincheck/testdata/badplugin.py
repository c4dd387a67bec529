#!/usr/bin/python3
"""A plugin that breaks one rule of the protocol, chosen by $BADPLUGIN, for
plugincheck's tests: each mode must fail its check.

    no-cookie-check         serves without the magic cookie
    noise-before-handshake  prints a line before the handshake
    no-tls                  serves without TLS and sends no certificate
    unguarded-stdout        leaves stdout unguarded; the task writes to it
    orphan                  ignores SIGTERM and its parent's death
    bad-schema              publishes keywords the runner does not check
    accepts-anything        publishes a closed schema, accepts any params
    foreign-span            ships a span of another trace
    hang                    its task ignores cancellation
    slow-shutdown           ignores go-plugin's controller Shutdown
    false-run-stream        declares capabilities.run_stream, does not serve RunStream
    exit                    its task ends the process (os._exit)
    exit-leaving-a-child    the same, after starting a child that keeps its stdio
    needs-env               exits before its handshake unless PLUGINCHECK_DB_URL is
                            set (a plugin that reads a variable the runner never passes)
"""

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "..", "sdk", "python"))

import pacer_sdk  # noqa: E402
from pacer_sdk import _context, _goplugin, _serve, _server  # noqa: E402

MODE = os.environ.get("BADPLUGIN", "")

if MODE == "needs-env" and os.environ.get("PLUGINCHECK_DB_URL") is None:
    sys.stderr.write("badplugin: PLUGINCHECK_DB_URL is not set\n")
    sys.exit(1)


@dataclasses.dataclass
class Params:
    name: str = "x"


plugin = pacer_sdk.Plugin("badplugin", version="bad")


@plugin.task()
def work(ctx: pacer_sdk.Context, params: Params):
    """The one task."""
    if MODE == "unguarded-stdout":
        os.write(1, b"unguarded noise\n")
    if MODE == "foreign-span":
        span = _context.Span(ctx._run, "stray", b"\x01" * 8, os.urandom(16), True, 1, "badplugin")
        span.end()
    if MODE == "hang":
        time.sleep(3600)
    if MODE == "exit-leaving-a-child":
        import subprocess
        subprocess.Popen(["sleep", "30"])
    if MODE in ("exit", "exit-leaving-a-child"):
        os._exit(1)
    with ctx.span("work"):
        ctx.log.info("working", name=params.name)
    return "done"


if MODE == "no-cookie-check":
    _serve.COOKIE_VALUE = os.environ.get(_serve.COOKIE_KEY)
elif MODE == "noise-before-handshake":
    print("starting up", flush=True)
elif MODE == "no-tls":
    os.environ.pop("PLUGIN_CLIENT_CERT", None)
elif MODE == "unguarded-stdout":
    _serve._guard_stdout = lambda: os.dup(1)
elif MODE == "orphan":
    def _wait(proc, ppid):
        proc.shutdown_requested.wait()
        return "shutdown"
    _serve._wait = _wait
    _serve._watchdog.start = lambda stop_grace: None  # which would kill it 1 s after its parent
elif MODE == "bad-schema":
    plugin.tasks["work"].params_schema_json = lambda *a: '{"type":"object","properties":{"name":{"type":"string","minLength":1}},"patternProperties":{}}'
elif MODE == "accepts-anything":
    schema = plugin.tasks["work"].params_schema_json()
    plugin.tasks["work"].params_schema_json = lambda *a: schema
    plugin.tasks["work"].spec = None
    plugin.tasks["work"].fn = lambda ctx, params: "anything goes"
elif MODE == "slow-shutdown":
    _orig = _goplugin.controller_handler
    _serve._goplugin.controller_handler = lambda shutdown: _orig(lambda: None)
elif MODE == "false-run-stream":
    # The SDK declares run_stream and serves it; this one answers RunStream
    # as a servicer without it does (the generated base class: Unimplemented).
    from pacer_sdk._pb.pacer.plugin.v1 import plugin_pb2_grpc  # noqa: E402

    _server.TaskPluginServicer.RunStream = plugin_pb2_grpc.TaskPluginServicer.RunStream

if __name__ == "__main__":
    pacer_sdk.serve(plugin)
