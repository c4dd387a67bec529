"""Python values to and from the protobuf values the wire carries."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import re
from typing import Any, Dict, Iterable, List, Tuple

from google.protobuf import struct_pb2, timestamp_pb2

from . import _duration
from ._pb.pacer.plugin.v1 import plugin_pb2 as pb


_SURROGATES = re.compile("[\ud800-\udfff]+")


def text(s: Any) -> str:
    """str(s) as text the wire can carry: protobuf strings must be UTF-8, and
    a Python str may hold lone surrogates (bytes that were not UTF-8, decoded
    with surrogateescape, as os.environ and file names are). Each run of
    them becomes U+FFFD, as the Go SDK does with invalid bytes."""
    s = s if isinstance(s, str) else str(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", s)


def value(v: Any) -> struct_pb2.Value:
    """Any Python value as a google.protobuf.Value, for log and span
    attributes: JSON-like values as themselves, datetimes as RFC 3339 text,
    timedeltas as Go durations, anything else as its str()."""
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, (int, float)) and not isinstance(v, enum.Enum):
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = text(v)
    elif isinstance(v, datetime.datetime):
        out.string_value = rfc3339(v)
    elif isinstance(v, datetime.timedelta):
        out.string_value = _duration.format(_duration.from_timedelta(v))
    elif isinstance(v, enum.Enum):
        return value(v.value)
    elif isinstance(v, (list, tuple)):
        out.list_value.SetInParent()  # an empty list is one, not null
        out.list_value.values.extend(value(e) for e in v)
    elif isinstance(v, dict):
        out.struct_value.SetInParent()  # an empty dict is one, not null
        for k, e in v.items():
            out.struct_value.fields[text(k)].CopyFrom(value(e))
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        return value(dataclasses.asdict(v))
    else:
        out.string_value = text(v)
    return out


def attrs(items: Iterable[Tuple[str, Any]]) -> List[pb.Attr]:
    return [pb.Attr(key=text(k), value=value(v)) for k, v in items]


def struct(data: Dict[str, Any]) -> struct_pb2.Struct:
    """data as a google.protobuf.Struct; raises TypeError for a value JSON cannot carry."""
    out = struct_pb2.Struct()
    for k, v in data.items():
        if not isinstance(k, str):
            raise TypeError(f"key {k!r} is a {type(k).__name__}, not a string")
        out.fields[text(k)].CopyFrom(_json_value(v, k))
    return out


def _json_value(v: Any, where: str) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise TypeError(f"{where}: {v} is not a JSON number")
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = text(v)
    elif isinstance(v, (list, tuple)):
        # Set even when empty: an empty list or dict is one, not null (as
        # Go's structpb.NewValue, which the runner encodes params with).
        out.list_value.SetInParent()
        out.list_value.values.extend(_json_value(e, f"{where}[{i}]") for i, e in enumerate(v))
    elif isinstance(v, dict):
        out.struct_value.SetInParent()
        for k, e in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not a string")
            out.struct_value.fields[text(k)].CopyFrom(_json_value(e, f"{where}.{k}"))
    else:
        raise TypeError(f"{where}: a {type(v).__name__} is not a JSON value")
    return out


def from_value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(v.struct_value)
    if kind == "list_value":
        return [from_value(e) for e in v.list_value.values]
    if kind == "number_value":
        return v.number_value
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    return None


def from_struct(s: struct_pb2.Struct) -> Dict[str, Any]:
    return {k: from_value(e) for k, e in s.fields.items()}


def timestamp_ns(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def rfc3339(t: datetime.datetime) -> str:
    if t.tzinfo is None:
        return t.isoformat()
    return t.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
