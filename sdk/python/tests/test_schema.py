"""The params checker: the same problems, in the same words, as the runner's."""

import json
import os
import unittest

from pacer_sdk import _schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CASES = os.path.join(ROOT, "sdk", "paramschema", "testdata", "validate_cases.json")


class SharedCasesTest(unittest.TestCase):
    """sdk/paramschema/testdata/validate_cases.json holds schemas, values and the
    problems Go's paramschema.Schema.Validate reports (TestValidateSharedCases
    checks the Go side against the same file)."""

    def test_same_problems_as_the_runner(self):
        with open(CASES, encoding="utf-8") as f:
            cases = json.load(f)
        self.assertGreater(len(cases), 20)
        for case in cases:
            with self.subTest(case["name"]):
                schema = None if case["schema"] is None else _schema.parse(json.dumps(case["schema"]))
                got = [str(p) for p in _schema.validate(schema, case["value"])]
                self.assertEqual(got, case["problems"] or [])


class BeyondExactIntegerTest(unittest.TestCase):
    """Attack 19, P1: an integer beyond ±2^53 travels as a double that does not
    hold it (1e20 fits no Go int); a Python int is checked exactly, and quoted
    as it is where the runner's JSON could not hold it (the shared cases)."""

    def test_python_ints_are_checked_exactly(self):
        msg = "expected an integer within ±2^53 (9007199254740992), which params carry exactly; got "
        for schema, value, want in [
            ({"type": "integer"}, 2**53, []),
            ({"type": "integer"}, -(2**53), []),
            ({"type": "integer"}, 2**53 + 1, ["params: " + msg + "9007199254740993"]),
            ({"type": "integer"}, -(10**30) - 1, ["params: " + msg + "-1000000000000000000000000000001"]),
            ({"type": "integer"}, 1e20, ["params: " + msg + "100000000000000000000"]),
            ({"type": "number"}, 1e20, []),
            ({"type": "number", "maximum": 0}, 2**53 + 1, ["params: must be <= 0, got 9007199254740993"]),
            ({"type": "integer"}, True, ["params: expected integer, got boolean"]),
        ]:
            with self.subTest(value=value):
                self.assertEqual([str(p) for p in _schema.validate(schema, value)], want)


class ParseTest(unittest.TestCase):
    def test_refuses_what_the_runner_refuses(self):
        for text, want in [
            ('{"type":"strin"}', 'params schema: #/type: unsupported type "strin"'),
            ('{"enum":[]}', "params schema: #/enum: empty"),
            ('{"properties":{"a/b":{"oneOf":[]}}}', "params schema: #/properties/a~1b/oneOf: empty"),
            ('{"minimum":2,"maximum":1}', "params schema: #: minimum 2 is above maximum 1"),
            ('{"type":"object","properties":{"n":{"type":"integer","minimum":1,"default":0}}}',
             "params schema: #/properties/n/default: 0 does not fit the schema: must be >= 1, got 0"),
            ('{"items":{"type":"map"}}', 'params schema: #/items/type: unsupported type "map"'),
            ("[1]", "params schema: not a JSON object"),
        ]:
            with self.subTest(text):
                with self.assertRaises(_schema.SchemaError) as cm:
                    _schema.parse(text)
                self.assertEqual(str(cm.exception), want)

    def test_empty_means_any(self):
        self.assertIsNone(_schema.parse("  "))
        self.assertEqual(_schema.validate(None, {"x": object()}), [])


class FormatTest(unittest.TestCase):
    def test_numbers_as_go_formats_them(self):
        for f, want in [(0, "0"), (-0.0, "-0"), (1e6, "1000000"), (123456, "123456"), (0.0001, "0.0001"),
                        (0.000001, "0.000001"), (1e-7, "1e-07"), (1e21, "1e+21"), (1.5, "1.5"), (-128, "-128"),
                        (4294967295, "4294967295"), (float("inf"), "+Inf"), (float("nan"), "NaN")]:
            self.assertEqual(_schema.format_number(f), want, f)

    def test_go_quote(self):
        self.assertEqual(_schema.go_quote('a"b\\c\n\x00\x7fé\u00a0'), '"a\\"b\\\\c\\n\\x00\\x7fé\\u00a0"')

    def test_suggest(self):
        self.assertEqual(_schema.suggest("comand", ["command", "shell"]), "command")
        self.assertEqual(_schema.suggest("c", ["a"]), "")
        self.assertEqual(_schema.edit_distance("ab", "ba"), 1)


if __name__ == "__main__":
    unittest.main()
