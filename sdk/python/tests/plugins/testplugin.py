#!/usr/bin/python3
"""A plugin for the SDK's own tests: each task behaves in one specific way.

    echo    returns params["message"]; logs it
    noop    does nothing (for the benchmark)
    sleep   waits params["seconds"], honouring cancellation
    hang    sleeps params["seconds"], ignoring cancellation
    noise   writes to stdout every way a task can: print(), sys.stdout,
            os.write(1, ...), a child process; then succeeds
    crash   exits the process mid-run
    info    returns the run's identity as the task sees it
    getenv  returns os.environ[params["name"]], "-" when unset
    tree    ctx.run of a shell script that starts a child, a setsid grandchild
            and a double-forked daemon (each writes its pid to params["dir"]/pids,
            then "end WHO" to .../effects after params["hold"] seconds), then
            exits with params["exit"] at once (mode "exit"), or sleeps
            params["hold"] first (mode "wait"; "deaf": ignoring SIGTERM, so are
            the processes it starts after that); ctx.run's grace is
            params["grace"]; returns how it ended (and data["reason"]: why the
            run was cancelled, if it was); ProcessesAlive is caught
    command ctx.run of params["args"] (params["shell"], ["input"],
            ["max_output"], ["env"]); returns how it ended and the lines seen
    plain   subprocess.run of `exit params["exit"]` beside a ctx.run: its exit
            status must survive
    spawn   runs params["args"] once, through ctx.run or (params["plain"])
            subprocess.run, for the benchmark
    dumpable
            returns prctl(PR_GET_DUMPABLE) of the plugin process and of a
            child process it starts (Linux)
"""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", ".."))

import pacer_sdk  # noqa: E402

plugin = pacer_sdk.Plugin("testplugin", version="test")


@plugin.task()
def echo(ctx, params):
    """Return the message."""
    ctx.log.info("echo", message=params.get("message", ""))
    return params.get("message", "")


@plugin.task()
def getenv(ctx, params):
    """Return a variable of the process's environment."""
    return os.environ.get(params["name"], "-")


@plugin.task()
def noop(ctx):
    """Nothing."""


@plugin.task()
def sleep(ctx, params):
    """Wait, honouring cancellation."""
    ctx.report_progress(0, "sleeping")
    if ctx.wait(float(params.get("seconds", 3600))):
        ctx.log.info("interrupted", reason=ctx.cancel_reason)
        ctx.check()
    return "slept"


@plugin.task()
def hang(ctx, params):
    """Sleep, ignoring cancellation."""
    time.sleep(float(params.get("seconds", 3600)))
    return "hung"


@plugin.task()
def gil(ctx, params):
    """Create params["started"], sleep inside one C call that keeps the GIL
    (no signal handler or other thread of the plugin runs meanwhile), then
    write params["file"]."""
    import ctypes

    open(params["started"], "w").close()
    ctypes.PyDLL(None).sleep(int(params.get("seconds", 30)))
    with open(params["file"], "a") as f:
        f.write(f"after the call, ppid {os.getppid()}\n")
    return "held"


@plugin.task()
def noise(ctx, params):
    """Write to stdout every way a task can."""
    print("noise: print")
    sys.stdout.write("noise: sys.stdout\n")
    os.write(1, b"noise: fd 1\n")
    subprocess.run(["sh", "-c", "echo 'noise: child'"], check=True)
    print("noise: stderr", file=sys.stderr)
    return "noisy"


@plugin.task()
def crash(ctx, params):
    """Exit mid-run."""
    os._exit(3)


@plugin.task()
def info(ctx, params):
    """The run's identity."""
    i = ctx.info
    return pacer_sdk.Result(
        output=i.correlation_id,
        data={"job": i.job_id, "run": i.run_id, "attempt": i.attempt, "node": i.node, "token": i.fencing_token, "trace": i.trace_id, "pid": os.getpid()},
    )


TREE = """
F=$1
echo $$ >> $F/pids
sh -c 'echo $$ >> '$F'/pids; sleep '$2'; echo "end child" >> '$F'/effects' &
setsid sh -c 'echo $$ >> '$F'/pids; sleep '$2'; echo "end grandchild" >> '$F'/effects' &
(setsid sh -c 'echo $$ >> '$F'/pids; sleep '$2'; echo "end daemon" >> '$F'/effects' &)
while [ $(wc -l < $F/pids) -lt 4 ]; do sleep 0.01; done
echo started
if [ "$3" = wait ]; then sleep $2; echo "end command" >> $F/effects; fi
if [ "$3" = deaf ]; then trap '' TERM; sleep $2; echo "end command" >> $F/effects; fi
exit $4
"""


def _completed(res, **more):
    return pacer_sdk.Result(
        output=res.output,
        data=dict(
            returncode=res.returncode,
            state=res.state,
            stopped=res.stopped,
            leftovers=res.leftovers,
            confirmed=res.confirmed,
            truncated=res.truncated,
            **more,
        ),
    )


@plugin.task()
def tree(ctx, params):
    """A command that leaves processes behind, or waits for them."""
    try:
        res = ctx.run(
            ["/bin/sh", "-c", TREE, "tree", params["dir"], str(params.get("hold", 30)), params.get("mode", "exit"), str(int(params.get("exit", 0)))],
            kill_timeout=float(params.get("kill_timeout", 5)),
            grace=float(params.get("grace", 2)),
            on_line=lambda line: ctx.log.info(line, stream="output"),
        )
    except pacer_sdk.ProcessesAlive as e:
        return pacer_sdk.Result(output=str(e), data={"alive": e.pids})
    return _completed(res, reason=ctx.cancel_reason)


@plugin.task()
def command(ctx, params):
    """Run a command through ctx.run."""
    lines = []
    args = params["args"]
    res = ctx.run(
        args,
        shell=bool(params.get("shell")),
        input=params.get("input"),
        max_output=int(params.get("max_output", 64 << 10)),
        env=params.get("env"),
        on_line=lines.append,
        check=bool(params.get("check")),
    )
    return _completed(res, lines=lines)


@plugin.task()
def plain(ctx, params):
    """A plain subprocess beside a ctx.run."""
    done = []
    t = threading.Thread(target=lambda: done.append(ctx.run(["sh", "-c", "sleep 0.2; exit 1"])))
    t.start()
    code = subprocess.run(["sh", "-c", f"sleep 0.1; exit {int(params.get('exit', 7))}"]).returncode
    t.join()
    return pacer_sdk.Result(data={"plain": code, "run": done[0].returncode})


@plugin.task()
def spawn(ctx, params):
    """Run a command once, through ctx.run or subprocess.run; data["cpu"] is
    the CPU seconds the plugin process and its children spent meanwhile."""
    t0 = _cpu()
    if params.get("plain"):
        code = subprocess.run(params["args"], stdin=subprocess.DEVNULL, capture_output=True).returncode
    else:
        code = ctx.run(params["args"]).returncode
    return pacer_sdk.Result(output=str(code), data={"cpu": _cpu() - t0})


def _cpu():
    """CPU seconds of this process, its reaped children, and ctx.run's
    spawner process with the keepers and commands it reaped."""
    total = sum(os.times()[:4])
    spawner = pacer_sdk._proctree._spawner._proc
    if spawner is not None:
        try:
            with open(f"/proc/{spawner.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


@plugin.task()
def dumpable(ctx, params):
    """The dumpable flag of this process and of a child."""
    import ctypes

    get = "import ctypes; print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    child = subprocess.run([sys.executable, "-c", get], check=True, capture_output=True, text=True).stdout.strip()
    return pacer_sdk.Result(output="", data={"plugin": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), "child": int(child)})


if __name__ == "__main__":
    pacer_sdk.serve(plugin)
