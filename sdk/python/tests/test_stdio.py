"""The stdio stream's queue: a task that prints in a loop is held to the pace
the runner reads at, rather than spilling to stderr."""

import os
import threading
import time

from pacer_sdk import _goplugin
from pacer_sdk._pb import pacer_sdk_goplugin_pb2 as gp

from .util import TestCase


class _Context:
    """The grpc.ServicerContext of a stream the runner holds."""

    def __init__(self):
        self.active = True

    def is_active(self):
        return self.active

    def send_initial_metadata(self, md):
        pass


class StdioTest(TestCase):
    def test_a_print_loop_waits_for_the_runner_instead_of_spilling(self):
        # Attack 21, S4: writes that found the queue full went to the real
        # stderr, which the runner logs at DEBUG: 18,900 of 20,000 print()
        # lines were neither logged nor counted.
        r, w = os.pipe()
        os.set_blocking(r, False)
        stdio = _goplugin.Stdio(fallback_fd=w)
        ctx = _Context()
        got = []
        stream = stdio.stream(gp.Empty(), ctx)

        def runner():
            for item in stream:
                got.append(item.data)
                time.sleep(0.0005)  # the runner's pace, slower than the task's

        t = threading.Thread(target=runner, name="pacer-harness-stdio-reader")
        t.start()
        try:
            # The stream counts as attached once the runner holds it.
            deadline = time.monotonic() + 10
            while stdio._streams == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            n = 3000
            for i in range(n):
                stdio.write(gp.StdioData.STDOUT, b"line %d\n" % i)
        finally:
            stdio.close()
            t.join(30)
            ctx.active = False
        try:
            spilled = os.read(r, 1 << 20)
        except BlockingIOError:
            spilled = b""
        os.close(r)
        os.close(w)
        self.assertEqual(spilled, b"", "lines went to stderr instead of the stream")
        self.assertEqual(len(got), n)
        self.assertEqual(got[-1], b"line %d\n" % (n - 1))
