#!/usr/bin/python3
"""hello-python: the plugin built in the Python section of docs/plugin-authoring.md.

Pacer runs this file as it is (it is executable, and the runner needs no
Python of its own), so the first line names an interpreter that has the
SDK's dependencies: Debian's python3 with python3-grpcio, python3-protobuf
and python3-cryptography.
"""

import datetime
import os
import sys
from dataclasses import dataclass

# How the plugin finds the SDK: an installed pacer_sdk (pip install
# sdk/python, or PYTHONPATH) wins; otherwise the copy in this repository,
# found through the file's real path, so a symlink to this file in a
# plugins directory works too.
try:
    import pacer_sdk
except ImportError:
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "sdk", "python"))
    try:
        import pacer_sdk
    except ImportError as e:
        sys.stderr.write(f"hello-python: cannot import pacer_sdk ({e}): install sdk/python or set PYTHONPATH\n")
        sys.exit(1)

from pacer_sdk import param


@dataclass
class GreetParams:
    """The greet task's params. The runner checks each job's params against
    the schema derived from this class when it loads its config."""

    name: str = param(description="who to greet")
    greeting: str = param(default="hello", enum=["hello", "hi", "good morning"])
    wait: datetime.timedelta = param(default=datetime.timedelta(0), description="how long to wait first, e.g. 2s")


plugin = pacer_sdk.Plugin("hello-python", version="1.0.0")


@plugin.task(description="Greet someone by name.")
def greet(ctx: pacer_sdk.Context, params: GreetParams) -> pacer_sdk.Result:
    info = ctx.info
    ctx.log.info("greeting", name=params.name, attempt=info.attempt)
    if params.wait:
        # ctx.wait sleeps, but wakes as soon as the run is cancelled (a
        # timeout, a lost lease, a stopping runner); ctx.check then raises.
        if ctx.wait(params.wait.total_seconds()):
            ctx.log.warning("cancelled while waiting", reason=ctx.cancel_reason)
            ctx.check()
    # Spans need no setup: they join the run's trace in the runner.
    with ctx.span("compose greeting", {"name": params.name}):
        text = f"{params.greeting}, {params.name}"
    # print() cannot break the protocol: it ends up in the runner's log.
    print(f"hello-python greeted {params.name}")
    ctx.report_progress(100, "greeted")
    return pacer_sdk.Result(output=text, data={"greeted": params.name, "slot": int(info.scheduled_time.timestamp())})


if __name__ == "__main__":
    pacer_sdk.serve(plugin)
