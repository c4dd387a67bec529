"""Patterns: the SDK finds a match where the runner's Go regexp does."""

import dataclasses
import json
import os
import unittest

from pacer_sdk import _re2, _schema, param
from pacer_sdk._params import ParamsError, ParamsSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CASES = os.path.join(ROOT, "sdk", "paramschema", "testdata", "pattern_cases.json")


class SharedCasesTest(unittest.TestCase):
    """sdk/paramschema/testdata/pattern_cases.json holds patterns and, out of
    its values, those Go's regexp finds a match in (TestPatternSharedCases
    checks and rewrites them with Go's regexp)."""

    def test_same_matches_as_the_runner(self):
        with open(CASES, encoding="utf-8") as f:
            pc = json.load(f)
        self.assertGreater(len(pc["cases"]), 50)
        for case in pc["cases"]:
            with self.subTest(pattern=case["pattern"]):
                rx = _schema.go_regex(case["pattern"])
                got = [v for v in pc["values"] if rx.search(v)]
                self.assertEqual(got, case["matches"], f"translated to {_re2.translate(case['pattern'])!r}")


class RefusedTest(unittest.TestCase):
    def test_unicode_classes_are_refused_at_definition(self):
        for pattern in [r"\pL", r"^\p{Greek}+$", r"[\PN]"]:
            with self.subTest(pattern=pattern):
                with self.assertRaisesRegex(TypeError, r"Unicode classes .* not supported by the Python SDK"):

                    @dataclasses.dataclass
                    class P:
                        s: str = param(default="", pattern=pattern)

                    ParamsSpec(P)

    def test_unicode_classes_are_refused_in_a_schema(self):
        with self.assertRaisesRegex(_schema.SchemaError, r"#/properties/s/pattern: .* not supported by the Python SDK"):
            _schema.parse('{"type":"object","properties":{"s":{"type":"string","pattern":"\\\\pL"}}}')

    def test_what_go_refuses_is_refused(self):
        for pattern in ["(", "a**", r"\1", r"\8", r"[z-a]", "x{1001}", r"[[:nope:]]", r"\Z", "(?<=a)b", "(?P=x)", "a)", "[a"]:
            with self.subTest(pattern=pattern):
                with self.assertRaises(ValueError):
                    _re2.translate(pattern)


class ParamsTest(unittest.TestCase):
    def test_non_ascii_value_of_an_ascii_class(self):
        @dataclasses.dataclass
        class P:
            sep: str = param(default="-", pattern=r"^\W+$")
            tag: str = param(default="1", pattern=r"\b1")

        spec = ParamsSpec(P)
        got = spec.decode({"sep": "é", "tag": "é1"})
        self.assertEqual((got.sep, got.tag), ("é", "é1"))
        with self.assertRaises(ParamsError) as cm:
            spec.decode({"sep": "a", "tag": "a1"})
        self.assertEqual(
            [str(p) for p in cm.exception.problems],
            ["params.sep: must match the pattern ^\\W+$; got \"a\"", "params.tag: must match the pattern \\b1; got \"a1\""],
        )


if __name__ == "__main__":
    unittest.main()


class BacktrackingTest(unittest.TestCase):
    """Attack 18, R1: a pattern that repeats a group holding a repetition or
    an alternation can take Python's re time exponential in the value's
    length, where Go's regexp is linear: a value the runner accepted at
    load hung the whole plugin process in the SDK's run-time check (the run
    recorded `timeout`, another job's run on the plugin `crashed`). The SDK
    leaves such patterns to the runner's check. Before the fix this test
    does not end: the search of the value below takes days."""

    def test_nested_repetitions_are_left_to_the_runner(self):
        for pattern in (r"^(a+)+$", r"(x+x+)+y|z", r"(a|ab)*c", r"((ab)?)*$"):
            with self.subTest(pattern):
                self.assertTrue(_re2.backtracks(pattern))
                problems = _schema.validate({"type": "string", "pattern": pattern}, "a" * 40 + "x" * 40 + "!")
                self.assertEqual(problems, [])

    def test_other_patterns_are_still_checked(self):
        for pattern in (r"^[a-z]+$", r"(ab)+", r"\d+-\d+", r"(a+)?b", r"^(?:ab){2}$"):
            with self.subTest(pattern):
                self.assertFalse(_re2.backtracks(pattern))
                problems = _schema.validate({"type": "string", "pattern": pattern}, "!")
                self.assertEqual(len(problems), 1, problems)
                self.assertIn("must match the pattern", str(problems[0]))
