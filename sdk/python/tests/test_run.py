"""Runs through the harness, in process, over real gRPC and TLS: results,
errors, logs, progress, spans, cancellation, deadlines."""

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import io
import logging
import threading
import time

import grpc

import pacer_sdk
from pacer_sdk import RunInfo, param
from pacer_sdk.testing import Harness

from .util import TestCase, wait_for


@dataclasses.dataclass
class GreetParams:
    name: str = param(description="who to greet")


@dataclasses.dataclass
class Inner:
    k: int = 3


@dataclasses.dataclass
class NestedParams:
    inner: Inner = param(default_factory=Inner)


def make_plugin(started=None, gate=None, reasons=None):
    plugin = pacer_sdk.Plugin("p", version="9.9")

    @plugin.task(description="Greet.")
    def greet(ctx: pacer_sdk.Context, params: GreetParams):
        ctx.log.with_attrs(component="greeter").info("greeting", name=params.name, n=3, ok=True, nothing=None, items=[1, "a"])
        ctx.report_progress(50, "half way")
        return pacer_sdk.Result(output=f"hello, {params.name}", data={"greeted": params.name, "nested": {"n": [1, 2]}})

    @plugin.task()
    def fail(ctx):
        raise pacer_sdk.TaskError("disk full: free some space")

    @plugin.task()
    def boom(ctx):
        raise KeyError("missing")

    @plugin.task()
    def reject(ctx):
        raise pacer_sdk.InvalidParams("need a cluster name")

    @plugin.task()
    def wait(ctx):
        calls = []
        called = threading.Event()
        ctx.on_cancel(lambda reason: (calls.append(reason), called.set()))
        if started is not None:
            started.set()
        cancelled = ctx.wait(30)
        if cancelled:
            called.wait(10)  # the callbacks run on a thread of their own
        ctx.log.info("woke", cancelled=cancelled, reason=ctx.cancel_reason, callbacks=calls, remaining=ctx.time_remaining())
        if reasons is not None:
            reasons.append(ctx.cancel_reason)
        ctx.check()
        return "not cancelled"

    @plugin.task()
    def spans(ctx):
        with ctx.span("outer", {"k": "v"}) as outer:
            with ctx.span("inner", kind="client") as inner:
                inner.add_event("step", {"i": 1})
            outer.set_status("ok")
        try:
            with ctx.span("failing"):
                raise ValueError("bad input")
        except ValueError:
            pass
        return "traced"

    @plugin.task()
    def stdlib_logging(ctx):
        logging.getLogger("lib").warning("from a library: %s", "hi", extra={"key": "value"})
        return ""

    @plugin.task()
    def ident(ctx):
        i = pacer_sdk.current().info
        return pacer_sdk.Result(output=i.correlation_id, data={"trace": i.trace_id, "job": i.job_id, "attempt": i.attempt, "token": i.fencing_token, "shard": i.shard,
                                                               "node": i.node, "scheduled": i.scheduled_time.isoformat(), "env": dict(i.env)})

    @plugin.task()
    def returns(ctx, params: dict):
        kind = params["kind"]
        if kind == "none":
            return None
        if kind == "int":
            return 5
        if kind == "baddata":
            return pacer_sdk.Result(output="x", data={"when": object()})
        if kind == "big":
            return "x" * (5 << 20)
        if kind == "biglog":
            ctx.log.info("y" * (200 << 10), attr="z")
            return "logged"
        if kind == "notutf8":
            # A file name or an environment value that was not UTF-8:
            # Python decodes its bytes to lone surrogates.
            bad = b"caf\xe9 \xff\xfe".decode("utf-8", "surrogateescape")
            ctx.log.info(bad, **{"k" + bad: bad})
            ctx.report_progress(1, bad)
            with ctx.span(bad, {"a": bad}):
                pass
            return pacer_sdk.Result(output=bad, data={bad: [bad]})
        if kind == "notutf8error":
            raise pacer_sdk.TaskError(b"\xff failed".decode("utf-8", "surrogateescape"))
        if kind == "biglogtoken":
            # A token at the 32 KiB cut: dropped whole, never half kept.
            ctx.log.info("x" * 32760 + " gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 " + "y" * 40000)
            return "logged"
        return "?"

    @plugin.task()
    def reserved(ctx):
        # Attributes named like Logger's own parameters (and the runner's
        # fields): attributes like any other, as in the Go SDK.
        ctx.log.info("named", level="custom", msg="m", self="s", time="t")
        ctx.log.log(pacer_sdk._context.WARN, "by level", level=1, msg=2)
        ctx.log.with_attrs(self="w").error("bound", msg="e")
        return "logged"

    @plugin.task()
    def echo(ctx, params: dict):
        # Empty objects and lists are kept as themselves both ways: in
        # params, in the result's data and in log attributes.
        ctx.log.info("params", params=params)
        return pacer_sdk.Result(data={"seen": params})

    @plugin.task()
    def nested(ctx, params: NestedParams):
        return repr(params)

    @plugin.task()
    def gated(ctx):
        gate.wait(30)
        with ctx.span("gated"):
            pass
        return ctx.info.run_id

    return plugin


class RunTest(TestCase):
    def setUp(self):
        super().setUp()
        self.started = threading.Event()
        self.gate = threading.Event()
        self.reasons = []
        self.h = Harness.serve(make_plugin(self.started, self.gate, self.reasons))
        self.addCleanup(self.h.close)

    def test_describe(self):
        self.assertEqual((self.h.name, self.h.version, self.h.sdk_version), ("p", "9.9", pacer_sdk.VERSION))
        names = [t.name for t in self.h.tasks]
        self.assertEqual(names, sorted(names))
        greet = [t for t in self.h.tasks if t.name == "greet"][0]
        self.assertEqual(greet.description, "Greet.")
        self.assertIn('"required":["name"]', greet.params_schema)
        self.assertTrue(self.h.healthy())

    def test_result_logs_progress(self):
        res = self.h.run("greet", {"name": "Ada"})
        self.assertTrue(res.ok, res)
        self.assertEqual(res.output, "hello, Ada")
        self.assertEqual(res.data, {"greeted": "Ada", "nested": {"n": [1.0, 2.0]}})
        self.assertEqual(len(res.logs), 1)
        log = res.logs[0]
        self.assertEqual((log.level, log.message), (0, "greeting"))
        self.assertEqual(log.attrs, {"component": "greeter", "name": "Ada", "n": 3.0, "ok": True, "nothing": None, "items": [1.0, "a"]})
        self.assertEqual(res.progress, [(50.0, "half way")])

    def test_check_params_says_what_the_runner_says(self):
        self.assertEqual(
            self.h.check_params("greet", {"nme": "Ada"}),
            ['params: missing required key "name"', 'params.nme: unknown key "nme" (did you mean "name"?)'],
        )
        self.assertEqual(self.h.check_params("gret", {}), ['plugin "p" has no task "gret" (it has: boom, echo, fail, gated, greet, ident, nested, reject, reserved, returns, spans, stdlib_logging, wait)'])

    def test_invalid_params_are_invalid_argument(self):
        res = self.h.run("greet", {"nme": "Ada", "extra": 1})
        self.assertEqual(res.status, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(
            res.details,
            'invalid params: params: missing required key "name"; params.extra: unknown key "extra"; params.nme: unknown key "nme" (did you mean "name"?)',
        )
        res = self.h.run("reject")
        self.assertEqual((res.status, res.details), (grpc.StatusCode.INVALID_ARGUMENT, "invalid params: need a cluster name"))

    def test_unknown_task_is_not_found(self):
        res = self.h.run("nope")
        self.assertEqual((res.status, res.details), (grpc.StatusCode.NOT_FOUND, 'plugin "p" has no task "nope"'))

    def test_failures(self):
        res = self.h.run("fail")
        self.assertEqual((res.error, res.logs), ("disk full: free some space", []))
        res = self.h.run("boom")
        self.assertEqual(res.error, "KeyError: 'missing'")
        self.assertEqual(len(res.logs), 1)
        self.assertEqual((res.logs[0].level, res.logs[0].message), (8, "task raised KeyError"))
        self.assertIn('raise KeyError("missing")', res.logs[0].attrs["traceback"])

    def test_return_values(self):
        self.assertEqual(self.h.run("returns", {"kind": "none"}).output, "")
        self.assertEqual(self.h.run("returns", {"kind": "int"}).error, 'task "returns" returned a int; return a str, a pacer_sdk.Result or None')
        res = self.h.run("returns", {"kind": "baddata"})
        self.assertEqual((res.output, res.data), ("x", {}))
        self.assertIn('task "returns" returned data that is not JSON-compatible: when: a object is not a JSON value', res.error)
        res = self.h.run("returns", {"kind": "big"})
        self.assertTrue(res.error.startswith('task "returns" returned a result of 5242'), res.error)
        self.assertIn("over the 4128768-byte limit", res.error)
        res = self.h.run("returns", {"kind": "biglog"})
        self.assertEqual(res.output, "logged")
        self.assertEqual(len(res.logs[0].message), (32 << 10) + len(" [log record truncated]"))
        self.assertTrue(res.logs[0].message.endswith("y\u2026 [log record truncated]"), res.logs[0].message[-40:])
        self.assertEqual(res.logs[0].attrs, {})
        res = self.h.run("returns", {"kind": "biglogtoken"})
        self.assertEqual(res.logs[0].message, "x" * 32760 + " [log record truncated]")

    def test_text_that_is_not_utf8_arrives_replaced(self):
        want = "caf\ufffd \ufffd"
        res = self.h.run("returns", {"kind": "notutf8"})
        self.assertTrue(res.ok, res)
        self.assertEqual((res.output, res.data), (want, {want: [want]}))
        self.assertEqual((res.logs[0].message, res.logs[0].attrs), (want, {"k" + want: want}))
        self.assertEqual(res.progress, [(1.0, want)])
        self.assertEqual(res.spans[0].name, want)
        self.assertEqual(res.spans[0].attributes["a"], want)
        self.assertEqual(self.h.run("returns", {"kind": "notutf8error"}).error, "\ufffd failed")

    def test_identity(self):
        when = __import__("datetime").datetime(2030, 1, 2, 3, 4, 5, tzinfo=__import__("datetime").timezone.utc)
        res = self.h.run(
            "ident",
            info=RunInfo(job_id="j", correlation_id="corr-1", attempt=3, fencing_token=77, shard=3, node="n1", scheduled_time=when, env={"MY_VAR": "x"}),
        )
        self.assertEqual(res.output, "corr-1")
        self.assertEqual(
            res.data,
            {"trace": res.trace_id, "job": "j", "attempt": 3.0, "token": 77.0, "shard": 3.0, "node": "n1", "scheduled": "2030-01-02T03:04:05+00:00",
             "env": {"MY_VAR": "x"}},
        )

    def test_spans_join_the_runners_trace(self):
        res = self.h.run("spans")
        self.assertTrue(res.ok, res)
        by = {s.name: s for s in res.spans}
        self.assertEqual([s.name for s in res.spans], ["inner", "outer", "failing"])
        for s in res.spans:
            self.assertEqual(s.trace_id, res.trace_id)
        self.assertEqual(by["outer"].parent_span_id, res.span_id)
        self.assertEqual(by["inner"].parent_span_id, by["outer"].span_id)
        self.assertEqual(by["failing"].parent_span_id, res.span_id)
        self.assertEqual((by["outer"].attributes, by["outer"].status_code), ({"k": "v"}, 2))
        self.assertEqual((by["inner"].kind, by["inner"].events), (3, ["step"]))
        self.assertEqual((by["failing"].status_code, by["failing"].status_message, by["failing"].events), (1, "bad input", ["exception"]))

    def test_unsampled_runs_ship_no_spans(self):
        res = self.h.call("spans", sampled=False).result()
        self.assertEqual((res.output, res.spans), ("traced", []))

    def test_stdlib_logging_reaches_the_run(self):
        root = logging.getLogger()
        handler = pacer_sdk.LogHandler()
        root.addHandler(handler)
        self.addCleanup(root.removeHandler, handler)
        res = self.h.run("stdlib_logging")
        self.assertEqual(len(res.logs), 1, res.logs)
        self.assertEqual((res.logs[0].level, res.logs[0].message), (4, "from a library: hi"))
        self.assertEqual(res.logs[0].attrs, {"logger": "lib", "key": "value"})

    def test_log_attributes_may_have_any_name(self):
        res = self.h.run("reserved")
        self.assertTrue(res.ok, res)
        self.assertEqual(
            [(log.level, log.message, log.attrs) for log in res.logs],
            [
                (0, "named", {"level": "custom", "msg": "m", "self": "s", "time": "t"}),
                (4, "by level", {"level": 1.0, "msg": 2.0}),
                (8, "bound", {"self": "w", "msg": "e"}),
            ],
        )

    def test_empty_objects_stay_objects(self):
        # As the runner encodes params (structpb): {} is an empty object, not null.
        params = {"a": {}, "b": [{}, []], "c": {"d": {}}, "e": []}
        res = self.h.run("echo", params)
        self.assertTrue(res.ok, res)
        self.assertEqual(res.data, {"seen": params})
        self.assertEqual(res.logs[0].attrs, {"params": params})
        res = self.h.run("nested", {"inner": {}})
        self.assertEqual((res.output, res.status, res.details), ("NestedParams(inner=Inner(k=3))", None, ""))
        self.assertEqual(self.h.check_params("nested", {"inner": {}}), [])

    def test_cancel(self):
        call = self.h.call("wait")
        self.assertTrue(self.started.wait(10))
        self.assertTrue(call.cancel("timed out after 10s"))
        res = call.result(10)
        self.assertEqual(res.error, "cancelled: timed out after 10s")
        self.assertEqual(res.logs[0].attrs, {"cancelled": True, "reason": "timed out after 10s", "callbacks": ["timed out after 10s"], "remaining": None})
        self.assertFalse(self.h._stub.Cancel(pacer_sdk._server.pb.CancelRequest(run_id=call.run_id), timeout=5).found)

    def test_timeout(self):
        t0 = time.monotonic()
        res = self.h.run("wait", timeout=0.3)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(res.error, "cancelled: timed out after 300ms")
        self.assertEqual(res.logs[0].attrs["remaining"], 0.0)

    def test_cancel_that_overtakes_its_run(self):
        # The runner sends Cancel when the attempt's context ends; it can
        # arrive before the Run itself.
        found = self.h._stub.Cancel(pacer_sdk._server.pb.CancelRequest(run_id="early", reason="replaced"), timeout=5).found
        self.assertFalse(found)
        res = self.h.run("wait", info=RunInfo(run_id="early"))
        self.assertEqual(res.error, "cancelled: replaced")

    def test_absurd_timeout_means_none(self):
        # Duration's largest value, far past what a thread can wait.
        req = pacer_sdk._server.pb.RunRequest(task="returns")
        req.params.update({"kind": "none"})
        req.timeout.seconds = 315576000000
        events = list(self.h._stub.Run(req, timeout=30))
        self.assertEqual((events[-1].WhichOneof("event"), events[-1].result.error), ("result", ""))

    def test_early_cancels_are_bounded(self):
        servicer = pacer_sdk._server.TaskPluginServicer(make_plugin())
        n = pacer_sdk._server.MAX_TOMBSTONES + 50
        for i in range(n):
            servicer.Cancel(pacer_sdk._server.pb.CancelRequest(run_id=f"r{i}"), None)
        self.assertEqual(len(servicer._tombstones), pacer_sdk._server.MAX_TOMBSTONES)
        self.assertNotIn("r0", servicer._tombstones)
        self.assertIn(f"r{n - 1}", servicer._tombstones)

    def test_hang_up_cancels_the_task(self):
        call = self.h.call("wait")
        self.assertTrue(self.started.wait(10))
        call.hang_up()
        res = call.result(10)
        self.assertEqual(res.status, grpc.StatusCode.CANCELLED)
        wait_for(lambda: self.h._in_process[0].runs() == 0, 10, "the run to end")

    def test_concurrent_runs_keep_their_own_identity(self):
        calls = [self.h.call("gated", info=RunInfo(run_id=f"run-{i}")) for i in range(8)]
        wait_for(lambda: self.h._in_process[0].runs() == 8, 10, "eight runs in flight")
        self.gate.set()
        for i, c in enumerate(calls):
            res = c.result(10)
            self.assertEqual(res.output, f"run-{i}")
            self.assertEqual([(s.name, s.trace_id) for s in res.spans], [("gated", res.trace_id)])

    def test_close_cancels_runs_in_flight(self):
        call = self.h.call("wait")
        self.assertTrue(self.started.wait(10))
        self.h.close()
        res = call.result(10)
        self.assertFalse(res.ok)
        # The task was cancelled (its thread is gone: TestCase checks), by
        # whichever the plugin noticed first: the closed connection or the stop.
        self.assertEqual(len(self.reasons), 1)
        self.assertIn(self.reasons[0], ("the runner ended the call", "plugin stopping: the test ended"))


class LogHandlerThreadsTest(TestCase):
    def test_a_record_is_the_runs_in_the_runs_context_only(self):
        # A thread in a copy of the task's context works for the run; a
        # plain thread, or one still logging after the run, for none: its
        # record goes to stderr (the runner logs it as the plugin's), not
        # lost and not put in some run's log.
        log = logging.getLogger("pacer-test-threads")
        level = log.level
        log.propagate = False
        log.setLevel(logging.INFO)
        handler = pacer_sdk.LogHandler()
        log.addHandler(handler)
        self.addCleanup(log.removeHandler, handler)
        self.addCleanup(setattr, log, "propagate", True)
        self.addCleanup(log.setLevel, level)
        release, late = threading.Event(), []
        plugin = pacer_sdk.Plugin("threads", version="1")

        @plugin.task()
        def work(ctx):
            def say(where):
                log.info("from %s", where)

            for t in (
                threading.Thread(target=say, args=("a plain thread",)),
                threading.Thread(target=contextvars.copy_context().run, args=(say, "a thread in the task's context")),
            ):
                t.start()
                t.join()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(contextvars.copy_context().run, say, "a pool in the task's context").result()

            def after_the_run():
                release.wait(30)
                say("a thread after the run")

            late.append(threading.Thread(target=contextvars.copy_context().run, args=(after_the_run,)))
            late[0].start()
            return "done"

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), Harness.serve(plugin) as h:
            res = h.run("work")
            release.set()
            late[0].join(30)
        self.assertTrue(res.ok, res)
        self.assertEqual([log.message for log in res.logs], ["from a thread in the task's context", "from a pool in the task's context"])
        self.assertEqual([line for line in stderr.getvalue().splitlines() if line.startswith("from ")], ["from a plain thread", "from a thread after the run"])


class PluginProblemsTest(TestCase):
    def test_refuses_an_empty_plugin(self):
        with self.assertRaises(ValueError):
            Harness.serve(pacer_sdk.Plugin("empty"))
        self.assertEqual(pacer_sdk.Plugin("").problems(), ["Plugin.name is empty", "the plugin has no tasks: offer at least one"])
