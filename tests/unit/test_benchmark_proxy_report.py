"""The proxy benchmark's statistics and summary, on synthetic phases with known overheads."""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks.latency import (
    difference_ci,
    distribution,
    histogram_quantile,
    median_ci,
)
from benchmarks.proxy import GOAL_CHUNK_MS, GOAL_REQUEST_MS, workload
from benchmarks.proxy_report import summarise, summary_text

_BUCKETS_S = (5e-4, 1e-3, 2.5e-3, math.inf)


def test_histogram_quantile_interpolates_inside_the_bucket_and_reports_its_bound():
    buckets = {5e-4: 0, 1e-3: 1, 2.5e-3: 4, math.inf: 4}
    estimate, lower, upper = histogram_quantile(buckets, 0.5)
    assert estimate == pytest.approx(0.0015) and (lower, upper) == (1e-3, 2.5e-3)
    assert histogram_quantile(buckets, 0.25) == (pytest.approx(1e-3), 5e-4, 1e-3)
    assert histogram_quantile({1e-3: 0, math.inf: 2}, 0.5) == (1e-3, 1e-3, math.inf)
    assert histogram_quantile({math.inf: 0}, 0.5) is None


def test_bootstrap_intervals_cover_a_constant_shift_and_are_seeded():
    direct = [100.0 + (i * 37) % 11 for i in range(40)]
    guard = [x + 2.0 for x in direct]
    low, high = difference_ci(guard, direct, 0.5)
    assert low <= 2.0 <= high and difference_ci(guard, direct, 0.5) == (low, high)
    assert median_ci([2.0] * 10) == (2.0, 2.0)
    assert distribution([1.0, 2.0, 3.0, 4.0])["p50"] == 2.5
    with pytest.raises(ValueError, match="no samples"):
        distribution([])


def test_proxy_workload_alternates_chat_and_completions_over_fixed_prompts():
    jobs = workload(10)
    assert [e for e, _ in jobs] == ["chat", "completions"] * 5
    assert jobs == workload(10) and len(set(jobs)) == 8  # four prompts each, then they repeat


def _phase(r: int, mode: str, per_chunk_ms: float, own_s: float) -> dict:
    """Four requests per path; the guard path takes ``per_chunk_ms`` longer per chunk; ``own_s`` each on the server."""
    records = []
    for i in range(4):
        base = 500.0 + 10 * i + r
        for path in ("direct", "guard"):
            total = base + (10 * per_chunk_ms if path == "guard" else 0.0)
            rec = {"round": r, "index": i, "endpoint": "chat", "path": path, "total_ms": total}
            if mode == "streamed":
                rec.update(ttfc_ms=50.0, chunks=10, gaps_ms=[45.0] * 9)
            records.append(rec)
    counts = {le: (4.0 if le >= own_s else 0.0) for le in _BUCKETS_S}
    metric = {"sum_s": 4 * own_s, "count": 4.0, "scores_missing": 0.0, "buckets": counts}
    return {"round": r, "mode": mode, "records": records, "guard_metric": metric,
            "guard_process_cpu_ms": {"direct": 10.0, "guard": 10.0 + 4 * 2.0}}


def test_summary_reports_the_added_latency_per_chunk_the_servers_own_time_and_the_goals():
    phases = [_phase(r, mode, per_chunk_ms=0.5, own_s=8e-4) for r in range(2) for mode in ("non_streamed", "streamed")]
    s = summarise(phases, GOAL_REQUEST_MS, GOAL_CHUNK_MS)
    assert s["streamed"]["added_per_chunk_ms"]["median"] == pytest.approx(0.5)
    assert s["streamed"]["added_per_chunk_ms"]["pairs_with_different_chunk_counts"] == 0
    assert s["non_streamed"]["total_ms"]["paired_added_ms"]["median"] == pytest.approx(5.0)
    own = s["non_streamed"]["guard_processing"]
    assert own["requests"] == 8 and own["mean_ms"] == pytest.approx(0.8) and own["p50_bucket_ms"] == [0.5, 1.0]
    assert s["streamed"]["guard_processing"]["per_chunk_ms"] == pytest.approx(0.08)
    assert s["non_streamed"]["guard_process_cpu"]["per_request_ms"] == pytest.approx(2.0)
    assert s["streamed"]["guard_process_cpu"]["per_chunk_ms"] == pytest.approx(0.2)
    goals = s["goals"]
    assert goals["per_request"]["met"] and goals["per_chunk"]["met"] and goals["judged_on"] == "guard_processing"
    assert goals["process_cpu"]["within_goals"] is False  # 2 ms of CPU per request is over 1 ms
    assert goals["end_to_end"]["per_chunk"] == "not met"  # exactly 0.5 ms more per chunk in every pair
    record = {"summary": s, "rounds": 2, "requests": 4, "concurrency": 1, "max_tokens": 10,
              "load_average_1m": {"start": 1.0, "end": 2.0}}
    assert "<= 1 ms p50 per request MET" in summary_text(record)


def test_summary_refuses_a_run_without_both_modes():
    with pytest.raises(ValueError, match="no phases in mode 'streamed'"):
        summarise([_phase(0, "non_streamed", 0.5, 8e-4)], GOAL_REQUEST_MS, GOAL_CHUNK_MS)


def test_each_requests_own_server_time_gives_the_exact_p50_that_decides_the_per_request_goal():
    phases = [_phase(r, mode, per_chunk_ms=0.5, own_s=8e-4) for r in range(2) for mode in ("non_streamed", "streamed")]
    for phase in phases:  # the bucket says (0.5, 1] ms; the requests' own values put the p50 at 1.2 ms
        for i, rec in enumerate(r for r in phase["records"] if r["path"] == "guard"):
            rec.update(guard_ms=[0.4, 1.2, 1.2, 3.0][i], guard_wait_ms=0.0, guard_cpu_ms=[0.3, 1.0, 1.0, 2.0][i])
    s = summarise(phases, GOAL_REQUEST_MS, GOAL_CHUNK_MS)
    exact = s["non_streamed"]["guard_processing"]["per_request"]
    assert exact["latency_ms"]["p50"] == pytest.approx(1.2) and exact["cpu_ms"]["p50"] == pytest.approx(1.0)
    assert s["streamed"]["guard_processing"]["per_request"]["latency_per_chunk_ms"]["p50"] == pytest.approx(0.12)
    goals = s["goals"]["per_request"]
    assert goals["p50_ms"] == pytest.approx(1.2) and goals["p50_bucket_ms"] == [0.5, 1.0] and not goals["met"]
    record = {"summary": s, "rounds": 2, "requests": 4, "concurrency": 1, "max_tokens": 10,
              "load_average_1m": {"start": 1.0, "end": 2.0}}
    assert "p50 1.20 ms, p99" in summary_text(record) and "<= 1 ms p50 per request NOT met" in summary_text(record)


def _run_at(per_request_ms: float, chunks: float) -> dict[str, Any]:
    return {"summary": {"streamed": {"guard_process_cpu": {"per_request_ms": per_request_ms},
                                     "added_per_chunk_ms": {"chunks_per_request": {"mean": chunks}}}}}


def test_the_marginal_chunk_cost_is_the_slope_between_two_stream_lengths_without_the_fixed_part() -> None:
    from benchmarks.in_server import marginal

    # 2 ms per request whatever its length, 0.25 ms per chunk: total / chunks would say 0.37 and 0.29
    got = marginal(_run_at(2.0 + 0.25 * 16.5, 16.5), _run_at(2.0 + 0.25 * 48.5, 48.5))
    assert abs(got["per_chunk_ms"] - 0.25) < 1e-12 and abs(got["fixed_per_request_ms"] - 2.0) < 1e-12


def test_the_marginal_chunk_cost_needs_a_longer_second_run() -> None:
    from benchmarks.in_server import marginal

    with pytest.raises(ValueError, match="expected more"):
        marginal(_run_at(5.0, 16.5), _run_at(5.0, 16.5))
