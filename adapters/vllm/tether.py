"""The tether: vLLM's engine core processes end with the ``guard serve`` process that started them.

``guard serve`` builds vLLM's app in its own process (:mod:`adapters.vllm.api_server`); vLLM's engine core runs
in processes its engine client starts. Were ``guard serve`` SIGKILLed, nothing in vLLM would stop them: they
would hold the model's memory and the CPU until someone found them. Two parts, both armed in the engine core
by :func:`tether` (the plugin calls it in every process vLLM starts; it acts only in a direct child of the
process named by :data:`TETHER_ENV`):

* the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``): vLLM's own SIGTERM handling aborts
  the in-flight requests, stops the workers and exits, usually within a second or two;
* a backstop: a daemon thread blocked on a pidfd of the front end (no polling) wakes when the front end has
  gone, gives vLLM's shutdown :data:`GRACE_S` seconds and then SIGKILLs the engine core's workers and the
  engine core itself, should that shutdown drag on: after its workers exit, vLLM's teardown can spend many
  seconds in the garbage collector (seen with py-spy in 2 of 8 SIGKILLs of guard serve, still collecting 4 s
  later; once in CI past 10 s). Nothing in the engine core needs saving. multiprocessing's resource tracker
  is left to exit by itself: it sees the engine core's end and frees the shared memory the engine core held.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time
from pathlib import Path

from adapters.run_folder import remove_for
from guard.errors import AdapterError

__all__ = ["tether", "TETHER_ENV", "GRACE_S"]

#: environment variable naming the front end's PID; an engine core started by it ends when it ends
TETHER_ENV = "GUARD_TETHER_PID"
#: seconds vLLM's own SIGTERM shutdown gets, once the front end has gone, before the backstop SIGKILLs
GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1
_RESOURCE_TRACKER = b"multiprocessing.resource_tracker"


def tether() -> None:
    """In an engine core process started by a guard front end: end when that front end ends.

    SIGTERM from the kernel at once (vLLM's clean shutdown), SIGKILL from a backstop thread :data:`GRACE_S`
    seconds later if the process still runs; a front end that died before this ran ends the process at once.
    Does nothing in any other process (vLLM's workers follow their engine core through vLLM's death pipe).

    Raises:
        AdapterError: the kernel refused the parent-death signal or a pidfd (a Linux before 5.3).
    """
    front = os.environ.get(TETHER_ENV)
    if not front or not front.isdigit() or os.getppid() != int(front):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise AdapterError(f"cannot tether the engine to guard serve (prctl errno {ctypes.get_errno()})")
    try:
        watched = os.pidfd_open(int(front))
    except OSError as error:  # ESRCH: gone already; ENOSYS: a kernel without pidfds
        if os.getppid() == int(front):
            raise AdapterError(f"cannot tether the engine to guard serve (pidfd_open: {error}); guard serve needs "
                               "Linux 5.3 or later") from error
        watched = -1
    if os.getppid() != int(front):  # the front end died before the signal was armed, or while the pidfd opened
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_backstop, args=(int(front), watched), name="guard-tether", daemon=True).start()


def _backstop(front: int, watched: int) -> None:
    """Wait for the front end (``watched``: its pidfd, -1 when it has gone already), remove its run folder (no
    other process needs its socket files now), then give the grace."""
    if watched >= 0:
        select.select([watched], [], [])  # readable once the process has exited
        os.close(watched)
    remove_for(front)
    time.sleep(GRACE_S)
    me = os.getpid()
    for pid in _descendants(me):
        try:
            if _RESOURCE_TRACKER not in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:  # it ended meanwhile
            pass
    os.kill(me, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """The PIDs under ``root`` (from /proc: the children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found
