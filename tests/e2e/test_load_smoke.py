"""The load test's code path on a small load: one guard serve, 24 concurrent streams over 3 prompts, one round.

Every answer must be complete and carry its own prompt's scores (closer to its solo reference than
to any other prompt's), and the server must be back to nothing in flight and no open score key.
The full benchmark (200 streams, several rounds, memory growth) is ``python -m benchmarks.load``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import load
from benchmarks.guard_server import guard_serve

CONCURRENCY, PROMPTS = 24, 3


@pytest.fixture(scope="module")
def record() -> Iterator[dict[str, Any]]:
    """One load-test round against a fresh guard serve (eager engine, fewer sequences per step than streams)."""
    with guard_serve(eager=True, max_num_seqs=8, max_model_len=512) as (url, pid):
        yield asyncio.run(load.run(url, pid=pid, concurrency=CONCURRENCY, rounds=1, prompts=PROMPTS, max_tokens=12,
                                   timeout_s=240.0))


def test_every_concurrent_stream_is_complete(record: dict[str, Any]) -> None:
    result = record["results"][0]
    assert result["requests"] == CONCURRENCY
    assert result["failures"]["incomplete"] == 0, result["failed_examples"]


def test_every_concurrent_stream_carries_its_own_prompts_scores(record: dict[str, Any]) -> None:
    result = record["results"][0]
    assert record["summary"]["tolerance_separates"], record["reference_separation"]
    assert result["failures"]["positions"] == 0 and result["failures"]["attribution"] == 0, result["failed_examples"]
    assert result["max_deviation"] <= record["tolerance"], result["failed_examples"]


def test_concurrent_streams_match_their_solo_references_in_text_and_verdicts(record: dict[str, Any]) -> None:
    failures = record["results"][0]["failures"]
    assert failures["text"] == 0 and failures["verdicts"] == 0, record["results"][0]["failed_examples"]


def test_the_server_holds_nothing_after_the_round(record: dict[str, Any]) -> None:
    server = record["results"][0]["server"]
    assert server["in_flight"] == 0 and server["open_keys"] == 0, server
    assert record["results"][0]["memory"]["descendants"] >= 1  # vLLM's server and engine were measured too
