"""A plugin and its tasks."""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional

from . import _schema
from ._params import ParamsSpec

#: The SDK's version, reported to the runner by every plugin.
VERSION = "0.1.0"


class Task:
    """One unit of work a plugin offers. Made by Plugin.task or Plugin.add."""

    def __init__(self, name: str, fn: Callable[..., Any], description: str = "", params: Any = inspect.Parameter.empty):
        if not name:
            raise ValueError("a task needs a name")
        if not callable(fn):
            raise TypeError(f"task {name!r}: {fn!r} is not callable")
        self.name = name
        self.fn = fn
        self.description = description or _first_line(inspect.getdoc(fn))
        self.spec: Optional[ParamsSpec] = None
        self.takes_params = False
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            positional = [
                p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            ]
            if len(positional) not in (1, 2):
                raise TypeError(f"task {name!r}: {fn.__qualname__} must take (ctx) or (ctx, params), not {sig}")
            self.takes_params = len(positional) == 2
            if self.takes_params and params is inspect.Parameter.empty:
                hints = _hints(fn)
                params = hints.get(positional[1].name, inspect.Parameter.empty)
        if params is inspect.Parameter.empty or params in (dict, Any) or typing.get_origin(params) in (dict, collections.abc.Mapping):
            params = None
        if params is not None:
            if not (isinstance(params, type) and dataclasses.is_dataclass(params)):
                raise TypeError(f"task {name!r}: params type {params!r} is not a dataclass (or dict for untyped params)")
            self.spec = ParamsSpec(params)

    def params_schema_json(self, keywords: frozenset = _schema.KEYWORDS) -> str:
        """The schema the runner gets; "" (any params) for untyped tasks."""
        if self.spec is None:
            return ""
        return json.dumps(self.spec.published(keywords), separators=(",", ":"), sort_keys=True)


def _hints(fn: Callable[..., Any]) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception as e:  # an annotation that does not resolve
        raise TypeError(f"{getattr(fn, '__qualname__', fn)}: cannot resolve its annotations: {e}") from None


def _first_line(doc: Optional[str]) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


class Plugin:
    """A plugin: its name (how jobs refer to it: their "plugin:" key, usually
    the executable's file name), its version and its tasks::

        plugin = pacer_sdk.Plugin("hello-python", version="1.0.0")

        @plugin.task(description="Greet someone by name.")
        def greet(ctx: pacer_sdk.Context, params: GreetParams) -> str:
            return f"hello, {params.name}"

        if __name__ == "__main__":
            pacer_sdk.serve(plugin)
    """

    def __init__(self, name: str, version: str = "", tasks: Optional[Mapping[str, Callable[..., Any]]] = None):
        self.name = name
        self.version = version
        self.tasks: Dict[str, Task] = {}
        for task_name, fn in (tasks or {}).items():
            self.add(task_name, fn)

    def task(self, name: Optional[str] = None, *, description: str = "", params: Any = inspect.Parameter.empty) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the decorated function as a task, named after the function
        unless name is given. It takes (ctx) for any params or (ctx, params)
        where params' annotation is a dataclass (typed params, checked against
        the schema derived from it) or dict. The description defaults to the
        first line of the docstring."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name or fn.__name__, fn, description=description, params=params)
            return fn

        return register

    def add(self, name: str, fn: Callable[..., Any], *, description: str = "", params: Any = inspect.Parameter.empty) -> Task:
        """Register fn as the task name (see task)."""
        if name in self.tasks:
            raise ValueError(f"plugin {self.name!r} already has a task {name!r}")
        t = Task(name, fn, description, params)
        self.tasks[name] = t
        return t

    def problems(self) -> List[str]:
        """What stops the plugin from being served."""
        out = []
        if not self.name:
            out.append("Plugin.name is empty")
        if not self.tasks:
            out.append("the plugin has no tasks: offer at least one")
        return out
