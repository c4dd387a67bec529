"""Go's regular expressions (RE2 syntax) translated to Python's re.

A params schema's "pattern" is checked by the runner with Go's regexp and by
this SDK with Python's re. The two read much of the same syntax differently:
in Go, \\d \\w \\s \\b are ASCII (\\s without \\v) where Python's are Unicode;
``$`` is the end of the text where Python's also matches before a final
newline; ``{,3}`` is literal text where Python reads a repetition; Go has
``\\z``, ``\\Q...\\E``, ``\\x{...}``, octal ``\\12``, POSIX classes
``[[:alpha:]]`` and flags anywhere in a group, which Python lacks or reads
otherwise; and under ``(?i)`` Python folds a few letters Go keeps apart
(``i`` and the Turkish ``ı``, ``İ``). translate() parses the pattern as Go
does and writes a Python pattern that contains a match of exactly the texts
Go's does, with every flag resolved at each atom, so that the result
compiles without flags. It refuses (PatternError) the Go syntax it cannot
express: Unicode classes (\\pL, \\p{Greek}), which Python's re lacks. Only
whether a match exists is kept: groups do not capture, and greediness
(``?`` after a repetition, the U flag) is left as written, as it never
changes whether a match exists.
"""

from __future__ import annotations

import functools
import re
from typing import FrozenSet, List, Optional, Tuple

Ranges = List[Tuple[int, int]]

MAX_RUNE = 0x10FFFF
MAX_REPEAT = 1000  # Go's limit for {n,m}

_DIGIT: Ranges = [(0x30, 0x39)]
_SPACE: Ranges = [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_PERL = {"d": _DIGIT, "s": _SPACE, "w": _WORD}

_POSIX = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}

# Go's case-folding orbits (unicode.SimpleFold) of the letters that Python's
# re.IGNORECASE folds differently: Python also folds i and I with the
# Turkish ı and İ, and the Greek and ligature pairs below, which Go keeps
# apart. Everywhere else the two fold alike (TestPythonFoldsAsGo checks it
# over every letter).
_GO_ORBIT = {
    0x49: (0x49, 0x69),
    0x69: (0x49, 0x69),
    0x130: (0x130,),
    0x131: (0x131,),
    0x390: (0x390,),
    0x3B0: (0x3B0,),
    0x1FD3: (0x1FD3,),
    0x1FE3: (0x1FE3,),
    0xFB05: (0xFB05,),
    0xFB06: (0xFB06,),
}

# The ASCII letters whose Go orbit reaches outside ASCII.
_ASCII_FOLD_EXTRA = {0x4B: 0x212A, 0x6B: 0x212A, 0x53: 0x17F, 0x73: 0x17F}

_ANY = "[\\x00-\\U0010ffff]"
_WORD_CLASS = "[0-9A-Z_a-z]"
_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?!{_WORD_CLASS})|(?<!{_WORD_CLASS})(?={_WORD_CLASS}))"
_NOT_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?={_WORD_CLASS})|(?<!{_WORD_CLASS})(?!{_WORD_CLASS}))"


class PatternError(ValueError):
    """A pattern Go's regexp refuses, or one the Python SDK cannot check as Go does."""


@functools.lru_cache(maxsize=256)
def compile(pattern: str) -> "re.Pattern[str]":
    """pattern, in Go's syntax, compiled to match what Go's regexp matches."""
    return re.compile(translate(pattern))


def translate(pattern: str) -> str:
    """The Python pattern whose search finds a match exactly where Go's does."""
    return _parse(pattern)[0]


@functools.lru_cache(maxsize=256)
def backtracks(pattern: str) -> bool:
    """Whether pattern repeats a group that itself holds a repetition or an
    alternation, as in ``^(a+)+$`` or ``(x|xy)*z``: Python's re, which
    backtracks, can take time exponential in a value's length to search it,
    where Go's regexp takes linear time. The SDK does not check values
    against such a pattern at run time (the runner checked them with Go's
    regexp when it loaded the config): a check that never ends would hang
    the whole plugin process, and every run on it."""
    return _parse(pattern)[1]


def _parse(pattern: str) -> Tuple[str, bool]:
    p = _Parser(pattern)
    out = p.group(frozenset())
    if p.i < len(pattern):
        raise PatternError(f"unexpected ): {pattern!r}")
    return out, p.nested


def _normalize(r: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(r):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _negate(r: Ranges) -> Ranges:
    out: Ranges = []
    nxt = 0
    for lo, hi in _normalize(r):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_RUNE:
        out.append((nxt, MAX_RUNE))
    return out


def _fold_ascii(r: Ranges) -> Ranges:
    """Go's case folding of a set of ASCII characters."""
    out = list(r)
    for lo, hi in r:
        for c in range(lo, min(hi, 0x7F) + 1):
            if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
                out.append((c ^ 0x20, c ^ 0x20))
            if c in _ASCII_FOLD_EXTRA:
                out.append((_ASCII_FOLD_EXTRA[c],) * 2)
    return _normalize(out)


def _char(c: int) -> str:
    if c < 0x80 and chr(c).isalnum():
        return chr(c)
    if c < 0x100:
        return f"\\x{c:02x}"
    if c < 0x10000:
        return f"\\u{c:04x}"
    return f"\\U{c:08x}"


def _set(r: Ranges, negated: bool = False) -> str:
    body = "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in _normalize(r))
    return f"[{'^' if negated else ''}{body}]"


def _in(c: int, r: Ranges) -> bool:
    return any(lo <= c <= hi for lo, hi in r)


def _class(r: Ranges, negated: bool, fold: bool) -> str:
    """A Python atom for Go's class of r (case-folded if fold), or its complement."""
    r = _normalize(r)
    if not fold:
        return _set(r, negated)
    # Python's (?i) folds r as Go does but for the letters in _GO_ORBIT:
    # take out those it adds and put back those it misses.
    base = f"(?i:{_set(r)})"
    py = re.compile(base)
    extra = [(e, e) for e, orbit in _GO_ORBIT.items() if py.fullmatch(chr(e)) and not any(_in(o, r) for o in orbit)]
    missing = [(e, e) for e, orbit in _GO_ORBIT.items() if not py.fullmatch(chr(e)) and any(_in(o, r) for o in orbit)]
    if extra:
        base = f"(?!{_set(extra)}){base}"
    if missing:
        base = f"{base}|{_set(missing)}"
    positive = f"(?:{base})"
    return f"(?:(?!{positive}){_ANY})" if negated else positive


class _Parser:
    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0
        # Repetitions and alternations parsed so far; and whether a
        # repetition applies to a group holding one of them (see
        # backtracks).
        self.complex = 0
        self.nested = False

    def error(self, msg: str) -> PatternError:
        return PatternError(f"{msg} in {self.p!r}")

    def group(self, flags: FrozenSet[str]) -> str:
        """The translation up to the ")" closing the current group (not consumed)."""
        p = self.p
        out: List[str] = []
        last = ""  # "atom", "repeat" or "" (nothing to repeat)
        last_complex = False  # the last atom is a group holding a repetition or a |
        while self.i < len(p):
            c = p[self.i]
            if c == ")":
                break
            if c == "|":
                out.append("|")
                self.i += 1
                last = ""
                self.complex += 1
                continue
            if c in "*+?" or (c == "{" and self._repeat() is not None):
                op = c if c != "{" else self._repeat()
                if last == "repeat":
                    raise self.error(f"invalid nested repetition operator {op}")
                if last == "":
                    raise self.error(f"missing argument to repetition operator {op}")
                if last_complex and op not in ("?", "{0,1}", "{1}", "{0}", "{1,1}", "{0,0}"):
                    self.nested = True
                self.complex += 1
                self.i += len(op)
                if p.startswith("?", self.i):
                    op += "?"
                    self.i += 1
                out.append(op)
                last = "repeat"
                continue
            last_complex = False
            if c == "(":
                before = self.complex
                atom, set_flags = self._paren(flags)
                if atom is None:  # (?i) and the like: to the end of the group, | or not
                    flags = set_flags
                    continue
                out.append(atom)
                last_complex = self.complex > before
            elif c == "[":
                out.append(self._bracket(flags))
            elif c == ".":
                self.i += 1
                out.append(_ANY if "s" in flags else "[^\\n]")
            elif c == "^":
                self.i += 1
                out.append("(?:\\A|(?<=\\n))" if "m" in flags else "(?:\\A)")
            elif c == "$":
                self.i += 1
                out.append("(?:\\Z|(?=\\n))" if "m" in flags else "(?:\\Z)")
            elif c == "\\":
                out.append(self._escape(flags))
            else:
                self.i += 1
                out.append(self._literal(ord(c), flags))
            last = "atom"
        return "".join(out)

    def _repeat(self):
        """The {n}, {n,} or {n,m} at self.i, or None: Go reads anything else as text."""
        m = re.compile(r"\{([0-9]+)(,([0-9]*))?\}").match(self.p, self.i)
        if not m:
            return None
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
        if lo > MAX_REPEAT or hi > MAX_REPEAT or (hi >= 0 and hi < lo):
            raise self.error(f"invalid repeat count {m.group(0)}")
        return m.group(0)

    def _literal(self, c: int, flags: FrozenSet[str]) -> str:
        if "i" in flags and not (c < 0x80 and not chr(c).isalpha()):
            return _class([(c, c)], False, True)
        return _char(c)

    def _paren(self, flags: FrozenSet[str]) -> Tuple[Optional[str], FrozenSet[str]]:
        """The group at self.i as an atom, or (None, the flags it sets) for
        a group that only sets flags."""
        p = self.p
        self.i += 1
        inner = flags
        if p.startswith("?", self.i):
            m = re.compile(r"\?(P?<[A-Za-z0-9_]+>|[imsU]*(-[imsU]*)?[:)])").match(p, self.i)
            if not m or m.group(0) == "?)" or m.group(0).endswith(("-:", "-)")):
                raise self.error(f"invalid or unsupported Perl syntax at {p[self.i - 1 : self.i + 3]!r}")
            self.i = m.end()
            spec = m.group(0)
            if not spec.endswith(">"):
                on, _, off = spec[1:-1].partition("-")
                inner = (flags | set(on)) - set(off)
                if spec.endswith(")"):
                    return None, inner
        body = self.group(inner)
        if not p.startswith(")", self.i):
            raise self.error("missing closing )")
        self.i += 1
        return f"(?:{body})", flags

    def _escape(self, flags: FrozenSet[str]) -> str:
        p = self.p
        c = p[self.i + 1 : self.i + 2]
        if c == "A":
            self.i += 2
            return "(?:\\A)"
        if c == "z":
            self.i += 2
            return "(?:\\Z)"
        if c == "b":
            self.i += 2
            return _BOUNDARY
        if c == "B":
            self.i += 2
            return _NOT_BOUNDARY
        if c == "Q":
            end = p.find("\\E", self.i + 2)
            text = p[self.i + 2 :] if end < 0 else p[self.i + 2 : end]
            self.i = len(p) if end < 0 else end + 2
            return "".join(f"(?:{self._literal(ord(ch), flags)})" for ch in text)
        group = self._perl_or_unicode_class(flags)
        if group is not None:
            r, negated = group
            return _class(r, negated, "i" in flags)
        return self._literal(self._escaped_char(), flags)

    def _perl_or_unicode_class(self, flags: FrozenSet[str]):
        """The Perl class (\\d \\D \\s \\S \\w \\W) at self.i as (ranges, negated), or None."""
        c = self.p[self.i + 1 : self.i + 2]
        if c in ("p", "P"):
            raise PatternError(
                f"Unicode classes such as \\pL and \\p{{Greek}} are not supported by the Python SDK, "
                f"which cannot check them as Go does: {self.p!r}"
            )
        if c not in ("d", "D", "s", "S", "w", "W"):
            return None
        self.i += 2
        r = _PERL[c.lower()]
        if "i" in flags:
            r = _fold_ascii(r)
        return r, c.isupper()

    def _escaped_char(self) -> int:
        """The character a \\ escape (not a class) at self.i stands for, as Go reads it."""
        p = self.p
        if self.i + 1 >= len(p):
            raise self.error("trailing backslash at end of expression")
        c = p[self.i + 1]
        self.i += 2
        if c in "1234567" and not (self.i < len(p) and p[self.i] in "01234567"):
            raise self.error(f"invalid escape sequence \\{c} (backreferences are not supported)")
        if c in "01234567":
            v, n = int(c), 1
            while n < 3 and self.i < len(p) and p[self.i] in "01234567":
                v, n = v * 8 + int(p[self.i]), n + 1
                self.i += 1
            return v
        if c == "x":
            m = re.compile(r"\{([0-9A-Fa-f]+)\}|[0-9A-Fa-f]{2}").match(p, self.i)
            if not m:
                raise self.error("invalid escape sequence \\x")
            v = int(m.group(1) or m.group(0), 16)
            if v > MAX_RUNE:
                raise self.error("invalid escape sequence \\x")
            self.i = m.end()
            return v
        named = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}
        if c in named:
            return named[c]
        if ord(c) < 0x80 and not c.isalnum():
            return ord(c)
        raise self.error(f"invalid escape sequence \\{c}")

    def _bracket(self, flags: FrozenSet[str]) -> str:
        """A bracketed class [...] at self.i, read as Go reads it."""
        p = self.p
        fold = "i" in flags
        self.i += 1
        negated = p.startswith("^", self.i)
        if negated:
            self.i += 1
        r: Ranges = []
        first = True
        while True:
            if self.i >= len(p):
                raise self.error("missing closing ]")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if p.startswith("[:", self.i):
                end = p.find(":]", self.i + 2)
                if end >= 0:
                    name = p[self.i + 2 : end]
                    neg = name.startswith("^")
                    if name.lstrip("^") not in _POSIX:
                        raise self.error(f"invalid character class range {p[self.i : end + 2]}")
                    self.i = end + 2
                    g = _POSIX[name.lstrip("^")]
                    if fold:
                        g = _fold_ascii(g)
                    r += _negate(g) if neg else g
                    continue
            if c == "\\":
                group = self._perl_or_unicode_class(flags)
                if group is not None:
                    g, neg = group
                    r += _negate(g) if neg else g
                    continue
            lo = self._class_char()
            hi = lo
            if p.startswith("-", self.i) and not p.startswith("-]", self.i) and self.i + 1 < len(p):
                self.i += 1
                hi = self._class_char()
                if hi < lo:
                    raise self.error("invalid character class range")
            r.append((lo, hi))
        return _class(r, negated, fold)

    def _class_char(self) -> int:
        p = self.p
        if p.startswith("\\", self.i):
            return self._escaped_char()
        self.i += 1
        return ord(p[self.i - 1])
