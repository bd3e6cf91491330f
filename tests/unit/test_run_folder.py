"""The run folder (adapters/run_folder.py) with real processes: the score channel's socket and vLLM's go to a
private folder that is removed when the process exits, and a SIGKILLed process's folder is removed by the next."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.run_folder import PREFIX, RUN_FOLDER_ENV, SOCKET_PATH_MAX, remove_for

ROOT = Path(__file__).resolve().parents[2]

#: binds a score collector, says where its socket and vLLM's base path are, then exits (or is SIGKILLed)
_CHILD = textwrap.dedent("""
    import os, signal, sys
    from adapters.run_folder import use_for_vllm
    from adapters.score_channel import ScoreCollector, new_ipc_endpoint
    use_for_vllm()
    endpoint = new_ipc_endpoint()
    collector = ScoreCollector(endpoint)
    print(endpoint.removeprefix("ipc://"), os.environ["VLLM_RPC_BASE_PATH"], flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    collector.close()
""")


@pytest.fixture
def temp() -> Iterator[Path]:
    """A temp folder with a short path (pytest's own are too long for a socket's path once nested)."""
    folder = Path(tempfile.mkdtemp(prefix="run-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _child(temp: Path, how: str, **env: str) -> tuple[Path, str]:
    """Run the child with ``temp`` as its temp folder: (its score socket's path, its VLLM_RPC_BASE_PATH)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, how], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp), **env})
    assert done.stdout, done.stderr
    socket, base = done.stdout.split()
    return Path(socket), base


def test_a_guard_process_s_sockets_go_to_its_run_folder_which_is_gone_after_it_exits(temp):
    socket, base = _child(temp, "exit")
    assert socket.parent == Path(base)  # vLLM's sockets and the score channel's, in one folder
    assert socket.parent.parent == temp and socket.parent.name.startswith(PREFIX)
    assert not socket.parent.exists()
    assert list(temp.iterdir()) == []


def test_a_sigkilled_process_s_run_folder_is_removed_by_the_next_and_a_live_one_s_is_kept(temp):
    socket, _ = _child(temp, "kill")
    assert socket.exists()  # nothing ran at its exit
    live = temp / f"{PREFIX}{os.getpid()}-keep"  # this test's process runs
    live.mkdir()
    _child(temp, "exit")
    assert not socket.parent.exists()
    assert sorted(temp.iterdir()) == [live]


def test_a_vllm_base_path_the_user_set_is_kept(temp):
    mine = temp / "mine"
    _, base = _child(temp, "exit", VLLM_RPC_BASE_PATH=str(mine))
    assert base == str(mine)


def test_where_the_run_folder_s_path_would_be_too_long_for_a_socket_the_temp_folder_itself_is_used(temp):
    # vLLM's socket names are 36 characters; a temp folder that leaves room for them, not for the run folder too
    deep = temp / ("d" * (SOCKET_PATH_MAX - 37 - len(str(temp)) - 1))
    deep.mkdir()
    socket, base = _child(deep, "exit")
    assert base == str(deep) and socket.parent == deep
    assert len(str(deep / ("u" * 36))) <= SOCKET_PATH_MAX
    assert [p.name.startswith(PREFIX) for p in deep.iterdir()] == []  # the unused run folder went at exit


def test_an_engine_removes_only_the_run_folder_of_the_guard_process_that_started_it(tmp_path, monkeypatch):
    folder = tmp_path / f"{PREFIX}999-x"
    folder.mkdir()
    monkeypatch.setenv(RUN_FOLDER_ENV, str(folder))
    remove_for(99)
    assert folder.exists()
    remove_for(999)
    assert not folder.exists()
