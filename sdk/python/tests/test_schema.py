"""The params checker: the same problems, in the same words, as the runner's."""

import json
import os
import unittest

from pacer_sdk import _schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CASES = os.path.join(ROOT, "sdk", "pluginv1", "testdata", "validate_cases.json")


class SharedCasesTest(unittest.TestCase):
    """sdk/pluginv1/testdata/validate_cases.json holds schemas, values and the
    problems Go's pluginv1.Schema.Validate reports (TestValidateSharedCases
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


class ParseTest(unittest.TestCase):
    def test_refuses_what_the_runner_refuses(self):
        for text, want in [
            ('{"type":"strin"}', 'params schema: #/type: unsupported type "strin"'),
            ('{"enum":[]}', "params schema: #/enum: empty"),
            ('{"properties":{"a/b":{"oneOf":[]}}}', "params schema: #/properties/a~1b/oneOf: empty"),
            ('{"minimum":2,"maximum":1}', "params schema: #: minimum 2 is above maximum 1"),
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
        for f, want in [(0, "0"), (-0.0, "-0"), (1e6, "1e+06"), (123456, "123456"), (0.0001, "0.0001"),
                        (0.00001, "1e-05"), (1.5, "1.5"), (-128, "-128"), (4294967295, "4.294967295e+09"),
                        (float("inf"), "+Inf"), (float("nan"), "NaN")]:
            self.assertEqual(_schema.format_number(f), want, f)

    def test_go_quote(self):
        self.assertEqual(_schema.go_quote('a"b\\c\n\x00\x7fé\u00a0'), '"a\\"b\\\\c\\n\\x00\\x7fé\\u00a0"')

    def test_suggest(self):
        self.assertEqual(_schema.suggest("comand", ["command", "shell"]), "command")
        self.assertEqual(_schema.suggest("c", ["a"]), "")
        self.assertEqual(_schema.edit_distance("ab", "ba"), 1)


if __name__ == "__main__":
    unittest.main()
