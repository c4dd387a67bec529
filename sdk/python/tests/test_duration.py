"""Go durations: the vectors of Go's own time package tests."""

import datetime
import unittest

from pacer_sdk import _duration as d

S, MS, US, M, H = d.SECOND, d.MILLISECOND, d.MICROSECOND, d.MINUTE, d.HOUR

PARSE = [
    ("0", 0), ("5s", 5 * S), ("30s", 30 * S), ("1478s", 1478 * S), ("-5s", -5 * S), ("+5s", 5 * S), ("-0", 0), ("+0", 0),
    ("5.0s", 5 * S), ("5.6s", 5 * S + 600 * MS), ("5.s", 5 * S), (".5s", 500 * MS), ("1.0s", S), ("1.00s", S),
    ("1.004s", S + 4 * MS), ("1.0040s", S + 4 * MS), ("100.00100s", 100 * S + MS),
    ("10ns", 10), ("11us", 11 * US), ("12\u00b5s", 12 * US), ("12\u03bcs", 12 * US), ("13ms", 13 * MS), ("14s", 14 * S),
    ("15m", 15 * M), ("16h", 16 * H), ("3h30m", 3 * H + 30 * M), ("10.5s4m", 4 * M + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)), ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6),
    ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS), ("52763797000ns", 52763797000),
    ("0.3333333333333333333h", 20 * M), ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1), ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1), ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)), ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)), ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372539827),
]

BAD = ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "\x85\x85", "\xffff", "hello \xffff world",
       "9223372036854775810ns", "9223372036854775808ns", "-9223372036854775809ns", "9223372036854776us",
       "3000000h", "9223372036854775.808us", "9223372036854ms775us808ns"]

FORMAT = [("0s", 0), ("1ns", 1), ("1.1\u00b5s", 1100), ("2.2ms", 2200 * US), ("3.3s", 3300 * MS), ("4m5s", 4 * M + 5 * S),
          ("4m5.001s", 4 * M + 5001 * MS), ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS), ("8m0.000000001s", 8 * M + 1),
          ("2562047h47m16.854775807s", (1 << 63) - 1), ("-2562047h47m16.854775808s", -(1 << 63))]


class DurationTest(unittest.TestCase):
    def test_parse(self):
        for text, want in PARSE:
            self.assertEqual(d.parse(text), want, text)

    def test_parse_refuses(self):
        for text in BAD:
            with self.subTest(text=text), self.assertRaises(ValueError):
                d.parse(text)

    def test_format(self):
        for want, ns in FORMAT:
            self.assertEqual(d.format(ns), want)
            self.assertEqual(d.parse(want), ns)

    def test_timedelta(self):
        self.assertEqual(d.to_timedelta(d.parse("1h30m0.0000015s")), datetime.timedelta(hours=1, minutes=30, microseconds=1))
        self.assertEqual(d.format(d.from_timedelta(datetime.timedelta(days=1, milliseconds=5))), "24h0m0.005s")


class ShownTest(unittest.TestCase):
    def test_reason_reads_like_the_config(self):
        from pacer_sdk._server import _shown

        for ns, want in [(1999965725, "2s"), (9997000000, "10s"), (1500000000, "1.5s"), (299999000, "300ms"), (500000, "500\u00b5s")]:
            self.assertEqual(d.format(_shown(ns)), want, ns)


if __name__ == "__main__":
    unittest.main()
