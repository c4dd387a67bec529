"""A plugin process as the runner sees it: handshake, AutoMTLS, the stdout
guard, and exiting on Shutdown, SIGTERM, a crash, or the runner's death."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from unittest import mock

import grpc
from cryptography import x509

from pacer_sdk import _mtls, _watchdog
from pacer_sdk._pb.pacer.plugin.v1 import plugin_pb2 as pb
from pacer_sdk._pb.pacer.plugin.v1 import plugin_pb2_grpc as pb_grpc
from pacer_sdk.testing import Harness, StartError, parse_handshake, runner_env

from .util import PYTHON, TESTPLUGIN, TestCase, alive, children, wait_for


class HandshakeTest(TestCase):
    def test_handshake_line(self):
        with Harness.start(TESTPLUGIN) as h:
            parts = h.handshake.split("|")
            self.assertEqual(parts[:3], ["1", "1", "unix"])
            self.assertEqual(parts[4], "grpc")
            self.assertTrue(os.path.exists(parts[3]), parts[3])
            self.assertEqual(os.stat(os.path.dirname(parts[3])).st_mode & 0o777, 0o700)
            cert = x509.load_pem_x509_certificate(_mtls.decode_cert(parts[5]))
            self.assertEqual(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName), ["localhost"])
            self.assertNotIn("=", parts[5])  # base64 without padding, as go-plugin's client decodes it
            self.assertEqual(h.name, "testplugin")
        self.assertEqual(h.exit_code, 0)
        self.assertFalse(os.path.exists(parts[3]), "the socket outlived the plugin")

    def test_the_runners_environment(self):
        # Attack 19, P6: start gives the process the runner's minimal
        # environment, not the test's; env is the whole of it (with the
        # handshake's variables), and runner_env builds one with more.
        with mock.patch.dict(os.environ, {"PACERT_DB_URL": "postgres://db.internal/app", "LC_TIME": "C"}):
            with Harness.start(TESTPLUGIN) as h:
                self.assertEqual(h.run("getenv", {"name": "PACERT_DB_URL"}).output, "-")
                self.assertEqual(h.run("getenv", {"name": "LC_TIME"}).output, "C")
                self.assertEqual(h.run("getenv", {"name": "PATH"}).output, os.environ["PATH"])
            with Harness.start(TESTPLUGIN, env={**runner_env(["PACERT_DB_*"]), "EXTRA": "1"}) as h:
                self.assertEqual(h.run("getenv", {"name": "PACERT_DB_URL"}).output, "postgres://db.internal/app")
                self.assertEqual(h.run("getenv", {"name": "EXTRA"}).output, "1")
            with Harness.start(TESTPLUGIN, env={"PATH": os.environ["PATH"]}) as h:
                self.assertEqual(h.run("getenv", {"name": "LC_TIME"}).output, "-")
                self.assertNotEqual(h.run("getenv", {"name": "PACER_PLUGIN_COOKIE"}).output, "-")

    def test_runner_env(self):
        env = {"PATH": "/bin", "LC_ALL": "C", "DB_URL": "x", "APP_A": "1", "SECRET": "s"}
        self.assertEqual(runner_env(environ=env), {"LC_ALL": "C", "PATH": "/bin"})
        self.assertEqual(runner_env(["APP_*", "DB_URL", "*"], environ=env), {"APP_A": "1", "DB_URL": "x", "LC_ALL": "C", "PATH": "/bin"})

    def test_socket_dir_from_the_environment(self):
        with tempfile.TemporaryDirectory() as d:
            with Harness.start(TESTPLUGIN, env={**os.environ, "PLUGIN_UNIX_SOCKET_DIR": d}) as h:
                self.assertTrue(h.handshake.split("|")[3].startswith(d + "/"), h.handshake)
                self.assertEqual(h.run("echo", {"message": "hi"}).output, "hi")

    def test_refuses_to_run_by_hand(self):
        env = {k: v for k, v in os.environ.items() if k != "PACER_PLUGIN_COOKIE"}
        p = subprocess.run([TESTPLUGIN], env=env, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertIn(b"This binary is a plugin", p.stderr)

    def test_parse_handshake_says_what_is_wrong(self):
        for line, want in [
            ("hello", "unrecognized handshake line"),
            ("2|1|unix|/s|grpc|" + "A" * 60, "core protocol version '2'"),
            ("1|2|unix|/s|grpc|" + "A" * 60, "app protocol version '2'"),
            ("1|1|unix|/s|netrpc|" + "A" * 60, "protocol 'netrpc', want grpc"),
            ("1|1|unix|/s|grpc|", "no certificate"),
        ]:
            with self.subTest(line), self.assertRaises(StartError) as cm:
                parse_handshake(line)
            self.assertIn(want, str(cm.exception))


class MTLSTest(TestCase):
    def test_only_the_runners_certificate_gets_in(self):
        with Harness.start(TESTPLUGIN) as h:
            _, address, server_pem = parse_handshake(h.handshake)
            stranger_cert, stranger_key, _ = _mtls.generate("stranger")
            for creds in (
                grpc.ssl_channel_credentials(root_certificates=server_pem, private_key=stranger_key, certificate_chain=stranger_cert),
                grpc.ssl_channel_credentials(root_certificates=server_pem),
            ):
                ch = grpc.secure_channel("unix:" + address, creds, options=[("grpc.ssl_target_name_override", "localhost")])
                with self.assertRaises(grpc.RpcError) as cm:
                    pb_grpc.TaskPluginStub(ch).Describe(pb.DescribeRequest(), timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
                ch.close()
            ch = grpc.insecure_channel("unix:" + address)
            with self.assertRaises(grpc.RpcError):
                pb_grpc.TaskPluginStub(ch).Describe(pb.DescribeRequest(), timeout=10)
            ch.close()
            self.assertTrue(h.healthy())


class StdoutTest(TestCase):
    def test_stray_output_never_reaches_the_handshake_pipe(self):
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("noise")
            self.assertEqual(res.output, "noisy")
            wait_for(lambda: "noise: sys.stdout" in h.stdout and "noise: child" in h.stderr and "noise: stderr" in h.stderr, 10, "the noise to arrive")
        self.assertEqual(h.stray_stdout, b"")
        # print() and sys.stdout through go-plugin's stdio stream (the runner
        # logs them as the plugin's stdout); fd 1 and child processes land
        # on stderr.
        self.assertIn("noise: print\n", h.stdout)
        self.assertIn("noise: fd 1\n", h.stderr)


@unittest.skipUnless(sys.platform.startswith("linux"), "PR_SET_DUMPABLE is Linux's")
class DumpableTest(TestCase):
    def test_plugin_is_not_dumpable_its_children_are(self):
        # Tasks run as the plugin's user: they must not read its memory or
        # environment through /proc; what it starts is unaffected.
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("dumpable")
            self.assertEqual(res.data, {"plugin": 0.0, "child": 1.0})


class StopTest(TestCase):
    def test_shutdown_exits_at_once(self):
        h = Harness.start(TESTPLUGIN)
        h.close()  # Shutdown, then a kill after 2 s, as go-plugin does
        self.assertEqual(h.exit_code, 0)  # it exited; a kill would show -9

    def test_sigterm_cancels_runs_then_exits(self):
        with Harness.start(TESTPLUGIN) as h:
            call = h.call("sleep")
            wait_for(lambda: call._outcome.progress, 10, "the task to start")
            os.kill(h.pid, signal.SIGTERM)
            res = call.result(10)
            self.assertEqual(res.error, "cancelled: plugin stopping: the runner went away")
            self.assertEqual(res.logs[-1].attrs, {"reason": "plugin stopping: the runner went away"})
            wait_for(lambda: h.exit_code is not None, 10, "the plugin to exit")
            self.assertEqual(h.exit_code, 0)

    def test_a_task_that_ignores_cancellation_does_not_hold_the_exit(self):
        with Harness.start(TESTPLUGIN) as h:
            call = h.call("hang")
            wait_for(lambda: h._stub.Cancel(pb.CancelRequest(run_id=call.run_id), timeout=5).found, 10, "the run to start")
            t0 = time.monotonic()
            os.kill(h.pid, signal.SIGTERM)
            wait_for(lambda: h.exit_code is not None, 10, "the plugin to exit")
            self.assertGreaterEqual(time.monotonic() - t0, 2.5)  # it waited the drain grace (3 s) first
            self.assertEqual(h.exit_code, 0)

    def test_crash_ends_the_call(self):
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("crash")
            self.assertEqual(res.status, grpc.StatusCode.UNAVAILABLE, res)
            wait_for(lambda: h.exit_code is not None, 10, "the plugin to exit")
            self.assertEqual(h.exit_code, 3)

    def test_killed_when_the_runner_dies_while_a_task_holds_the_gil(self):
        # A task inside one long C call that keeps the GIL: neither the
        # plugin's SIGTERM handler nor its parent poll can run, so only the
        # watchdog process ends the plugin, before the call returns and the
        # task writes its side effect with no runner.
        with tempfile.TemporaryDirectory() as d:
            effect = os.path.join(d, "effect")
            runner = subprocess.Popen(
                [
                    PYTHON,
                    "-c",
                    textwrap.dedent(
                        """
                        import os, sys, threading, time
                        from pacer_sdk.testing import Harness
                        plugin, effect, started = sys.argv[1:4]
                        h = Harness.start(plugin)
                        threading.Thread(target=h.run, args=("gil", {"seconds": 60, "file": effect, "started": started}), daemon=True).start()
                        while not os.path.exists(started):
                            time.sleep(0.01)
                        print(h.pid, flush=True)
                        time.sleep(3600)
                        """
                    ),
                    TESTPLUGIN,
                    effect,
                    os.path.join(d, "started"),
                ],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(_watchdog.__file__))},
            )
            try:
                pid = int(runner.stdout.readline())
                self.assertTrue(alive(pid))
                runner.kill()
                runner.wait()
                wait_for(lambda: not alive(pid), 30, f"plugin {pid}, its task holding the GIL for 60 s, to be killed after its runner died")
                self.assertFalse(os.path.exists(effect), "the task ran on after its runner died")
            finally:
                if "pid" in locals() and alive(pid):
                    os.kill(pid, signal.SIGKILL)
                runner.kill()
                runner.wait()
                runner.stdout.close()

    def test_the_watchdog_dies_with_its_plugin(self):
        # The watchdog must never outlive the plugin it guards: a kill -9
        # of the plugin ends it too (its parent-death signal, or, when the
        # plugin dies before the watchdog has set that, its check of its
        # parent right after).
        with Harness.start(TESTPLUGIN) as h:
            watchdogs = [c for c in children(h.pid) if b"_watchdog.py" in open(f"/proc/{c}/cmdline", "rb").read()]
            self.assertEqual(len(watchdogs), 1, children(h.pid))
            self.assertEqual(h.run("echo", {"message": "still here"}).output, "still here")
            os.kill(h.pid, signal.SIGKILL)
            wait_for(lambda: not alive(watchdogs[0]), 10, f"watchdog {watchdogs[0]} to die with its plugin")

    def test_exits_when_the_runner_dies(self):
        # A stand-in runner starts the plugin (without Linux's parent-death
        # signal, so the plugin's own watch must notice), reports its pid and
        # is then killed with SIGKILL.
        runner = subprocess.Popen(
            [
                PYTHON,
                "-c",
                textwrap.dedent(
                    """
                    import os, subprocess, sys, time
                    env = dict(os.environ, PACER_PLUGIN_COOKIE="5c1a3f0e-pacer-task-plugin", PLUGIN_PROTOCOL_VERSIONS="1")
                    p = subprocess.Popen([sys.argv[1]], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                    p.stdout.readline()
                    print(p.pid, flush=True)
                    time.sleep(3600)
                    """
                ),
                TESTPLUGIN,
            ],
            stdout=subprocess.PIPE,
        )
        try:
            pid = int(runner.stdout.readline())
            self.assertTrue(alive(pid))
            runner.kill()
            runner.wait()
            wait_for(lambda: not alive(pid), 10, f"plugin {pid} to exit after its runner died")
        finally:
            runner.kill()
            runner.wait()
            runner.stdout.close()

