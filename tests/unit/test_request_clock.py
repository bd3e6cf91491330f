"""The guard's own time per request: wall time on every block, CPU time exactly on a request's first blocks and
sampled (unbiased) on a long stream's later ones."""

from __future__ import annotations

import time
from unittest import mock

from adapters.http.serve import clock as clock_module
from adapters.http.serve.clock import CPU_SAMPLE, EXACT_BLOCKS, RequestClock

_cpu_now = time.thread_time  # not the patched one: only the clock's own reads are counted


def _burn(seconds: float) -> None:
    end = _cpu_now() + seconds
    while _cpu_now() < end:
        pass


def test_a_short_requests_cpu_time_is_read_on_every_block() -> None:
    clock = RequestClock()
    with mock.patch.object(clock_module.time, "thread_time", wraps=time.thread_time) as reads:
        for _ in range(EXACT_BLOCKS):
            with clock.timed():
                pass
    assert reads.call_count == 2 * EXACT_BLOCKS and clock.cpu >= 0.0


def test_a_long_streams_sampled_cpu_time_estimates_its_whole_cpu_time_without_bias() -> None:
    clock, blocks = RequestClock(), 2000
    start = time.thread_time()
    with mock.patch.object(clock_module.time, "thread_time", wraps=time.thread_time) as reads:
        for _ in range(blocks):
            with clock.timed():
                _burn(50e-6)
    whole = time.thread_time() - start
    # each block does the same work: the estimate is the truth within sampling error (one standard error ~4 %)
    assert 0.8 * whole < clock.cpu < 1.2 * whole, (clock.cpu, whole)
    assert clock.busy >= clock.cpu * 0.5  # wall time is read on every block
    reads_per_block = (reads.call_count - 2 * EXACT_BLOCKS) / (blocks - EXACT_BLOCKS)
    assert abs(reads_per_block - 2 * CPU_SAMPLE) < 0.1  # the system call is made on a quarter of the blocks
