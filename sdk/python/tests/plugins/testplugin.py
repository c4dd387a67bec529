#!/usr/bin/python3
"""A plugin for the SDK's own tests: each task behaves in one specific way.

    echo    returns params["message"]; logs it
    sleep   waits params["seconds"], honouring cancellation
    hang    sleeps params["seconds"], ignoring cancellation
    noise   writes to stdout every way a task can: print(), sys.stdout,
            os.write(1, ...), a child process; then succeeds
    crash   exits the process mid-run
    info    returns the run's identity as the task sees it
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", ".."))

import pacer_sdk  # noqa: E402

plugin = pacer_sdk.Plugin("testplugin", version="test")


@plugin.task()
def echo(ctx, params):
    """Return the message."""
    ctx.log.info("echo", message=params.get("message", ""))
    return params.get("message", "")


@plugin.task()
def sleep(ctx, params):
    """Wait, honouring cancellation."""
    ctx.report_progress(0, "sleeping")
    if ctx.wait(float(params.get("seconds", 3600))):
        ctx.log.info("interrupted", reason=ctx.cancel_reason)
        ctx.check()
    return "slept"


@plugin.task()
def hang(ctx, params):
    """Sleep, ignoring cancellation."""
    time.sleep(float(params.get("seconds", 3600)))
    return "hung"


@plugin.task()
def noise(ctx, params):
    """Write to stdout every way a task can."""
    print("noise: print")
    sys.stdout.write("noise: sys.stdout\n")
    os.write(1, b"noise: fd 1\n")
    subprocess.run(["sh", "-c", "echo 'noise: child'"], check=True)
    print("noise: stderr", file=sys.stderr)
    return "noisy"


@plugin.task()
def crash(ctx, params):
    """Exit mid-run."""
    os._exit(3)


@plugin.task()
def info(ctx, params):
    """The run's identity."""
    i = ctx.info
    return pacer_sdk.Result(
        output=i.correlation_id,
        data={"job": i.job_id, "run": i.run_id, "attempt": i.attempt, "node": i.node, "token": i.fencing_token, "trace": i.trace_id, "pid": os.getpid()},
    )


if __name__ == "__main__":
    pacer_sdk.serve(plugin)
