"""The leash (adapters/http/leash.py) with real processes: a `python` child that starts a `sleep` grandchild stands in
for vLLM's server and its engine core. Linux only, like the leash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from adapters.http import leash

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")

#: a server that starts an "engine core" (the grandchild); ``IGNORE`` makes it deaf to SIGTERM
_TREE = "import signal, subprocess, time\n{ignore}subprocess.Popen(['sleep', '300'])\ntime.sleep(300)\n"
_IGNORE = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"


def _tree(ignore_sigterm: bool = False) -> list[str]:
    return [sys.executable, "-c", _TREE.format(ignore=_IGNORE if ignore_sigterm else "")]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it holds no memory and no CPU)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (polled: the processes under test give no other signal)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _descendants(root: int) -> list[int]:
    """The server and its engine core under the leash ``root``, once both run."""
    def tree() -> list[int]:
        kids = leash.children(root)
        return kids + leash.children(kids[0]) if kids else []

    assert _within(30, lambda: len(tree()) == 2), f"the tree under {root} did not start: {tree()}"
    return tree()


@pytest.fixture
def start() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts a leash around the stand-in tree; whatever a failed test leaves running is killed after it."""
    started: list[subprocess.Popen[bytes]] = []

    def run(ignore_sigterm: bool = False, grace: float = 2.0,
            command: list[str] | None = None) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen(leash.command(command or _tree(ignore_sigterm), grace),
                                        start_new_session=True, stderr=subprocess.PIPE))
        return started[-1]

    yield run
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone: the test passed
            pass
        process.wait()
        process.stderr.close()


def test_killing_the_leashs_parent_with_sigkill_kills_the_whole_engine_tree():
    # the stand-in has threads, like guard serve: the kernel then sends the parent-death signal more than once
    stand_in = ("import importlib.util, subprocess, threading, time\n"  # loads leash.py alone, as guard serve's runs
                f"spec = importlib.util.spec_from_file_location('leash', {leash.__file__!r})\n"
                "leash = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(leash)\n"
                f"p = subprocess.Popen(leash.command({_tree()!r}, 2.0), start_new_session=True)\n"
                "for _ in range(4):\n    threading.Thread(target=time.sleep, args=(300,), daemon=True).start()\n"
                "print(p.pid, flush=True)\ntime.sleep(300)\n")
    # as a context manager: its pipes are closed however the test ends
    with subprocess.Popen([sys.executable, "-c", stand_in], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as parent:
        try:
            supervisor = int(parent.stdout.readline())
            tree = [supervisor, *_descendants(supervisor)]
            assert all(_alive(pid) for pid in tree)
        finally:
            parent.kill()
            parent.wait()
        assert _within(5, lambda: not any(_alive(pid) for pid in tree)), [pid for pid in tree if _alive(pid)]
        said = parent.stderr.read()  # the leash's stderr: the stand-in's; at its end once the whole tree is gone
    assert "is gone; stopping the vLLM server" in said and "Traceback" not in said, said


def test_when_the_server_dies_the_leash_kills_its_engine_and_ends_with_the_servers_status(start):
    supervisor = start()
    server, engine = _descendants(supervisor.pid)
    os.kill(server, signal.SIGKILL)
    assert supervisor.wait(timeout=10) == -signal.SIGKILL
    assert not _alive(engine)
    assert f"the vLLM server (pid {server}) was killed by SIGKILL" in supervisor.stderr.read().decode()


def test_sigterm_is_passed_to_the_server_which_may_stop_at_once(start):
    supervisor = start(grace=10.0)
    server, engine = _descendants(supervisor.pid)
    started = time.monotonic()
    supervisor.terminate()
    assert supervisor.wait(timeout=10) == -signal.SIGTERM  # the server's own status: SIGTERM ended it
    assert time.monotonic() - started < 5.0  # well within the grace period
    assert not _alive(server) and not _alive(engine)
    assert supervisor.stderr.read() == b""  # a requested stop is no news


def test_a_server_deaf_to_sigterm_is_killed_with_its_engine_after_the_grace_period(start):
    supervisor = start(ignore_sigterm=True, grace=1.0)
    tree = _descendants(supervisor.pid)
    started = time.monotonic()
    supervisor.terminate()
    assert supervisor.wait(timeout=10) == -signal.SIGKILL
    assert 1.0 <= time.monotonic() - started < 5.0
    assert not any(_alive(pid) for pid in tree)


def test_a_process_deaf_to_sigterm_may_finish_its_clean_up_once_the_others_are_killed(tmp_path, start):
    """Python's resource tracker ignores SIGTERM and removes the shared memory of the processes it watched once the
    last of them is gone (end of file on its pipe): a stand-in shows it gets to do that."""
    cleaned = tmp_path / "cleaned"
    tracker = ("import os, signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
               f"open({str(tmp_path / 'tracker')!r}, 'w')\nwhile os.read(int(sys.argv[1]), 1):\n    pass\n"
               f"open({str(cleaned)!r}, 'w')\n")
    engine = (f"import signal, time\nsignal.signal(signal.SIGTERM, lambda *_: None)\n"  # hears SIGTERM, goes on
              f"open({str(tmp_path / 'engine')!r}, 'w')\ntime.sleep(300)\n")
    server = ("import os, subprocess, sys, time\nr, w = os.pipe()\n"
              f"subprocess.Popen([sys.executable, '-c', {tracker!r}, str(r)], pass_fds=(r,))\nos.close(r)\n"
              f"subprocess.Popen([sys.executable, '-c', {engine!r}], pass_fds=(w,))\ntime.sleep(300)\n")
    supervisor = start(command=[sys.executable, "-c", server])
    assert _within(30, lambda: (tmp_path / "tracker").exists() and (tmp_path / "engine").exists())
    os.kill(leash.children(supervisor.pid)[0], signal.SIGKILL)
    assert supervisor.wait(timeout=15) == -signal.SIGKILL
    assert cleaned.exists()


def test_more_stop_signals_during_a_stop_do_not_interrupt_it(tmp_path, start):
    """A dying multi-threaded parent sends the parent-death signal several times, an impatient one more SIGTERMs."""
    asked = tmp_path / "asked"
    server = (f"import signal, subprocess, time\nsignal.signal(signal.SIGTERM, lambda *_: open({str(asked)!r}, 'w'))\n"
              "subprocess.Popen(['sleep', '300'])\ntime.sleep(300)\n")  # notes the SIGTERM, does not stop
    supervisor = start(grace=1.0, command=[sys.executable, "-c", server])
    tree = _descendants(supervisor.pid)
    supervisor.terminate()
    assert _within(10, asked.exists)  # the leash is in its grace period now
    for stop in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        supervisor.send_signal(stop)
    assert supervisor.wait(timeout=10) == -signal.SIGKILL  # the server, killed after its grace period
    assert not any(_alive(pid) for pid in tree)
    assert b"Traceback" not in supervisor.stderr.read()


def test_a_leash_whose_parent_is_already_gone_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    command = leash.command([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], 1.0, parent=os.getppid())
    supervisor = subprocess.Popen(command, start_new_session=True)  # its parent is this process, not `parent`
    assert supervisor.wait(timeout=10) == 0
    assert not marker.exists()


def test_the_engine_processes_left_get_sigterm_before_sigkill(tmp_path, start):
    """So that Python's resource tracker can remove the shared memory a killed vLLM server leaves behind."""
    ready, marker = tmp_path / "ready", tmp_path / "terminated"
    engine = (f"import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w'), "
              f"sys.exit(0)))\nopen({str(ready)!r}, 'w')\ntime.sleep(300)\n")
    server = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {engine!r}])\ntime.sleep(300)\n"
    supervisor = start(command=[sys.executable, "-c", server])
    server_pid, _ = _descendants(supervisor.pid)
    assert _within(30, ready.exists)  # its handler is set
    os.kill(server_pid, signal.SIGKILL)
    assert supervisor.wait(timeout=10) == -signal.SIGKILL
    assert marker.exists()


def test_the_leash_refuses_a_command_line_without_its_separator():
    done = subprocess.run([sys.executable, "-I", leash.__file__, "1", "2.0", "sleep", "1"], check=False,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "expected PARENT_PID GRACE_SECONDS -- COMMAND" in done.stderr
