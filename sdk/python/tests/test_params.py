"""Typed params: dataclass to schema, checks, decoding, definition errors."""

import dataclasses
import datetime
import enum
import json
import typing
import unittest
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import pacer_sdk
from pacer_sdk import _schema, param
from pacer_sdk._params import ParamsError, ParamsSpec


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass
class Target:
    host: str
    port: int = param(default=443, minimum=1, maximum=65535)


@dataclasses.dataclass
class Params:
    name: str = param(description="who")
    count: int = param(default=1, minimum=1, maximum=10)
    ratio: float = 0.5
    enabled: bool = True
    wait: datetime.timedelta = param(default=datetime.timedelta(seconds=90))
    tags: List[str] = param(default_factory=list, enum=["a", "b"])
    labels: Dict[str, str] = dataclasses.field(default_factory=dict)
    mode: Mode = Mode.FAST
    level: Literal["debug", "info"] = "info"
    command: Union[str, List[str]] = "true"
    target: Optional[Target] = None
    note: Optional[str] = None
    anything: Any = None
    code: str = param(default="AB-1", pattern=r"^[A-Z]+-\d+$")
    pair: Tuple[int, ...] = ()
    internal: int = dataclasses.field(default=0, init=False)


class SchemaTest(unittest.TestCase):
    def setUp(self):
        self.spec = ParamsSpec(Params)

    def test_schema(self):
        s = self.spec.schema
        self.assertEqual(s["type"], "object")
        self.assertIs(s["additionalProperties"], False)
        self.assertEqual(s["required"], ["name"])
        p = s["properties"]
        self.assertNotIn("internal", p)
        self.assertEqual(p["name"], {"type": "string", "description": "who"})
        self.assertEqual(p["count"], {"type": "integer", "minimum": 1, "maximum": 10, "default": 1})
        self.assertEqual(p["wait"], {"type": "string", "format": "duration", "default": "1m30s"})
        self.assertEqual(p["tags"], {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}})
        self.assertEqual(p["labels"], {"type": "object", "additionalProperties": {"type": "string"}})
        self.assertEqual(p["mode"], {"type": "string", "enum": ["fast", "slow"], "default": "fast"})
        self.assertEqual(p["level"], {"type": "string", "enum": ["debug", "info"], "default": "info"})
        self.assertEqual(p["command"]["oneOf"], [{"type": "string"}, {"type": "array", "items": {"type": "string"}}])
        self.assertEqual(p["target"]["required"], ["host"])
        self.assertIs(p["target"]["additionalProperties"], False)
        self.assertEqual(p["note"], {"type": "string"})
        self.assertEqual(p["anything"], {})
        self.assertEqual(p["code"]["pattern"], r"^[A-Z]+-\d+$")
        self.assertEqual(p["pair"], {"type": "array", "items": {"type": "integer"}, "default": []})

    def test_published_schema_has_only_keywords_the_runner_knows(self):
        pub = self.spec.published(frozenset({"type", "properties", "minimum"}))
        self.assertEqual(pub["properties"]["count"], {"type": "integer", "minimum": 1})
        pub = self.spec.published()
        self.assertEqual(pub, self.spec.schema)  # the runner checks every keyword the SDK uses
        # The runner's parser accepts it, defaults checked against their fields.
        self.assertIsNotNone(_schema.parse(json.dumps(pub)))

    def test_decode(self):
        p = self.spec.decode(
            {
                "name": "Ada",
                "count": 3.0,
                "wait": "1h30m",
                "tags": ["b"],
                "labels": {"x": "y"},
                "mode": "slow",
                "command": ["echo", "hi"],
                "target": {"host": "example.com"},
                "pair": [1.0, 2.0],
            }
        )
        self.assertEqual(p.name, "Ada")
        self.assertEqual(p.count, 3)
        self.assertIsInstance(p.count, int)
        self.assertEqual(p.wait, datetime.timedelta(hours=1, minutes=30))
        self.assertEqual(p.tags, ["b"])
        self.assertEqual(p.mode, Mode.SLOW)
        self.assertEqual(p.command, ["echo", "hi"])
        self.assertEqual(p.target, Target("example.com", 443))
        self.assertEqual(p.pair, (1, 2))
        self.assertIsNone(p.note)
        self.assertEqual(p.ratio, 0.5)
        self.assertEqual(p.code, "AB-1")

    def test_decode_defaults(self):
        p = self.spec.decode({"name": "x"})
        self.assertEqual((p.count, p.wait, p.tags, p.labels, p.mode, p.target), (1, datetime.timedelta(seconds=90), [], {}, Mode.FAST, None))

    def test_every_problem_at_once(self):
        with self.assertRaises(ParamsError) as cm:
            self.spec.decode({"nme": "x", "count": 0, "wait": "soon", "mode": "fats", "code": "ab-1", "target": {"host": "h", "port": 0}})
        self.assertEqual(
            [str(p) for p in cm.exception.problems],
            [
                'params: missing required key "name"',
                'params.code: must match the pattern ^[A-Z]+-\\d+$; got "ab-1"',
                "params.count: must be >= 1, got 0",
                'params.mode: must be one of "fast", "slow"; got "fats" (did you mean "fast"?)',
                'params.nme: unknown key "nme" (did you mean "name"?)',
                "params.target.port: must be >= 1, got 0",
                'params.wait: invalid duration "soon"',
            ],
        )


class DefinitionErrorTest(unittest.TestCase):
    def check(self, cls, want):
        with self.assertRaises(TypeError) as cm:
            ParamsSpec(cls)
        self.assertIn(want, str(cm.exception))

    def test_errors(self):
        @dataclasses.dataclass
        class MinOnString:
            s: str = param(minimum=1)

        @dataclasses.dataclass
        class BadDefault:
            n: int = param(default=0, minimum=1)

        @dataclasses.dataclass
        class BadType:
            f: complex = 0j

        @dataclasses.dataclass
        class IntKeys:
            m: Dict[int, str] = dataclasses.field(default_factory=dict)

        @dataclasses.dataclass
        class PatternOnInt:
            n: int = param(default=1, pattern="x")

        @dataclasses.dataclass
        class BadPattern:
            s: str = param(default="", pattern="(")

        @dataclasses.dataclass
        class MinAboveMax:
            n: int = param(default=5, minimum=10, maximum=1)

        @dataclasses.dataclass
        class FixedTuple:
            t: Tuple[int, str] = (1, "a")

        self.check(MinOnString, "MinOnString.s: minimum on a field that is not a number")
        self.check(BadDefault, "BadDefault.n: default 0 does not fit the field: default: must be >= 1, got 0")
        self.check(BadType, "BadType.f: type <class 'complex'> cannot come from params")
        self.check(IntKeys, "map key type")
        self.check(PatternOnInt, "pattern on a field that is not a string")
        self.check(BadPattern, "BadPattern.s: pattern '('")
        self.check(MinAboveMax, "minimum 10 is above maximum 1")
        self.check(FixedTuple, "fixed-length tuple")
        with self.assertRaises(TypeError):
            ParamsSpec(dict)

    def test_recursive_types(self):
        @dataclasses.dataclass
        class Node:
            name: str
            children: "List[Node]" = dataclasses.field(default_factory=list)

        spec = ParamsSpec(Node)
        n = spec.decode({"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]})
        self.assertEqual(n.children[0].children[0].name, "c")


class TaskSignatureTest(unittest.TestCase):
    def test_signatures(self):
        plugin = pacer_sdk.Plugin("p")

        @plugin.task()
        def untyped(ctx):
            """Does things.

            More text."""

        @plugin.task()
        def as_dict(ctx, params: dict):
            pass

        @plugin.task()
        def as_mapping(ctx, params: Mapping[str, Any]):
            pass

        @plugin.task("typed", description="typed task")
        def typed(ctx, params: Params):
            pass

        self.assertEqual(plugin.tasks["untyped"].description, "Does things.")
        self.assertEqual(plugin.tasks["untyped"].params_schema_json(), "")
        self.assertFalse(plugin.tasks["untyped"].takes_params)
        self.assertEqual(plugin.tasks["as_dict"].params_schema_json(), "")
        self.assertEqual(plugin.tasks["as_mapping"].params_schema_json(), "")
        self.assertTrue(plugin.tasks["typed"].params_schema_json().startswith('{"additionalProperties":false'))
        with self.assertRaises(ValueError):
            plugin.add("typed", typed)
        with self.assertRaises(TypeError):
            plugin.add("bad", lambda ctx, a, b: None)
        with self.assertRaises(TypeError):
            plugin.add("bad", lambda ctx, p: None, params=int)


if __name__ == "__main__":
    unittest.main()
