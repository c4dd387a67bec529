"""Context.run through a real plugin process: a command's whole process tree
(children, a setsid grandchild, a double-forked daemon) ends with it, when it
exits, when the run is cancelled or times out, when the plugin stops and when
its runner dies; what cannot be confirmed dead reaches the runner."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import grpc

from pacer_sdk import RunInfo, _values
from pacer_sdk.testing import Harness

from .util import PYTHON, TESTPLUGIN, Stream, TestCase, alive, stream_run, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class TreeTest(TestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="pacer-tree-")
        self.addCleanup(self._kill_leftovers)

    def _kill_leftovers(self):
        for pid in self.pids(0):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def pids(self, n=4, timeout=20):
        """The pids the tree wrote: the command, child, grandchild, daemon."""
        path = os.path.join(self.dir, "pids")

        def read():
            try:
                with open(path) as f:
                    return [int(x) for x in f.read().split()]
            except OSError:
                return []

        if n:
            wait_for(lambda: len(read()) >= n, timeout, "the tree to start")
        return read()

    def effects(self):
        try:
            with open(os.path.join(self.dir, "effects")) as f:
                return f.read().split("\n")[:-1]
        except OSError:
            return []

    def assert_tree_dead(self, pids):
        self.assertEqual([p for p in pids if alive(p)], [], "processes of the tree alive when the call returned")

    def assert_no_effects(self, hold):
        """Wait until the tree's processes would have written, then check they did not."""
        time.sleep(hold + 0.5)  # the side effects are due at hold: a wait for them, not a synchronisation
        self.assertEqual(self.effects(), [])

    def test_exit_status_wins_and_what_is_left_is_killed(self):
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("tree", {"dir": self.dir, "hold": 2, "exit": 3})
            pids = self.pids()
            self.assertTrue(res.ok, res)
            self.assertEqual(res.data["returncode"], 3)
            self.assertEqual(res.data["state"], "exit status 3")
            self.assertFalse(res.data["stopped"])
            self.assertTrue(res.data["confirmed"])
            # the child, grandchild and daemon (and their sleeps) were left
            self.assertGreaterEqual(len(res.data["leftovers"]), 3, res.data)
            self.assertIn("started", res.output)
            self.assertEqual(res.processes_left, "")
            self.assert_tree_dead(pids)
        self.assert_no_effects(2)

    def test_cancel_and_timeout_end_the_tree(self):
        with Harness.start(TESTPLUGIN) as h:
            for how in ("cancel", "timeout"):
                with self.subTest(how):
                    os.makedirs(self.dir, exist_ok=True)
                    for f in ("pids", "effects"):
                        if os.path.exists(os.path.join(self.dir, f)):
                            os.remove(os.path.join(self.dir, f))
                    call = h.call("tree", {"dir": self.dir, "hold": 3, "mode": "wait"}, timeout=2.0 if how == "timeout" else None)
                    pids = self.pids()
                    if how == "cancel":
                        self.assertTrue(call.cancel("stop it"))
                    res = call.result(30)
                    self.assertTrue(res.ok, res)
                    self.assertTrue(res.data["stopped"], res.data)
                    self.assertTrue(res.data["confirmed"], res.data)
                    self.assertEqual(res.data["returncode"], -signal.SIGTERM, res.data)  # sh ends on SIGTERM
                    self.assert_tree_dead(pids)
                    self.assert_no_effects(3)

    def test_a_lease_not_renewed_on_the_run_stream_ends_the_tree(self):
        # A runner frozen alone sent the run with its lease, then nothing:
        # the plugin cancels the run at the lease's deadline, and the tree
        # (the setsid grandchild and the daemon included) is dead when the
        # run's result arrives. The tree gets SIGKILL at once, not SIGTERM
        # and its grace (a minute here): a new leader may start the slot, and
        # a command that ignores SIGTERM ("deaf") must not overlap its run.
        # Before (attack 25, W5), "wait" ended on SIGTERM and "deaf" lived
        # out its grace.
        with Harness.start(TESTPLUGIN) as h:
            for mode in ("wait", "deaf"):
                with self.subTest(mode):
                    for f in ("pids", "effects"):
                        if os.path.exists(os.path.join(self.dir, f)):
                            os.remove(os.path.join(self.dir, f))
                    s = Stream(h)
                    self.assertEqual(len(s.recv().events), 0)
                    # A lease long enough for the whole tree to start on a
                    # busy machine, then a last renewal of one second.
                    s.send([stream_run(1, "tree", {"dir": self.dir, "hold": 60, "mode": mode, "grace": 60})], lease_ms=60000)
                    pids = self.pids()
                    t0 = time.monotonic()
                    s.send(lease_ms=1000)
                    end = s.ends(1, timeout=30)[1]
                    took = time.monotonic() - t0
                    res = end.event.result
                    data = _values.from_struct(res.data)
                    self.assertIn("the runner has not renewed its lease for ", data["reason"], res)
                    self.assertTrue(data["stopped"], data)
                    self.assertTrue(data["confirmed"], data)
                    self.assertEqual(data["returncode"], -signal.SIGKILL, data)
                    self.assert_tree_dead(pids)
                    self.assertGreaterEqual(took, 1.0, "the run ended before its lease did")
                    self.assertEqual(self.effects(), [])
                    s.close_send()
                    self.assertIsNone(s.finish())

    def test_plugin_stop_ends_the_tree(self):
        h = Harness.start(TESTPLUGIN)
        try:
            call = h.call("tree", {"dir": self.dir, "hold": 5, "mode": "wait"})
            pids = self.pids()
            os.kill(h.pid, signal.SIGTERM)
            res = call.result(30)
            self.assertTrue(res.ok, res)
            self.assertTrue(res.data["stopped"], res.data)
            wait_for(lambda: h.exit_code is not None, 10, "the plugin to exit")
            self.assertEqual(h.exit_code, 0)
            self.assert_tree_dead(pids)
        finally:
            h.close()
        self.assert_no_effects(5)

    def test_plugin_kill_ends_the_command(self):
        # The keeper and the command die with the plugin (parent-death
        # signals). The setsid grandchild and the daemon then belong to the
        # nearest subreaper above: the runner, which kills them (Go tests:
        # TestPythonPluginKilledWithATree); here, the test process kills them.
        with Harness.start(TESTPLUGIN) as h:
            call = h.call("tree", {"dir": self.dir, "hold": 30, "mode": "wait"})
            command = self.pids()[0]
            os.kill(h.pid, signal.SIGKILL)
            res = call.result(30)
            self.assertEqual(res.status, grpc.StatusCode.UNAVAILABLE, res)
            wait_for(lambda: not alive(command), 10, "the command to die with its plugin")

    def test_runner_death_ends_the_tree_at_once(self):
        # A stand-in runner starts the plugin (no parent-death signal: the
        # plugin's own watch notices), starts a run of the tree, and is
        # killed with SIGKILL. The plugin kills everything below it at once
        # (the tree ignores SIGTERM), then exits.
        runner = subprocess.Popen(
            [
                PYTHON,
                "-c",
                textwrap.dedent(
                    """
                    import sys, time
                    sys.path.insert(0, sys.argv[3])
                    from pacer_sdk.testing import Harness
                    h = Harness.start(sys.argv[1])
                    h.call("tree", {"dir": sys.argv[2], "hold": 5, "mode": "deaf", "grace": 30})
                    print(h.pid, flush=True)
                    time.sleep(3600)
                    """
                ),
                TESTPLUGIN,
                self.dir,
                os.path.join(HERE, ".."),
            ],
            stdout=subprocess.PIPE,
        )
        try:
            plugin = int(runner.stdout.readline())
            pids = self.pids()
            t0 = time.monotonic()
            runner.kill()
            runner.wait()
            wait_for(lambda: not any(alive(p) for p in pids + [plugin]), 10, "the tree and the plugin to die after the runner")
            took = time.monotonic() - t0
            # A stop lets runs end first (3 s, and this tree ignores SIGTERM);
            # the runner's death does not: the plugin notices within 0.25 s.
            self.assertLess(took, 2.5, "the tree must die at once, not after the runs' drain")
        finally:
            runner.kill()
            runner.wait()
            runner.stdout.close()
        self.assert_no_effects(5)

    def test_a_killed_keeper_or_spawner_leaves_nothing(self):
        # The processes between the plugin and the command can be killed
        # too: the plugin then kills what carries the tree's marker, fails
        # the run, and the next command gets a new spawner.
        with Harness.start(TESTPLUGIN) as h:
            for victim in ("keeper", "spawner"):
                with self.subTest(victim):
                    for f in ("pids", "effects"):
                        if os.path.exists(os.path.join(self.dir, f)):
                            os.remove(os.path.join(self.dir, f))
                    call = h.call("tree", {"dir": self.dir, "hold": 3, "mode": "wait"})
                    pids = self.pids()
                    keeper = _ppid(pids[0])
                    os.kill(keeper if victim == "keeper" else _ppid(keeper), signal.SIGKILL)
                    res = call.result(30)
                    self.assertIn("the process keeping the command's tree was killed", res.error or "", res)
                    self.assert_tree_dead(pids)
                    self.assert_no_effects(3)
            self.assertEqual(h.run("command", {"args": ["true"]}).data["returncode"], 0)

    def test_processes_not_confirmed_dead_reach_the_runner(self):
        # kill_timeout 0 leaves the killed processes no time to die: they
        # count as alive. The task catches ProcessesAlive; the result still
        # names them.
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("tree", {"dir": self.dir, "hold": 2, "kill_timeout": 0})
            self.assertTrue(res.data.get("alive"), res)
            self.assertIn("could not be confirmed dead", res.processes_left)
            self.assertIn(str(int(res.data["alive"][0])), res.processes_left)
            wait_for(lambda: not any(alive(p) for p in self.pids()), 10, "the killed processes to die")


class CommandTest(TestCase):
    def test_output_input_and_lines(self):
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("command", {"args": "cat; echo err >&2; printf 'x%.0s' $(seq 100)", "shell": True, "input": "in\n", "max_output": 10})
            self.assertTrue(res.ok, res)
            self.assertEqual(res.output, "in\nerr\nxxx")
            self.assertEqual(res.data["truncated"], 97)
            self.assertEqual(res.data["lines"], ["in", "err", "x" * 100])
            self.assertEqual(res.data["leftovers"], [])

    def test_environment(self):
        with Harness.start(TESTPLUGIN, env={**os.environ, "SECRET_OF_THE_PLUGIN": "x"}) as h:
            res = h.run("command", {"args": ["env"]}, info=RunInfo(run_id="run-7", env={"FROM_JOB": "yes"}))
            env = dict(line.split("=", 1) for line in res.data["lines"])
            self.assertEqual(env["PACER_RUN_ID"], "run-7")
            self.assertEqual(env["FROM_JOB"], "yes")
            self.assertIn("PACER_PROCESS_TREE", env)
            self.assertIn("PATH", env)
            for k in ("SECRET_OF_THE_PLUGIN", "PACER_PLUGIN_COOKIE", "PLUGIN_CLIENT_CERT"):
                self.assertNotIn(k, env)
            res = h.run("command", {"args": ["/usr/bin/env"], "env": {"ONLY": "1"}})
            env = dict(line.split("=", 1) for line in res.data["lines"])
            self.assertEqual(set(env), {"ONLY", "PACER_PROCESS_TREE"})

    def test_a_command_that_cannot_start(self):
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("command", {"args": ["no-such-program-pacer"]})
            self.assertIn("FileNotFoundError", res.error or "", res)
            res = h.run("command", {"args": [os.path.join(HERE, "__init__.py")]})  # not executable
            self.assertIn("PermissionError", res.error or "", res)
            self.assertIn("cannot start", res.error or "", res)

    def test_check(self):
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("command", {"args": "exit 4", "shell": True, "check": True})
            self.assertIn("exit status 4", res.error or "", res)

    def test_plain_subprocess_keeps_its_exit_status(self):
        # The plugin reaps nothing it did not start: a plain subprocess beside
        # ctx.run gets its own status (a reaper would have taken it: 0).
        with Harness.start(TESTPLUGIN) as h:
            res = h.run("plain", {"exit": 7})
            self.assertEqual(res.data, {"plain": 7, "run": 1}, res)
