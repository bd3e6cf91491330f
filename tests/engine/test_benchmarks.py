"""Benchmarks run end to end on a tiny workload; their speed targets are measured in benchmarks/, never here."""

from __future__ import annotations

import json

from tests.engine.conftest import LAYERS

#: Same bound as the capture tests: per statement and layer, ||got - ref|| / ||ref||.
MAX_REL_ERR = 1e-4


def test_collection_benchmark_runs_and_reports_a_ratio(eager_engine, hf):
    from benchmarks.collection import run, sample_statements, summary_text

    result = run(eager_engine, hf, sample_statements(8), rounds=1, batch=4, hf_batch=4, settle_s=0.0)
    json.dumps(result)  # the record is written as JSON
    assert result["n_statements"] == 8 and result["layers"] == list(LAYERS)
    assert set(result["labels"]) == {"true", "false", "neither"}
    summary = result["summary"]
    for arm in ("vllm", "hf", "hf_batched"):
        assert summary[arm]["statements_per_s"] > 0 and summary[arm]["tokens_per_s"] > 0
    for ratio in ("ratio_vllm_over_hf", "ratio_vllm_over_hf_batched"):
        assert 0 < summary[ratio]["min"] <= summary[ratio]["median"] <= summary[ratio]["max"]
    assert summary["headline"] == "ratio_vllm_over_hf" and isinstance(summary["goal_met"], bool)
    for pair in ("vllm_vs_hf", "hf_batched_vs_hf"):
        for kind in ("last", "mean"):
            assert result["agreement"][pair][kind]["max_rel_err"] < MAX_REL_ERR, (pair, kind)
    assert "Headline vLLM/HF" in summary_text(result)
