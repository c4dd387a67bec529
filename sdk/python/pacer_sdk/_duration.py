"""Go durations ("90s", "1h30m", "1.5ms"), as Pacer's config and params use them.

The runner checks a params value with format "duration" with Go's
time.ParseDuration, and prints durations with time.Duration.String; these are
exact ports of both, on integer nanoseconds, so that a value the runner
accepts is one the SDK decodes, and a message reads the same on both sides.
"""

from __future__ import annotations

import datetime

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_LIMIT = 1 << 63  # Go's time.Duration is an int64 of nanoseconds

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # U+00B5 micro sign
    "\u03bcs": MICROSECOND,  # U+03BC Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}


def parse(s: str) -> int:
    """Parse a Go duration string into nanoseconds, as time.ParseDuration does.

    Raises ValueError for anything time.ParseDuration refuses.
    """
    orig = s
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise _invalid("invalid duration", orig)
    d = 0
    while s:
        # The next character must be [0-9.]
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise _invalid("invalid duration", orig)
        # [0-9]*
        i, v = 0, 0
        while i < len(s) and "0" <= s[i] <= "9":
            if v > _LIMIT // 10:
                raise _invalid("invalid duration", orig)
            v = v * 10 + ord(s[i]) - 48
            if v > _LIMIT:
                raise _invalid("invalid duration", orig)
            i += 1
        pre = i > 0
        s = s[i:]
        # (\.[0-9]*)?
        f, scale, post = 0, 1.0, False
        if s.startswith("."):
            s = s[1:]
            i, overflow = 0, False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if f > (_LIMIT - 1) // 10:
                        overflow = True
                    else:
                        y = f * 10 + ord(s[i]) - 48
                        if y > _LIMIT:
                            overflow = True
                        else:
                            f, scale = y, scale * 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise _invalid("invalid duration", orig)  # no digits, e.g. ".s"
        # The unit.
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise _invalid("missing unit in duration", orig)
        unit = _UNITS.get(s[:i])
        if unit is None:
            raise _invalid(f"unknown unit {s[:i]!r} in duration", orig)
        s = s[i:]
        if v > _LIMIT // unit:
            raise _invalid("invalid duration", orig)
        v *= unit
        if f > 0:
            # float64 is needed to be nanosecond accurate for fractions of hours.
            v += int(float(f) * (float(unit) / scale))
            if v > _LIMIT:
                raise _invalid("invalid duration", orig)
        d += v
        if d > _LIMIT:
            raise _invalid("invalid duration", orig)
    if neg:
        return -d
    if d > _LIMIT - 1:
        raise _invalid("invalid duration", orig)
    return d


def _invalid(what: str, orig: str) -> ValueError:
    return ValueError(f"time: {what} {orig!r}")


def format(ns: int) -> str:  # noqa: A001 - mirrors time.Duration.String
    """Format nanoseconds as Go's time.Duration.String does: "1h0m0s", "1.5s", "300ms"."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < SECOND:
        if u < MICROSECOND:
            out = str(u) + "ns"
        elif u < MILLISECOND:
            out = _frac(u, 3) + "\u00b5s"
        else:
            out = _frac(u, 6) + "ms"
    else:
        secs, rest = divmod(u, SECOND)
        frac = _frac_part(rest, 9)
        out = str(secs % 60) + frac + "s"
        mins = secs // 60
        if mins > 0:
            out = str(mins % 60) + "m" + out
            hours = mins // 60
            if hours > 0:
                out = str(hours) + "h" + out
    return "-" + out if neg else out


def _frac(v: int, prec: int) -> str:
    whole, rest = divmod(v, 10**prec)
    return str(whole) + _frac_part(rest, prec)


def _frac_part(rest: int, prec: int) -> str:
    if rest == 0:
        return ""
    return "." + str(rest).rjust(prec, "0").rstrip("0")


def to_timedelta(ns: int) -> datetime.timedelta:
    """Nanoseconds as a timedelta (whose resolution is a microsecond: rounded down)."""
    return datetime.timedelta(microseconds=ns // 1000)


def from_timedelta(td: datetime.timedelta) -> int:
    return ((td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds) * 1000

