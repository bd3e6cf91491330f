"""The leash: a tiny supervisor process that ties vLLM's whole process tree to ``guard serve``'s life.

``guard serve`` (and ``guard proxy``) start this file as a script (``python -I leash.py PARENT
GRACE -- COMMAND...``, see :func:`command`) in a new session; the leash starts ``COMMAND`` (vLLM's
OpenAI server) as its child in its own process group, which the engine core and workers vLLM
spawns inherit. Cross-process contract:

- **SIGTERM** (or SIGINT) from the parent: forwarded to ``COMMAND``, which gets ``GRACE`` seconds
  to exit before it is SIGKILLed; then the rest of the group is stopped (below) and the leash
  exits with the child's status.
- **Parent death**, also by SIGKILL: the leash has asked the kernel for SIGHUP when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``) and then stops ``COMMAND`` as on SIGTERM. The kernel sends that
  signal when the *thread* that forked the leash exits, so the parent must start it from its main
  thread. A parent that died before the signal was armed is caught by comparing ``getppid()`` with
  ``PARENT`` afterwards (nothing is started then).
- **Child death**: when ``COMMAND`` exits on its own, the leash writes one line to stderr, stops the
  rest of the group (engine core, workers) and exits with the child's status (a child killed by
  signal N ends the leash by signal N too).
- **The rest of the group** gets SIGTERM; after ``_REST_GRACE`` seconds those that hear SIGTERM get
  SIGKILL, and those that ignore it (Python's resource tracker, which then removes the shared
  memory in /dev/shm that a killed vLLM server leaves behind) get ``_REST_GRACE`` seconds more to
  end on their own before they get SIGKILL too; a SIGKILL of the whole group at once would leak
  that memory. Orphans are adopted (``PR_SET_CHILD_SUBREAPER``) and reaped here.

Linux only (prctl, /proc); standard library only, and run with ``-I`` so that it starts in tens
of milliseconds without importing the ``adapters.http`` package.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

__all__ = ["children", "command", "main"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PARENT_GONE = signal.SIGHUP
_STOPS = (signal.SIGTERM, signal.SIGINT, _PARENT_GONE)
_REST_GRACE = 1.0  # seconds for the rest of the group after SIGTERM (a vLLM server that exited cleanly stopped it)
_KILL_SECONDS = 5.0  # to wait for SIGKILLed processes to vanish


def command(argv: list[str], grace: float, parent: int | None = None) -> list[str]:
    """The command line that runs ``argv`` on a leash.

    Start it from the parent's main thread, in a new session (``start_new_session=True``).

    Args:
        argv: the command to supervise, e.g. vLLM's OpenAI server.
        grace: seconds ``argv`` may take to exit after SIGTERM before it is SIGKILLed.
        parent: the pid whose death stops ``argv`` and its process group (default: this process).

    Example:
        >>> command(["sleep", "60"], 2.0, parent=1)[-4:]
        ['2.0', '--', 'sleep', '60']
    """
    return [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid() if parent is None else parent),
            str(grace), "--", *argv]


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (empty when it has none or is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(p) for p in listing.read().split()]
    except OSError:
        return []


class _Stop(Exception):
    """The parent asked the leash to stop (SIGTERM, SIGINT) or died (SIGHUP); ``args[0]`` is the signal."""


class _Stops:
    """The handler of the stop signals: the first one interrupts the leash's wait by raising :class:`_Stop`; later
    ones, and every one once the leash is ending, do nothing. The parent-death signal comes once for every thread
    of the dying parent the leash is passed to on its way to PID 1, so it may come several times."""

    def __init__(self) -> None:
        self.ending = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.ending:
            self.ending = True
            raise _Stop(signum)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _members(group: int) -> list[int]:
    """The live processes of process group ``group`` (zombies left out), read from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()  # the name in parentheses may hold spaces
        except OSError:  # exited while we looked
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(name))
    return found


def _reap() -> None:
    """Collect every exited child (the orphans the leash adopts as subreaper among them)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _rest() -> list[int]:
    """The other live processes of this process group, the exited children among them reaped."""
    _reap()
    return [pid for pid in _members(os.getpgrp()) if pid != os.getpid()]


def _hears_sigterm(pid: int) -> bool:
    """Whether ``pid`` does not ignore SIGTERM (its ``SigIgn`` mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            ignored = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    except (OSError, StopIteration):
        return True
    return not ignored >> (signal.SIGTERM - 1) & 1


def _signal_rest(signum: int, seconds: float, only: Callable[[int], bool] = lambda pid: True) -> bool:
    """Send ``signum`` to the rest of the group (those ``only`` accepts); whether it is empty within ``seconds``."""
    for pid in filter(only, _rest()):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + seconds
    while _rest():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sweep() -> None:
    """Stop the rest of the group: SIGTERM, SIGKILL to those that hear SIGTERM, SIGKILL to all."""
    if not _signal_rest(signal.SIGTERM, _REST_GRACE) and not _signal_rest(signal.SIGKILL, _REST_GRACE, _hears_sigterm):
        _signal_rest(signal.SIGKILL, _KILL_SECONDS)


def _describe(status: int) -> str:
    return f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"


def _exit_like(status: int) -> NoReturn:
    """Exit as the child did: by the same signal, or with the same status."""
    if status < 0:
        if -status != signal.SIGKILL:  # whose action cannot be changed
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status  # a signal whose default action does not end the process
    os._exit(status)


def _finish(child: subprocess.Popen[bytes] | None, grace: float) -> int:
    """Stop ``child``: SIGTERM, then SIGKILL after ``grace`` seconds; its status."""
    if child is None:  # stopped before the child was started (or while it was)
        return 0
    child.send_signal(signal.SIGTERM)
    try:
        return child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def main(argv: list[str]) -> NoReturn:
    """Run the leash: ``argv`` is ``[PARENT, GRACE, "--", COMMAND...]``."""
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(f"leash.py got {argv!r}; expected PARENT_PID GRACE_SECONDS -- COMMAND... (build it with command())")
    parent, grace, _, *target = argv
    if os.getpgrp() != os.getpid():  # a group of its own, whatever the parent did
        os.setsid()
    stops = _Stops()
    for stop in _STOPS:
        signal.signal(stop, stops)
    child: subprocess.Popen[bytes] | None = None
    try:
        _prctl(_PR_SET_PDEATHSIG, _PARENT_GONE)
        if os.getppid() != int(parent):  # the parent died before the signal was armed
            stops.ending = True
            raise _Stop(_PARENT_GONE)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphaned engine processes are reparented here, not to PID 1
        child = subprocess.Popen(target)
        status = child.wait()
        stops.ending = True  # a stop asked from here on is under way already
        print(f"guard: the vLLM server (pid {child.pid}) {_describe(status)}; stopping its engine processes",
              file=sys.stderr, flush=True)
    except _Stop as stop:
        if stop.args[0] == _PARENT_GONE:
            print(f"guard: the server (pid {parent}) is gone; stopping the vLLM server and its engine processes",
                  file=sys.stderr, flush=True)
        status = _finish(child, float(grace))
    _sweep()
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
