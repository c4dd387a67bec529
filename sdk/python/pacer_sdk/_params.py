"""Typed params: a dataclass becomes the task's published JSON Schema, and each
run's params are checked against it and decoded into an instance.

The mapping mirrors the Go SDK's sdk.Typed:

- A field is required unless it has a default (or default_factory) or its
  type is Optional[T]; a missing optional field takes its default (None for
  Optional[T] without one).
- str, bool, int and float map to string, boolean, integer and number;
  datetime.timedelta to a Go duration string ("90s", "1h30m");
  list[T], tuple[T, ...] and Sequence[T] to arrays; dict[str, T] and
  Mapping[str, T] to objects with any keys; a nested dataclass to an object
  that, like the top level, rejects unknown keys; Literal[...] and Enum
  subclasses to enums; Union[A, B] to oneOf; Any to any value.
- param(...) adds a description, a numeric minimum and maximum, a string
  pattern and an enum of strings.

Definition errors (an unsupported type, minimum on a string, a default that
breaks its own constraints) raise TypeError when the task is defined, so a
plugin fails at start-up, never at run time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import sys
import typing
from typing import Any, Dict, List, Optional, Tuple

from . import _duration, _schema

_PACER = "pacer"  # the metadata key param() uses
_UNION_TYPES: Tuple[Any, ...] = (typing.Union,)
if sys.version_info >= (3, 10):
    import types

    _UNION_TYPES = (typing.Union, types.UnionType)


def param(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    description: Optional[str] = None,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    pattern: Optional[str] = None,
    enum: Optional[List[str]] = None,  # noqa: A002 - the JSON Schema keyword
) -> Any:
    """A dataclass field with a description and constraints for Pacer.

    Use it like dataclasses.field::

        @dataclass
        class Params:
            url: str = param(description="what to fetch", pattern=r"^https?://")
            retries: int = param(default=3, minimum=0, maximum=10)
    """
    meta: Dict[str, Any] = {}
    for key, value in (
        ("description", description),
        ("minimum", minimum),
        ("maximum", maximum),
        ("pattern", pattern),
        ("enum", enum),
    ):
        if value is not None:
            meta[key] = value
    kwargs: Dict[str, Any] = {"metadata": {_PACER: meta}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


class ParamsSpec:
    """What a task knows about its params type: the full schema it checks
    at run time and the decoder into the dataclass."""

    def __init__(self, cls: type):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"params type {cls!r} is not a dataclass")
        self.cls = cls
        self.schema = _Builder().dataclass_schema(cls, cls.__qualname__)

    def published(self, keywords: frozenset = _schema.KEYWORDS) -> dict:
        """The schema as the runner gets it: keywords it does not know are
        left out (the task still checks them when it runs)."""
        return strip(self.schema, keywords)

    def decode(self, params: dict) -> Any:
        """Check params and decode them into the dataclass. Returns the
        instance, or raises ParamsError listing every problem."""
        problems = _schema.validate(self.schema, params)
        if problems:
            raise ParamsError(problems)
        return _decode(self.cls, params)


class ParamsError(ValueError):
    def __init__(self, problems: List[_schema.Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def strip(s: Any, keywords: frozenset) -> Any:
    """s without the keywords outside keywords, at every level."""
    if not isinstance(s, dict):
        return s
    out: Dict[str, Any] = {}
    for k, v in s.items():
        if k not in keywords:
            continue
        if k == "properties":
            v = {name: strip(ps, keywords) for name, ps in v.items()}
        elif k in ("items", "additionalProperties"):
            v = strip(v, keywords)
        elif k == "oneOf":
            v = [strip(a, keywords) for a in v]
        out[k] = v
    return out


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _optional_arg(tp: Any) -> Tuple[bool, Any]:
    """(True, T) for Optional[T]; (False, tp) otherwise."""
    if typing.get_origin(tp) in _UNION_TYPES:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            if len(args) == 1:
                return True, args[0]
            return True, typing.Union[tuple(args)]
    return False, tp


class _Builder:
    def __init__(self) -> None:
        self.building: set = set()

    def dataclass_schema(self, cls: type, where: str) -> dict:
        s: Dict[str, Any] = {"type": "object", "additionalProperties": False}
        if cls in self.building:
            # A recursive type: inner occurrences are only checked to be
            # objects; decoding checks the rest.
            del s["additionalProperties"]
            return s
        self.building.add(cls)
        try:
            hints = _type_hints(cls, where)
            props: Dict[str, Any] = {}
            required: List[str] = []
            for f in dataclasses.fields(cls):
                if not f.init:
                    continue
                fwhere = f"{where}.{f.name}"
                tp = _strip_annotated(hints.get(f.name, Any))
                optional, tp = _optional_arg(tp)
                ps = self.schema_of(tp, fwhere)
                meta = dict(f.metadata.get(_PACER, {}))
                _apply_meta(ps, meta, fwhere)
                has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                if f.default is not dataclasses.MISSING and f.default is not None:
                    ps["default"] = _check_default(ps, f.default, fwhere)
                if not has_default and not optional:
                    required.append(f.name)
                props[f.name] = ps
            if props:
                s["properties"] = props
            if required:
                s["required"] = required
        finally:
            self.building.discard(cls)
        return s

    def schema_of(self, tp: Any, where: str) -> dict:
        tp = _strip_annotated(tp)
        if tp is Any or tp is object:
            return {}
        if tp is type(None):
            raise TypeError(f"{where}: a field of type None cannot come from params")
        origin = typing.get_origin(tp)
        if origin in _UNION_TYPES:
            optional, inner = _optional_arg(tp)
            if optional:
                return self.schema_of(inner, where)
            return {"oneOf": [self.schema_of(a, where) for a in typing.get_args(tp)]}
        if origin is typing.Literal:
            values = list(typing.get_args(tp))
            return _enum_schema(values, where)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _enum_schema([m.value for m in tp], where)
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if tp is datetime.timedelta:
            return {"type": "string", "format": _schema.FORMAT_DURATION}
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.dataclass_schema(tp, tp.__qualname__ if where == "" else where)
        if tp in (list, tuple) or origin in (list, tuple, typing.Sequence, _abc_sequence()):
            args = typing.get_args(tp)
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                raise TypeError(f"{where}: fixed-length tuple {tp!r} cannot come from params; use tuple[T, ...] or list[T]")
            s: Dict[str, Any] = {"type": "array"}
            if args:
                s["items"] = self.schema_of(args[0], where + "[]")
            return s
        if tp is dict or origin in (dict, typing.Mapping, _abc_mapping()):
            args = typing.get_args(tp)
            s = {"type": "object"}
            if args:
                if _strip_annotated(args[0]) is not str:
                    raise TypeError(f"{where}: map key type {args[0]!r} cannot come from params: keys are strings")
                s["additionalProperties"] = self.schema_of(args[1], where + "[]")
            return s
        raise TypeError(f"{where}: type {tp!r} cannot come from params")


def _type_hints(cls: type, where: str) -> Dict[str, Any]:
    try:
        # The class itself resolves too: a recursive type names itself.
        return typing.get_type_hints(cls, localns={cls.__name__: cls}, include_extras=True)
    except Exception as e:
        raise TypeError(f"{where}: cannot resolve the field types: {e}") from None


def _abc_sequence() -> Any:
    import collections.abc

    return collections.abc.Sequence


def _abc_mapping() -> Any:
    import collections.abc

    return collections.abc.Mapping


def _enum_schema(values: list, where: str) -> dict:
    for v in values:
        if not isinstance(v, (str, int, float, bool)) and v is not None:
            raise TypeError(f"{where}: enum value {v!r} is not a JSON value")
    s: Dict[str, Any] = {"enum": values}
    if values and all(isinstance(v, str) for v in values):
        s = {"type": "string", "enum": values}
    return s


def _apply_meta(ps: dict, meta: dict, where: str) -> None:
    desc = meta.pop("description", None)
    if desc is not None:
        ps["description"] = str(desc)
    for key in ("minimum", "maximum"):
        if key in meta:
            v = meta.pop(key)
            if ps.get("type") not in ("integer", "number"):
                raise TypeError(f"{where}: {key} on a field that is not a number")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{where}: {key} {v!r} is not a number")
            ps[key] = v
    if "minimum" in ps and "maximum" in ps and ps["minimum"] > ps["maximum"]:
        raise TypeError(f"{where}: minimum {ps['minimum']} is above maximum {ps['maximum']}")
    if "pattern" in meta:
        pat = meta.pop("pattern")
        if ps.get("type") != "string" or ps.get("format"):
            raise TypeError(f"{where}: pattern on a field that is not a string")
        try:
            _schema.go_regex(pat)
        except (re.error, ValueError, TypeError) as e:
            raise TypeError(f"{where}: pattern {pat!r}: {e}") from None
        ps["pattern"] = pat
    if "enum" in meta:
        values = meta.pop("enum")
        if isinstance(values, str) or not values or not all(isinstance(v, str) for v in values):
            raise TypeError(f"{where}: enum must be a non-empty list of strings")
        if ps.get("type") == "string" and not ps.get("format"):
            ps["enum"] = list(values)
        elif ps.get("type") == "array" and (ps.get("items") or {}).get("type") == "string":
            ps["items"]["enum"] = list(values)
        else:
            raise TypeError(f"{where}: enum on a field that is not a string or a list of strings")
    if meta:
        raise TypeError(f"{where}: unknown param() options {sorted(meta)}")


def _check_default(ps: dict, default: Any, where: str) -> Any:
    """The default as a JSON value, checked against the field's own schema."""
    value = to_json(default)
    problems = _schema.validate(ps, value, root="default")
    if problems:
        raise TypeError(f"{where}: default {default!r} does not fit the field: {'; '.join(map(str, problems))}")
    return value


def to_json(v: Any) -> Any:
    """A Python value as the JSON value params would carry for it."""
    if isinstance(v, enum.Enum):
        return to_json(v.value)
    if isinstance(v, datetime.timedelta):
        return _duration.format(_duration.from_timedelta(v))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: to_json(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [to_json(e) for e in v]
    if isinstance(v, dict):
        return {str(k): to_json(e) for k, e in v.items()}
    return v


def _decode(tp: Any, v: Any) -> Any:
    """Decode a checked JSON value into tp."""
    tp = _strip_annotated(tp)
    if tp is Any or tp is object:
        return v
    origin = typing.get_origin(tp)
    if origin in _UNION_TYPES:
        optional, inner = _optional_arg(tp)
        if optional:
            return None if v is None else _decode(inner, v)
        b = _Builder()
        for alt in typing.get_args(tp):
            if not _schema.validate(b.schema_of(alt, ""), v):
                return _decode(alt, v)
        return v
    if origin is typing.Literal:
        return v
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(v)
    if tp is bool or tp is str:
        return v
    if tp is int:
        return int(v)
    if tp is float:
        return float(v)
    if tp is datetime.timedelta:
        return _duration.to_timedelta(_duration.parse(v))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _type_hints(tp, tp.__qualname__)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            if f.name in v:
                kwargs[f.name] = _decode(hints.get(f.name, Any), v[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs[f.name] = None  # Optional[T] without a default
        return tp(**kwargs)
    if tp in (list, tuple) or origin in (list, tuple, typing.Sequence, _abc_sequence()):
        args = typing.get_args(tp)
        items = [_decode(args[0], e) for e in v] if args else list(v)
        return tuple(items) if (tp is tuple or origin is tuple) else items
    if tp is dict or origin in (dict, typing.Mapping, _abc_mapping()):
        args = typing.get_args(tp)
        return {k: _decode(args[1], e) for k, e in v.items()} if args else dict(v)
    return v
