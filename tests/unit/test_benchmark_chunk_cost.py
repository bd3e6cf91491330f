"""The per-chunk cost benchmark runs the server's real chunk path with the shipped artefacts.

A tiny run; no timing asserted.
"""

from __future__ import annotations

from benchmarks.chunk_cost import ARMS, PARTS, TOKENS, run, summary_text


def test_a_tiny_chunk_cost_run_times_every_part_of_every_chunk_in_both_arms_and_modes():
    record = run(requests=1, rounds=2, modes=("flag", "abstain"))
    assert set(record["results"]) == {f"{a}/{m}" for a in ARMS for m in ("flag", "abstain")}
    for res in record["results"].values():
        assert set(res["per_chunk_us"]) == set(PARTS) and all(v > 0 for v in res["per_chunk_us"].values())
        assert len(res["guard_by_position_us"]) == len(TOKENS) and len(res["per_round_us"]["guard"]) == 2
    assert "evicted/abstain" in summary_text(record)
