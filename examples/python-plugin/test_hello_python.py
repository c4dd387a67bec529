"""Tests of hello-python, as a plugin author would write them: in process
(fast, the task's state in reach) and as the executable Pacer runs."""

import os
import unittest

import hello_python  # noqa: F401 - also puts the SDK on the path when it is not installed
from pacer_sdk import RunInfo
from pacer_sdk.testing import Harness

HERE = os.path.dirname(os.path.abspath(__file__))


class GreetTest(unittest.TestCase):
    def test_greet(self):
        with Harness.serve(hello_python.plugin) as h:
            res = h.run("greet", {"name": "Ada", "greeting": "hi"}, info=RunInfo(attempt=2))
        self.assertTrue(res.ok, res)
        self.assertEqual(res.output, "hi, Ada")
        self.assertEqual(res.data["greeted"], "Ada")
        self.assertEqual([(l.message, l.attrs) for l in res.logs], [("greeting", {"name": "Ada", "attempt": 2.0})])
        self.assertEqual(res.progress, [(100.0, "greeted")])
        self.assertEqual([(s.name, s.parent_span_id) for s in res.spans], [("compose greeting", res.span_id)])

    def test_params(self):
        # What the runner says about a job's params when it loads its config.
        with Harness.serve(hello_python.plugin) as h:
            self.assertEqual(
                h.check_params("greet", {"nme": "Ada", "greeting": "yo", "wait": "soon"}),
                [
                    'params: missing required key "name"',
                    'params.greeting: must be one of "hello", "hi", "good morning"; got "yo"',
                    'params.nme: unknown key "nme" (did you mean "name"?)',
                    'params.wait: invalid duration "soon"',
                ],
            )
            # The task refuses them too, if they get that far.
            self.assertEqual(h.run("greet", {}).details, 'invalid params: params: missing required key "name"')

    def test_cancelled_while_waiting(self):
        with Harness.serve(hello_python.plugin) as h:
            res = h.run("greet", {"name": "Ada", "wait": "1h"}, timeout=0.2)
        self.assertEqual(res.error, "cancelled: timed out after 200ms")
        self.assertEqual(res.logs[-1].attrs, {"reason": "timed out after 200ms"})

    def test_executable(self):
        # Exactly as Pacer runs it.
        with Harness.start(os.path.join(HERE, "hello_python.py")) as h:
            self.assertEqual((h.name, h.version), ("hello-python", "1.0.0"))
            res = h.run("greet", {"name": "Grace"})
            # print() reaches the runner apart from the result: wait for it.
            h.wait_stdout("hello-python greeted Grace")
        self.assertEqual((res.output, len(res.spans)), ("hello, Grace", 1))
        self.assertEqual(h.stray_stdout, b"")


if __name__ == "__main__":
    unittest.main()
