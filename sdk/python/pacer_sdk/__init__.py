"""Write Pacer task plugins in Python.

A plugin is an executable Python file that defines tasks and calls serve()::

    #!/usr/bin/python3
    from dataclasses import dataclass
    import pacer_sdk

    @dataclass
    class GreetParams:
        name: str = pacer_sdk.param(description="who to greet")
        greeting: str = pacer_sdk.param(default="hello", enum=["hello", "hi"])

    plugin = pacer_sdk.Plugin("hello-python", version="1.0.0")

    @plugin.task(description="Greet someone by name.")
    def greet(ctx: pacer_sdk.Context, params: GreetParams) -> str:
        ctx.log.info("greeting", name=params.name)
        with ctx.span("compose greeting"):
            return f"{params.greeting}, {params.name}"

    if __name__ == "__main__":
        pacer_sdk.serve(plugin)

The runner starts the file, talks to it over gRPC (docs/plugin-protocol.md),
checks every job's params against the schema derived from GreetParams when
it loads its config, and calls greet once per attempt, in a thread of its
own. ctx carries the run's identity, cancellation and deadline, a logger
whose lines reach the runner's log with the run's correlation ID, progress
reports and spans that join the run's trace. pacer_sdk.testing runs a plugin
in tests over the same protocol.
"""

from ._context import (
    Cancelled,
    Context,
    InvalidParams,
    Logger,
    LogHandler,
    Result,
    RunInfo,
    Span,
    TaskError,
    current,
)
from ._params import param
from ._plugin import VERSION, Plugin, Task
from ._proctree import Completed, ProcessesAlive
from ._serve import serve

__version__ = VERSION

__all__ = [
    "Cancelled",
    "Completed",
    "Context",
    "InvalidParams",
    "LogHandler",
    "Logger",
    "Plugin",
    "ProcessesAlive",
    "Result",
    "RunInfo",
    "Span",
    "Task",
    "TaskError",
    "VERSION",
    "current",
    "param",
    "serve",
]
