"""RunStream (docs/plugin-protocol.md, section 13), in process over real gRPC
and TLS: runs on one stream mean what their own Run calls mean; cancels,
duplicate IDs, the stream's end and the runner's lease end them."""

import os
import queue
import threading
import time

import grpc

from pacer_sdk import _goplugin, _stream, _values
from pacer_sdk._pb import pacer_sdk_goplugin_pb2 as gp
from pacer_sdk.testing import Harness

from .test_run import make_plugin
from .util import TESTPLUGIN, Stream, TestCase, stream_run, wait_for


class Blocks:
    """What the block task reports: runs that started, and how they ended."""

    def __init__(self):
        self.started = queue.Queue()
        self.ended = queue.Queue()
        self.release = threading.Event()  # ends the stubborn task's cancel callback

    def wait_started(self, n):
        return sorted(self.started.get(timeout=10) for _ in range(n))


def stream_plugin(blocks):
    plugin = make_plugin()

    @plugin.task()
    def block(ctx):
        blocks.started.put(ctx.info.correlation_id)
        ctx.wait()
        blocks.ended.put((ctx.info.correlation_id, ctx.cancel_reason))
        ctx.check()
        return "not cancelled"

    @plugin.task()
    def stubborn(ctx):
        # A cancel callback that blocks, as terminating a child and waiting
        # for it does.
        ctx.on_cancel(lambda reason: blocks.release.wait(30))
        blocks.started.put(ctx.info.correlation_id)
        ctx.wait()
        return "cancelled"

    @plugin.task()
    def bigspan(ctx):
        with ctx.span("big", {"x": "y" * (5 << 20)}):
            pass
        with ctx.span("small"):
            pass
        return "ok"

    return plugin


def traceparent():
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def comparable(ev):
    """What an event says, without what differs from run to run (times, span
    IDs)."""
    kind = ev.WhichOneof("event")
    if kind == "log":
        return ("log", ev.log.level, ev.log.message, tuple((a.key, _values.from_value(a.value)) for a in ev.log.attrs if a.key != "traceback"))
    if kind == "span":
        return ("span", ev.span.name, ev.span.status_code, tuple(e.name for e in ev.span.events))
    if kind == "progress":
        return ("progress", ev.progress.percent, ev.progress.message)
    return ("result", ev.result.SerializeToString(deterministic=True))


class RunStreamTest(TestCase):
    def setUp(self):
        super().setUp()
        self.blocks = Blocks()
        self.h = Harness.serve(stream_plugin(self.blocks))
        self.addCleanup(self.h.close)
        self.s = self.open()

    def open(self):
        s = Stream(self.h)
        self.addCleanup(s.hang_up)
        first = s.recv()
        self.assertIsNotNone(first, s.error)
        self.assertEqual(len(first.events), 0, "the stream opens with an empty message")
        return s

    def test_describe_declares_run_stream(self):
        self.assertTrue(self.h._desc.capabilities.run_stream)

    def test_runs_mean_what_their_run_calls_mean(self):
        # Each task both ways: the same events (a log, progress, spans, the
        # result; truncated, sanitised), or the same status.
        cases = [
            ("greet", {"name": "Ada"}),
            ("greet", {"nme": "Ada", "extra": 1}),  # the params checker: InvalidArgument
            ("nope", {}),  # NotFound
            ("reject", {}),  # InvalidParams raised: InvalidArgument
            ("fail", {}),
            ("boom", {}),
            ("spans", {}),
            ("returns", {"kind": "big"}),
            ("returns", {"kind": "biglog"}),
            ("returns", {"kind": "notutf8"}),
            ("returns", {"kind": "baddata"}),
        ]
        self.s.send([stream_run(i + 1, task, params, traceparent=traceparent()) for i, (task, params) in enumerate(cases)])
        ends = self.s.ends(*range(1, len(cases) + 1))
        for i, (task, params) in enumerate(cases):
            with self.subTest(task=task, params=params):
                req = stream_run(0, task, params).request
                per_run, status = [], None
                try:
                    for ev in self.h._stub.Run(req, metadata=[("traceparent", traceparent())], timeout=30):
                        per_run.append(comparable(ev))
                except grpc.RpcError as e:
                    status = (e.code().value[0], e.details())
                on_stream = self.s.events[i + 1]
                self.assertEqual([e.id for e in on_stream], [i + 1] * len(on_stream))
                # Exactly one end, and it is last.
                self.assertEqual([e for e in on_stream if e.HasField("status") or e.event.HasField("result")], [ends[i + 1]])
                if status is not None:
                    self.assertEqual((ends[i + 1].status.code, ends[i + 1].status.message), status)
                    self.assertEqual(len(on_stream), 1)
                else:
                    self.assertEqual([comparable(e.event) for e in on_stream], per_run)
        self.assertEqual(ends[3].status.code, grpc.StatusCode.NOT_FOUND.value[0])
        self.assertEqual(ends[2].status.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertEqual(ends[1].event.result.output, "hello, Ada")

    def test_identity_and_trace_come_with_the_run(self):
        tp = traceparent()
        r = stream_run(1, "ident", traceparent=tp)
        r.request.context.fencing_token = 77
        r.request.context.shard = 3
        r.request.context.env["MY_VAR"] = "x"
        self.s.send([r, stream_run(2, "spans", traceparent=tp)])
        ends = self.s.ends(1, 2)
        data = _values.from_struct(ends[1].event.result.data)
        self.assertEqual(ends[1].event.result.output, "corr-1")
        self.assertEqual((data["trace"], data["token"], data["shard"], data["env"]), (tp.split("-")[1], 77.0, 3.0, {"MY_VAR": "x"}))
        spans = {e.event.span.name: e.event.span for e in self.s.events[2] if e.event.HasField("span")}
        self.assertEqual(spans["outer"].trace_id.hex(), tp.split("-")[1])
        self.assertEqual(spans["outer"].parent_span_id.hex(), tp.split("-")[2])

    def test_an_event_too_large_for_a_message_is_dropped(self):
        self.s.send([stream_run(1, "bigspan", traceparent=traceparent())])
        end = self.s.ends(1)[1]
        self.assertEqual(end.event.result.output, "ok")
        self.assertEqual([e.event.span.name for e in self.s.events[1] if e.event.HasField("span")], ["small"])

    def test_cancels(self):
        self.s.send([stream_run(1, "block"), stream_run(2, "block")])
        self.assertEqual(self.blocks.wait_started(2), ["corr-1", "corr-2"])
        self.s.send(cancels=[(1, "stop it"), (99, "no such run")])
        self.assertEqual(self.s.ends(1)[1].event.result.error, "cancelled: stop it")
        self.assertNotIn(2, self.s.events, "run 2 was not cancelled")
        self.s.send(cancels=[(2, "")])
        self.assertEqual(self.s.ends(2)[2].event.result.error, "cancelled: cancelled by the runner")
        self.s.close_send()
        self.assertIsNone(self.s.finish())

    def test_a_blocking_cancel_callback_holds_up_only_its_own_run(self):
        # Attack 26, P6: the callbacks ran on the stream's reader thread,
        # so one that blocked held up every other run's cancel (and start)
        # on the stream: run 2 never heard its cancel, and was killed as
        # hung at the runner's cancel_grace.
        self.addCleanup(self.blocks.release.set)
        self.s.send([stream_run(1, "stubborn"), stream_run(2, "block")])
        self.assertEqual(self.blocks.wait_started(2), ["corr-1", "corr-2"])
        self.s.send(cancels=[(1, "stop it")])
        self.s.send(cancels=[(2, "you too")], runs=[stream_run(3, "greet", {"name": "Ada"})])
        ends = self.s.ends(2, 3, timeout=10)
        self.assertEqual(ends[2].event.result.error, "cancelled: you too")
        self.assertEqual(ends[3].event.result.output, "hello, Ada")
        self.assertNotIn(1, ends, "run 1 ended while its callback blocked")
        self.blocks.release.set()
        self.assertEqual(self.s.ends(1)[1].event.result.output, "cancelled")
        self.s.close_send()
        self.assertIsNone(self.s.finish())

    def test_a_duplicate_id_is_invalid_argument(self):
        self.s.send([stream_run(1, "block")])
        self.blocks.wait_started(1)
        self.s.send([stream_run(1, "greet", {"name": "Ada"})])
        dup = self.s.ends(1)[1]
        self.assertEqual((dup.status.code, dup.status.message), (grpc.StatusCode.INVALID_ARGUMENT.value[0], "run stream: a run with this ID is running already"))
        # The first run 1 goes on, and ends when cancelled; its ID is free then.
        self.s.send(cancels=[(1, "stop it")])
        self.assertEqual(self.blocks.ended.get(timeout=10), ("corr-1", "stop it"))
        deadline = time.monotonic() + 30
        while self.s.events[1][-1].HasField("status"):
            self.assertIsNotNone(self.s.recv(deadline - time.monotonic()))
        self.assertEqual(self.s.events[1][-1].event.result.error, "cancelled: stop it")
        self.s.send([stream_run(1, "greet", {"name": "Bob"})])
        self.s.events.pop(1)
        self.assertEqual(self.s.ends(1)[1].event.result.output, "hello, Bob")

    def test_the_runners_close_cancels_every_run_and_the_stream_ends_after_them(self):
        self.s.send([stream_run(1, "block"), stream_run(2, "block")])
        self.blocks.wait_started(2)
        self.s.close_send()
        ends = self.s.ends(1, 2)
        for i in (1, 2):
            self.assertEqual(ends[i].event.result.error, "cancelled: the runner closed the run stream")
        self.assertIsNone(self.s.finish())
        self.assertEqual(self.h._in_process[0].runs(), 0, "the stream ended before its runs")

    def test_a_broken_call_cancels_every_run(self):
        self.s.send([stream_run(1, "block")])
        self.blocks.wait_started(1)
        self.s.hang_up()
        self.assertEqual(self.blocks.ended.get(timeout=10), ("corr-1", "the runner closed the run stream"))
        self.assertEqual(self.s.finish().code(), grpc.StatusCode.CANCELLED)

    def test_the_plugins_stop_cancels_the_streams_runs(self):
        self.s.send([stream_run(1, "block")])
        self.blocks.wait_started(1)
        self.h.close()
        run, reason = self.blocks.ended.get(timeout=10)
        self.assertIn(reason, ("plugin stopping: the test ended", "the runner closed the run stream"))
        self.s.finish()

    def test_an_expired_lease_cancels_every_run(self):
        # Run 1 has no bound yet; run 2 comes with a lease of 300 ms, renewed
        # once with 300 ms from then; then nothing (a frozen runner).
        self.s.send([stream_run(1, "block")])
        t0 = time.monotonic()
        self.s.send([stream_run(2, "block")], lease_ms=300)
        self.s.send(lease_ms=300)
        ends = self.s.ends(1, 2, timeout=10)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.3, "runs cancelled before the lease ran out")
        for i in (1, 2):
            err = ends[i].event.result.error
            self.assertIn("cancelled: the runner has not renewed its lease for ", err)
            self.assertTrue(err.endswith("(it may be frozen, and another replica may lead): the runs are cancelled so that a new leader's runs do not overlap them"), err)
        # A run that arrives after the lease passed, without a newer one,
        # starts cancelled; one that brings a renewal runs.
        self.s.send([stream_run(3, "block")])
        self.assertIn("has not renewed its lease", self.s.ends(3)[3].event.result.error)
        self.s.send([stream_run(4, "greet", {"name": "Ada"})], lease_ms=60_000)
        self.assertEqual(self.s.ends(4)[4].event.result.output, "hello, Ada")
        self.assertEqual(sorted(self.blocks.ended.get(timeout=10)[0] for _ in range(3)), ["corr-1", "corr-2", "corr-3"])


class LeaseBoundTest(TestCase):
    def test_the_bound_moves_with_each_lease(self):
        fired = queue.Queue()
        lb = _stream.LeaseBound(fired.put)
        self.addCleanup(lb.stop)
        self.assertIsNone(lb.expired(), "no lease yet: no bound")
        lb.renew(60_000)
        self.assertIsNone(lb.expired())
        lb.renew(0)  # at once
        self.assertIn("the runner has not renewed its lease for ", fired.get(timeout=10))
        self.assertIsNotNone(lb.expired())
        lb.renew(60_000)  # a newer lease moves the bound
        self.assertIsNone(lb.expired())
        lb.renew(-5)  # zero or less: at once
        fired.get(timeout=10)
        lb.renew(2**62)  # far away: no bound a thread cannot wait for
        self.assertIsNone(lb.expired())
        lb.stop()
        self.assertIsNone(lb.expired(), "a stopped bound cancels nothing")
        self.assertTrue(fired.empty())


class PluginProcessStreamTest(TestCase):
    def test_a_plugin_process_serves_run_stream(self):
        with Harness.start(TESTPLUGIN) as h:
            self.assertTrue(h._desc.capabilities.run_stream)
            s = Stream(h)
            self.assertEqual(len(s.recv().events), 0)
            s.send([stream_run(i, "echo", {"message": f"m{i}"}) for i in range(1, 9)])
            ends = s.ends(*range(1, 9))
            self.assertEqual([ends[i].event.result.output for i in range(1, 9)], [f"m{i}" for i in range(1, 9)])
            s.close_send()
            self.assertIsNone(s.finish())

    def test_a_stopping_plugin_ends_its_open_stream(self):
        # The runner stops the plugin with its stream open (go-plugin's
        # Shutdown): the plugin ends the stream itself once its runs have
        # returned, rather than leaving the server's stop to wait for it
        # and cut it (status Unavailable, "Cancelling all calls").
        with Harness.start(TESTPLUGIN) as h:
            s = Stream(h)
            s.recv()
            s.send([stream_run(1, "sleep", {"seconds": 3600})])
            while 1 not in s.events:  # under way: it reported progress
                self.assertIsNotNone(s.recv(), s.error)
            shutdown = h._channel.unary_unary(
                f"/{_goplugin.CONTROLLER_SERVICE}/Shutdown", request_serializer=gp.Empty.SerializeToString, response_deserializer=gp.Empty.FromString
            )
            shutdown(gp.Empty(), timeout=10)
            self.assertEqual(s.ends(1)[1].event.result.error, "cancelled: plugin stopping: the runner went away")
            self.assertIsNone(s.finish())
            wait_for(lambda: h.exit_code is not None, 10, "the plugin to exit")
            self.assertEqual(h.exit_code, 0)

