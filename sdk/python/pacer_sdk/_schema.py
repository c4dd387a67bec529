"""Params schemas: the JSON Schema subset Pacer's runner checks, and its checker.

A task's params schema travels as JSON text in TaskInfo.params_schema_json.
The runner parses it with paramschema.Parse and checks every job's params
with Schema.Validate when it loads its config; this module is a port of both,
message for message, so that a plugin written in Python rejects at run time
exactly what the runner rejects at load time, in the same words. The cases in
sdk/paramschema/testdata/validate_cases.json hold both implementations to that.

Schemas are plain dicts (decoded JSON). Keywords outside KEYWORDS are ignored,
as the runner ignores them. "pattern" is a regular expression a string must
contain a match of: the runner compiles it with Go's regexp (RE2), this
module translates it (_re2) into a Python pattern with the same matches.
"default" constrains nothing; it must fit
the rest of its schema.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from dataclasses import dataclass
from typing import Any, List, Optional

from . import _duration, _re2

# The keywords the runner's checker understands. Others are ignored by both.
KEYWORDS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "oneOf",
        "minimum",
        "maximum",
        "pattern",
        "format",
        "default",
    }
)

TYPES = ("object", "string", "number", "integer", "boolean", "array")
FORMAT_DURATION = "duration"

# Params travel as JSON's numbers, doubles, which hold every integer up to
# 2^53 and only some beyond (9007199254740993 arrives as ...992; 1e20 fits
# no Go int): a value for an "integer" is refused beyond it, as the runner
# refuses it (paramschema's maxExactInteger).
MAX_EXACT_INTEGER = 1 << 53


class SchemaError(ValueError):
    """A params schema that Pacer cannot use."""


@dataclass(frozen=True)
class Problem:
    """One problem with a value: where (``params.command[2]``) and what."""

    path: str
    msg: str

    def __str__(self) -> str:
        return f"{self.path}: {self.msg}"


def parse(text: str) -> Optional[dict]:
    """Parse a params schema as the runner does (paramschema.Parse).

    Empty text means "any params" and yields None. Raises SchemaError for a
    schema the runner would refuse.
    """
    text = text.strip()
    if not text:
        return None
    if not text.startswith("{"):
        raise SchemaError("params schema: not a JSON object")
    try:
        schema = json.loads(text)
    except ValueError as e:
        raise SchemaError(f"params schema: {e}") from None
    err = check(schema, "#")
    if err:
        raise SchemaError(f"params schema: {err}")
    return schema


def check(s: Any, path: str = "#") -> str:
    """Return the first keyword whose value Pacer cannot use, or ""."""
    if s is None:
        return ""
    if not isinstance(s, dict):
        return f"{path}: a schema must be an object"
    t = s.get("type", "")
    if t not in ("",) + TYPES:
        return f"{path}/type: unsupported type {go_quote(str(t))}"
    if "enum" in s and (not isinstance(s["enum"], list) or len(s["enum"]) == 0):
        return f"{path}/enum: empty"
    if "oneOf" in s and (not isinstance(s["oneOf"], list) or len(s["oneOf"]) == 0):
        return f"{path}/oneOf: empty"
    lo, hi = s.get("minimum"), s.get("maximum")
    if _is_number(lo) and _is_number(hi) and lo > hi:
        return f"{path}: minimum {format_number(lo)} is above maximum {format_number(hi)}"
    pattern = s.get("pattern")
    if pattern:
        try:
            go_regex(pattern)
        except (re.error, ValueError, TypeError) as e:
            return f"{path}/pattern: {go_quote(str(pattern))} is not a regular expression Pacer can use: {e}"
    for name in sorted((s.get("properties") or {}).keys()):
        err = check(s["properties"][name], f"{path}/properties/{_pointer_escape(name)}")
        if err:
            return err
    ap = s.get("additionalProperties")
    if isinstance(ap, dict):
        err = check(ap, path + "/additionalProperties")
        if err:
            return err
    elif ap is not None and not isinstance(ap, bool):
        return f"additionalProperties must be a boolean or a schema, got {json.dumps(ap)}"
    if "items" in s:
        err = check(s["items"], path + "/items")
        if err:
            return err
    for i, alt in enumerate(s.get("oneOf") or []):
        err = check(alt, f"{path}/oneOf/{i}")
        if err:
            return err
    if s.get("default") is not None:
        problems = validate(s, s["default"])
        if problems:
            msgs = [str(p)[len("params") :].lstrip(": ") if str(p).startswith("params") else str(p) for p in problems]
            return f"{path}/default: {format_enum([s['default']])} does not fit the schema: {'; '.join(msgs)}"
    return ""


def _pointer_escape(s: str) -> str:
    return s.replace("~", "~0").replace("/", "~1")


def validate(schema: Optional[dict], value: Any, root: str = "params") -> List[Problem]:
    """Check value against schema and return every problem, in a fixed order.

    A None schema accepts anything. The paths start at root.
    """
    problems: List[Problem] = []
    _validate(schema, root, value, problems)
    return problems


# Value kinds, named as in JSON Schema.
_OBJECT, _ARRAY, _STRING, _NUMBER, _BOOLEAN, _NULL = "object", "array", "string", "number", "boolean", "null"


def _kind(v: Any) -> str:
    if v is None:
        return _NULL
    if isinstance(v, bool):
        return _BOOLEAN
    if isinstance(v, (int, float)):
        return _NUMBER
    if isinstance(v, str):
        return _STRING
    if isinstance(v, dict):
        return _OBJECT
    if isinstance(v, (list, tuple)):
        return _ARRAY
    return ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    if not _is_number(v):
        return False
    return isinstance(v, int) or (math.isfinite(v) and v == math.trunc(v))


def _number(v: Any) -> str:
    """A number for messages: an int beyond ±2^53 written out (as a double
    it would be rounded), any other as the runner formats it."""
    if isinstance(v, int) and abs(v) > MAX_EXACT_INTEGER:
        return str(v)
    return format_number(v)


def _describe(v: Any) -> str:
    k = _kind(v)
    if k == _STRING:
        return "string " + go_quote(v)
    if k == _NUMBER:
        return "number " + _number(v)
    if k == _BOOLEAN:
        return "boolean " + ("true" if v else "false")
    return k


def _short(v: Any) -> str:
    k = _kind(v)
    if k == _STRING:
        return go_quote(v)
    if k == _NUMBER:
        return _number(v)
    if k == _BOOLEAN:
        return "true" if v else "false"
    return k


def _type_matches(t: str, v: Any) -> bool:
    if t == "":
        return True
    if t == "integer":
        return _is_integer(v)
    return t == _kind(v)


def _loosely(s: Optional[dict], v: Any) -> bool:
    """Whether v is of s's kind, counting any number as an integer."""
    if s is None or not s.get("type"):
        return True
    if s["type"] == "integer":
        return _kind(v) == _NUMBER
    return s["type"] == _kind(v)


def _validate(s: Optional[dict], path: str, v: Any, out: List[Problem]) -> None:
    if s is None:
        return

    def add(msg: str) -> None:
        out.append(Problem(path, msg))

    kind = _kind(v)
    if kind == "":
        add(f"unsupported value of Python type {type(v).__name__}")
        return
    t = s.get("type", "")
    if kind == _NUMBER and isinstance(v, float) and not math.isfinite(v) and t in ("number", "integer"):
        add(f"expected a finite {t}, got {format_number(v)}")
        return
    if not _type_matches(t, v):
        got = _describe(v) if t == "integer" and kind == _NUMBER else kind
        add(f"expected {t}, got {got}")
        return
    if t == "integer" and abs(v) > MAX_EXACT_INTEGER:
        add(f"expected an integer within ±2^53 ({MAX_EXACT_INTEGER}), which params carry exactly; got {_number(v)}")
        return

    enum = s.get("enum") or []
    if enum and not any(json_equal(v, e) for e in enum):
        msg = f"must be one of {format_enum(enum)}; got {_short(v)}"
        if kind == _STRING:
            hint = suggest(v, [e for e in enum if isinstance(e, str)])
            if hint:
                msg += f" (did you mean {go_quote(hint)}?)"
        add(msg)

    if s.get("oneOf"):
        _validate_one_of(s, path, v, out)

    if kind == _STRING:
        if s.get("format") == FORMAT_DURATION:
            try:
                _duration.parse(v)
            except ValueError:
                add(f"invalid duration {go_quote(v)}")
        pattern = s.get("pattern")
        # A pattern Python's re may take exponential time with is left to
        # the runner's check (see _re2.backtracks).
        if isinstance(pattern, str) and pattern and not _re2.backtracks(pattern) and go_regex(pattern).search(v) is None:
            add(f"must match the pattern {pattern}; got {go_quote(v)}")
    elif kind == _NUMBER:
        lo, hi = s.get("minimum"), s.get("maximum")
        if _is_number(lo) and v < lo:
            add(f"must be >= {format_number(lo)}, got {_number(v)}")
        if _is_number(hi) and v > hi:
            add(f"must be <= {format_number(hi)}, got {_number(v)}")
    elif kind == _ARRAY:
        items = s.get("items")
        if isinstance(items, dict):
            for i, e in enumerate(v):
                _validate(items, f"{path}[{i}]", e, out)
    elif kind == _OBJECT:
        _validate_object(s, path, v, out)


def _validate_object(s: dict, path: str, obj: dict, out: List[Problem]) -> None:
    for k in obj:
        if not isinstance(k, str):
            out.append(Problem(path, f"object key {k!r} is a {type(k).__name__}, not a string"))
            return
    for name in s.get("required") or []:
        if name not in obj:
            out.append(Problem(path, f"missing required key {go_quote(name)}"))
    props = s.get("properties") or {}
    ap = s.get("additionalProperties")
    closed = ap is False
    unused = sorted(n for n in props if n not in obj) if closed else []
    for key in sorted(obj):
        if key in props:
            _validate(props[key], join_key(path, key), obj[key], out)
            continue
        if closed:
            # Reported at the key itself, so that it points at its line.
            msg = f"unknown key {go_quote(key)}"
            hint = suggest(key, unused)
            if hint:
                msg += f" (did you mean {go_quote(hint)}?)"
            out.append(Problem(join_key(path, key), msg))
        elif isinstance(ap, dict):
            _validate(ap, join_key(path, key), obj[key], out)


def _validate_one_of(s: dict, path: str, v: Any, out: List[Problem]) -> None:
    alts = s["oneOf"]
    alt_problems: List[List[Problem]] = []
    matched = 0
    for alt in alts:
        ps: List[Problem] = []
        _validate(alt, path, v, ps)
        alt_problems.append(ps)
        if not ps:
            matched += 1
    if matched == 1:
        return
    if matched > 1:
        out.append(Problem(path, f"matches {matched} alternatives; expected exactly one of {describe_alternatives(alts)}"))
        return
    # Nothing matched. If only one alternative is of the value's kind, the
    # value was presumably meant for it: its problems say the most.
    only = -1
    for i, alt in enumerate(alts):
        if _loosely(alt, v):
            if only >= 0:
                only = -1
                break
            only = i
    if only >= 0:
        out.extend(alt_problems[only])
        return
    out.append(Problem(path, f"expected {describe_alternatives(alts)}, got {_kind(v)}"))


def describe_schema(s: Optional[dict]) -> str:
    """Name the values s accepts, as a noun: "string", "array of strings"."""
    if s is None:
        return "any value"
    t = s.get("type", "")
    if t == "" and s.get("enum"):
        return "one of " + format_enum(s["enum"])
    if t == "" and s.get("oneOf"):
        return describe_alternatives(s["oneOf"])
    if t == "":
        return "any value"
    items = s.get("items")
    if t == "array" and isinstance(items, dict) and (items.get("type") or items.get("enum")):
        return "array of " + _plural(describe_schema(items))
    return t


def _plural(noun: str) -> str:
    if noun.startswith("one of "):
        return "values " + noun
    if noun.startswith("array of "):
        return "arrays" + noun[len("array") :]
    return noun + "s"


def describe_alternatives(alts: list) -> str:
    names = [describe_schema(a) for a in alts]
    if len(names) <= 2:
        return " or ".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def format_enum(enum: list) -> str:
    return ", ".join(go_json(e) for e in enum)


def json_equal(a: Any, b: Any) -> bool:
    """Compare two values as JSON values: 1 and 1.0 are equal, True and 1 are not."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka == "":
        return False
    if ka == _ARRAY:
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if ka == _OBJECT:
        return len(a) == len(b) and all(k in b and json_equal(a[k], b[k]) for k in a)
    if ka == _NULL:
        return True
    return a == b


def join_key(path: str, key: str) -> str:
    """Append an object key to a path: ".key" for identifier-like keys, '["a key"]' for others."""
    if _IDENT.fullmatch(key):
        return path + "." + key
    return path + "[" + go_quote(key) + "]"


def go_regex(pattern: str) -> "re.Pattern[str]":
    """pattern compiled to match what the runner's Go (RE2) regexp matches
    (see _re2). Raises _re2.PatternError for a pattern Go refuses or the SDK
    cannot check as Go does."""
    return _re2.compile(pattern)


_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9-]*")


def suggest(word: str, candidates: List[str]) -> str:
    """The candidate the user most likely meant by word, or "" if none is close
    enough to be a plausible typo (the runner's internal/didyoumean.Closest).
    Ties go to the candidate that comes first.

    In order of preference, a candidate is close when it equals word ignoring
    case and the separators "_", "-" and " "; when one is a longer spelling of
    the other, both at least four letters long once normalised; or when it is
    within a few edits of word, ignoring case (one for words of up to three
    letters, two up to eight, three beyond), keeping something of the word.
    """
    nw = _normalize(word)
    if not nw:
        return ""
    for c in candidates:
        if _normalize(c) == nw:
            return c
    for c in candidates:
        nc = _normalize(c)
        if min(len(nc.encode()), len(nw.encode())) >= 4 and (nw.startswith(nc) or nc.startswith(nw)):
            return c
    lw = word.lower()
    n = len(word)
    limit = 3 if n > 8 else 2 if n > 3 else 1
    best, best_dist = "", limit + 1
    for c in candidates:
        d = edit_distance(lw, c.lower())
        if d < best_dist and d < n and d < len(c):
            best, best_dist = c, d
    return best


def _normalize(s: str) -> str:
    return s.lower().replace("_", "").replace("-", "").replace(" ", "")


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions
    and transpositions of adjacent characters each cost 1."""
    prev2 = [0] * (len(b) + 1)
    prev = list(range(len(b) + 1))
    cur = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur[0] = i
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev, cur = prev, cur, prev2
    return prev[len(b)]


def format_number(f: float) -> str:
    """Format a number as the runner's messages do: without an exponent from
    1e-6 up to 1e21 ("1000000", "0.000001", "-128"), as Go's %g beyond
    ("1e+21", "1e-07")."""
    f = float(f)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        return "-0" if neg else "0"
    digits, dp = _shortest(f)
    exp = dp - 1
    if 1e-6 <= abs(f) < 1e21:
        out = _fmt_f(digits, dp)
    elif exp < -4 or exp >= 6:  # Go's rule for the shortest form of %g
        out = _fmt_e(digits, exp)
    else:
        out = _fmt_f(digits, dp)
    return "-" + out if neg else out


def _shortest(f: float):
    """The shortest decimal digits that round-trip to abs(f) (as Go's shortest
    mode finds them; repr does the same), and the position of the decimal point."""
    t = decimal.Decimal(repr(abs(f))).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    return digits, len(digits) + t.exponent


def _fmt_e(digits: str, exp: int) -> str:
    out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return out + "e" + ("-" if exp < 0 else "+") + str(abs(exp)).rjust(2, "0")


def _fmt_f(digits: str, dp: int) -> str:
    nd = len(digits)
    if dp <= 0:
        return "0." + "0" * (-dp) + digits
    if dp >= nd:
        return digits + "0" * (dp - nd)
    return digits[:dp] + "." + digits[dp:]


def _go_json_number(f: float) -> str:
    """A number as Go's encoding/json writes a float64."""
    f = float(f)
    if not math.isfinite(f):
        raise ValueError(f"json: unsupported value: {format_number(f)}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    digits, dp = _shortest(f)
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        out = _fmt_e(digits, dp - 1)
        out = re.sub(r"e([+-])0(\d)$", r"e\g<1>\g<2>", out)
    else:
        out = _fmt_f(digits, dp)
    return "-" + out if f < 0 else out


def go_quote(s: str) -> str:
    """Quote s as Go's strconv.Quote does."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0xD800 <= c <= 0xDFFF:
            out.append("\\ufffd")  # not valid UTF-8 in Go: the replacement character
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\x{c:02x}")
        elif c < 0x10000:
            out.append(f"\\u{c:04x}")
        else:
            out.append(f"\\U{c:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_json(v: Any) -> str:
    """Encode a JSON value as Go's encoding/json does: compact, map keys sorted,
    HTML characters escaped, numbers as Go writes a float64."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _go_json_number(v)
    if isinstance(v, str):
        text = json.dumps(v, ensure_ascii=False)
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(go_json(str(k)) + ":" + go_json(v[k]) for k in sorted(v, key=str)) + "}"
    return go_json(str(v))
