"""A private folder per guard process for its Unix sockets, and vLLM's: none left in the temp folder.

vLLM names its engine's ZMQ sockets ``ipc://<VLLM_RPC_BASE_PATH>/<uuid>`` (the temp folder by default) and
leaves their files there when it stops, even cleanly: measured, seven socket files per SIGTERM of a
``guard serve`` on vLLM 0.32, thousands on a machine that restarts servers all day. ``guard serve`` and
``guard proxy`` point ``VLLM_RPC_BASE_PATH`` at this process's run folder (:func:`use_for_vllm`; inherited by
the engine core and the proxy's reader), and the score channel binds its socket there too. The folder,
``<temp>/guard-run-<pid>-<random>`` (mode 0700), is removed when the process exits; the folder of a process
that was SIGKILLed is removed by its engine core (:mod:`adapters.vllm.tether`), or else by the next guard
process that makes one (its PID no longer runs).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

__all__ = ["run_folder", "socket_folder", "use_for_vllm", "remove_for", "PREFIX", "SOCKET_PATH_MAX", "RUN_FOLDER_ENV"]

#: run folders are named ``PREFIX<pid>-<random>`` in the temp folder
PREFIX = "guard-run-"
#: the longest path of a Unix socket (``sizeof(sockaddr_un.sun_path)`` on Linux, less the final NUL)
SOCKET_PATH_MAX = 107
_VLLM_NAME_LENGTH = 36  # a uuid4
#: environment variable naming the run folder of the guard process that started this one
RUN_FOLDER_ENV = "GUARD_RUN_FOLDER"

_lock = threading.Lock()
_folder: Path | None = None


def run_folder() -> Path:
    """This process's run folder: made on the first call (after sweeping dead processes' folders), removed at
    exit."""
    global _folder
    with _lock:
        if _folder is None:
            _sweep(Path(tempfile.gettempdir()))
            _folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
            atexit.register(_remove, _folder, os.getpid())
        return _folder


def socket_folder(name_length: int) -> Path:
    """Where to make a Unix socket whose file name has ``name_length`` characters: the run folder, or the temp
    folder itself where the run folder's longer path would pass the kernel's limit on a socket's path."""
    folder = run_folder()
    return folder if len(str(folder)) + 1 + name_length <= SOCKET_PATH_MAX else folder.parent


def use_for_vllm() -> None:
    """Have vLLM's sockets made in this process (and the processes it starts) go to :func:`run_folder`, unless
    ``VLLM_RPC_BASE_PATH`` was set by the user. Call before the engine starts."""
    if "VLLM_RPC_BASE_PATH" not in os.environ:
        os.environ["VLLM_RPC_BASE_PATH"] = str(socket_folder(_VLLM_NAME_LENGTH))
        os.environ[RUN_FOLDER_ENV] = str(run_folder())


def remove_for(pid: int) -> None:
    """In a process started by guard process ``pid`` (which has ended): remove that process's run folder, which
    :func:`use_for_vllm` named in :data:`RUN_FOLDER_ENV`. Sockets already bound or connected keep working."""
    folder = os.environ.get(RUN_FOLDER_ENV, "")
    if Path(folder).name.startswith(f"{PREFIX}{pid}-"):
        shutil.rmtree(folder, ignore_errors=True)


def _remove(folder: Path, owner: int) -> None:
    """At exit: remove ``folder`` if this is the process that made it (not a forked child of it)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(temp: Path) -> None:
    """Remove the run folders of processes that no longer run."""
    for folder in temp.glob(f"{PREFIX}*-*"):
        pid = folder.name.removeprefix(PREFIX).partition("-")[0]
        if pid.isdigit() and not _runs(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
