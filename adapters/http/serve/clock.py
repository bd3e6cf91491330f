"""How much a request's guard costs: the timing that wraps guard serve's per-request work from outside.

One :class:`RequestClock` per request. ``with clock.timed():`` around the guard's own work adds its
wall-clock time to ``busy`` and its CPU time on this thread to ``cpu``; ``with clock.waiting():``
around a wait for the engine's scores adds to ``busy`` and ``waited``. Both context managers are
made once per clock: nothing is allocated per use on the per-chunk path. The relay reports the
three totals in ``guard_latency_seconds``, ``guard_score_wait_seconds`` and ``guard_cpu_seconds``.

Reading a thread's CPU clock is a system call (about 0.5 µs warm, several µs on a loaded machine, twice per
block): a stream's blocks past its first :data:`EXACT_BLOCKS` are timed on CPU at random with probability
:data:`CPU_SAMPLE` and count ``1 / CPU_SAMPLE`` times, so ``cpu`` is an unbiased estimate that costs a quarter
of the calls on long streams (wall-clock time, read in user space, is exact on every block).
"""

from __future__ import annotations

import time
from random import random

__all__ = ["CPU_SAMPLE", "EXACT_BLOCKS", "RequestClock"]

#: blocks of a request timed on CPU exactly (a non-streamed request, a stream's first chunks)
EXACT_BLOCKS = 8
#: the share of later blocks timed on CPU (each counts 1 / CPU_SAMPLE times)
CPU_SAMPLE = 0.25


class RequestClock:
    """The guard's time on one request.

    Attributes:
        busy: seconds the guard itself spent on the request (its work and its waits).
        waited: the part of ``busy`` spent waiting for the engine's scores (the gate's row, the last scores).
        cpu: CPU time of the guard's own work on the event loop's thread (no waits, no preemption).

    Example:
        >>> clock = RequestClock()
        >>> with clock.timed():
        ...     pass
        >>> clock.busy >= 0 and clock.waited == 0
        True
    """

    __slots__ = ("busy", "waited", "cpu", "_timed", "_waiting")

    def __init__(self) -> None:
        self.busy = self.waited = self.cpu = 0.0
        self._timed = _Work(self)
        self._waiting = _Wait(self)

    def timed(self) -> _Work:
        """``with clock.timed():`` counts the enclosed work (not reentrant)."""
        return self._timed

    def waiting(self) -> _Wait:
        """``with clock.waiting():`` counts the enclosed wait for scores (not reentrant)."""
        return self._waiting


class _Work:
    __slots__ = ("_clock", "_wall", "_cpu", "_blocks", "_weight")

    def __init__(self, clock: RequestClock) -> None:
        self._clock = clock
        self._wall = self._cpu = 0.0
        self._blocks = 0
        self._weight = 0.0  #: how many blocks the current one's CPU time stands for (0: not timed on CPU)

    def __enter__(self) -> None:
        self._blocks += 1
        if self._blocks <= EXACT_BLOCKS:
            self._weight = 1.0
        else:
            self._weight = 1.0 / CPU_SAMPLE if random() < CPU_SAMPLE else 0.0
        self._cpu = time.thread_time() if self._weight else 0.0
        self._wall = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        clock = self._clock
        clock.busy += time.perf_counter() - self._wall
        if self._weight:
            clock.cpu += (time.thread_time() - self._cpu) * self._weight


class _Wait:
    __slots__ = ("_clock", "_wall")

    def __init__(self, clock: RequestClock) -> None:
        self._clock = clock
        self._wall = 0.0

    def __enter__(self) -> None:
        self._wall = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._wall
        self._clock.busy += elapsed
        self._clock.waited += elapsed
