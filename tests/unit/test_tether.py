"""The tether (adapters/vllm/tether.py) with real processes and real signals: a front end that starts an
"engine" process which calls ``tether()`` as vLLM's engine core does through the plugin, then is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapters.vllm.tether import GRACE_S

ROOT = Path(__file__).resolve().parents[2]

#: the engine: optionally ignores SIGTERM (a shutdown that hangs), starts a worker, tethers, says its PIDs
_ENGINE = textwrap.dedent("""
    import signal, subprocess, sys, time
    from adapters.vllm.tether import tether
    if {hangs}:
        signal.signal(signal.SIGTERM, lambda *_: None)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tether()
    print("ready", worker.pid, flush=True)
    time.sleep(60)
""")
#: the front end: names itself (or PID 1) as the tether, starts the engine, prints the engine's and worker's PIDs
_FRONT = textwrap.dedent("""
    import os, subprocess, sys
    run = os.path.join({temp!r}, f"guard-run-{{os.getpid()}}-test")  # the front end's run folder
    os.mkdir(run)
    env = dict(os.environ, GUARD_TETHER_PID=str(os.getpid() if {tethered} else 1), GUARD_RUN_FOLDER=run)
    child = subprocess.Popen([sys.executable, "-c", {engine!r}], env=env, stdout=subprocess.PIPE, text=True)
    ready, worker = child.stdout.readline().split()
    assert ready == "ready"
    print(child.pid, worker, flush=True)
    child.wait()
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _kill_front(tethered: bool, hangs: bool, temp: Path) -> tuple[int, int, float]:
    """Start front end -> engine -> worker, SIGKILL the front end: (engine PID, worker PID, monotonic kill time).
    The front end makes its run folder in ``temp``."""
    front = _FRONT.format(tethered=tethered, engine=_ENGINE.format(hangs=hangs), temp=str(temp))
    with subprocess.Popen([sys.executable, "-c", front], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT))) as process:
        engine, worker = map(int, process.stdout.readline().split())  # type: ignore[union-attr]
        process.kill()
    return engine, worker, time.monotonic()


def _gone_within(pids: tuple[int, ...], seconds: float) -> float | None:
    """Seconds until every one of ``pids`` has ended, or None if some still runs after ``seconds``."""
    start = time.monotonic()
    while any(_alive(pid) for pid in pids):
        if time.monotonic() - start > seconds:
            return None
        time.sleep(0.05)
    return time.monotonic() - start


def _reap(*pids: int) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("tethered", [True, False])
def test_a_tethered_engine_process_ends_when_its_front_end_is_sigkilled_and_only_then(tethered, tmp_path):
    engine, worker, _ = _kill_front(tethered, hangs=False, temp=tmp_path)
    try:
        took = _gone_within((engine,), 5)
        assert (took is not None) is tethered
    finally:
        _reap(engine, worker)


def test_an_engine_whose_shutdown_hangs_is_sigkilled_with_its_workers_after_the_grace(tmp_path):
    engine, worker, killed = _kill_front(True, hangs=True, temp=tmp_path)  # it ignores the kernel's SIGTERM
    try:
        assert _gone_within((engine, worker), GRACE_S - 1) is None  # vLLM's own shutdown gets the grace
        assert list(tmp_path.iterdir()) == []  # the front end's run folder went at once
        assert _gone_within((engine, worker), 4) is not None
        assert time.monotonic() - killed < GRACE_S + 4
    finally:
        _reap(engine, worker)
