"""The bench suite (``guard bench latency|quality|selective``) runs end to end on a tiny workload.

Two engines for the whole module: one guarded engine (shipped probe, a steering vector, hidden-row
capture) that all three benchmarks share, and the plain vLLM engine the latency benchmark compares
against. The numbers themselves are measured by the benchmarks, never asserted here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

STEER_LAYERS = (14,)


@pytest.fixture(scope="module")
def shipped(model_path: str) -> tuple[str, str]:
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    fingerprint = ModelSpec.from_folder(model_path).fingerprint
    return str(shipped_probe(fingerprint)), str(shipped_probe(fingerprint, gate=True))


@pytest.fixture(scope="module")
def bench_engine(model_path: str, shipped: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from adapters.vllm.engine import GuardedLLM
    from benchmarks.overhead import build_steering
    from guard.config import GuardConfig

    steering = build_steering(model_path, STEER_LAYERS, tmp_path_factory.mktemp("steer") / "truth", n=16)
    cfg = GuardConfig.build(probe=shipped[0], steering=str(steering), capture_hidden=True, enforce_eager=True,
                            max_model_len=1024, max_num_seqs=16)
    llm = GuardedLLM(cfg)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def plain_engine(bench_engine) -> Iterator:
    from vllm import LLM

    from adapters.vllm import internals

    kwargs = {k: v for k, v in bench_engine.engine_kwargs.items()
              if k not in ("additional_config", "worker_extension_cls")}
    llm = LLM(**kwargs)
    yield llm
    internals.shutdown_llm(llm)


def _strict_json(record: dict) -> dict:
    from benchmarks.record import finite

    return json.loads(json.dumps(finite(record), allow_nan=False))


def test_latency_bench_reports_every_arm_against_plain_vllm_and_plots_it(bench_engine, plain_engine, tmp_path: Path):
    from benchmarks.overhead import ARMS, run
    from benchmarks.plots import plot_latency

    result = _strict_json(run(plain_engine, bench_engine, levels=(1, 3), rounds=1, new_tokens=3, progress=False))
    assert set(result["summary"]) == {"1", "3"}
    for cell in result["summary"].values():
        assert cell["plain"]["throughput_tok_s"] > 0 and cell["plain"]["ttft_s"] > 0
        for arm in ARMS[1:]:
            for metric in ("throughput_tok_s", "ttft_s", "itl_s"):
                ratio = cell[arm][f"{metric}_ratio"]
                assert ratio["min"] <= ratio["median"] <= ratio["max"]
            assert cell[arm]["throughput_tok_s_ratio"]["median"] > 0
    row = result["raw"]["3"][0]
    assert row["plain"]["tokens"] == row["steered"]["tokens"] == 3 * 3  # ignore_eos: every request gives 3 tokens
    status = bench_engine.worker_status()[0]
    assert all(f > 0 for f in status["steer_fired"])  # the steered arm went through the steering hooks
    assert plot_latency({**result, "proxy": None}, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size


def test_quality_bench_scores_layers_shipped_probe_domains_and_baselines(bench_engine, tmp_path: Path):
    from benchmarks.plots import plot_quality
    from benchmarks.quality import run
    from calibration.statements import generate_statements
    from guard.probe import Probe

    pool = generate_statements(0)
    picked = ([s for s in pool if s.domain == "capital"][:60] + [s for s in pool if s.domain == "arithmetic"][:60]
              + [s for s in pool if s.label == "neither"][:24])
    probe = Probe.load(bench_engine.config.probe)
    record = _strict_json(run(bench_engine, {"tiny": picked}, probe, seed=0))
    ds = record["datasets"]["tiny"]
    assert set(ds["per_layer"]) == {str(layer) for layer in bench_engine.spec.layers}
    for metrics in [*ds["per_layer"].values(), ds["shipped_probe"]]:
        assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
        assert metrics["n"] == ds["n_test"] > 0
    assert 0.0 <= ds["shipped_probe"]["coverage"] <= 1.0
    assert set(ds["baselines"]) == {"mean_logprob", "max_softmax"}
    cross = ds["cross_domain"]
    assert set(cross["domains"]) <= {"capital", "arithmetic"} and cross["layer"] == probe.layers[0]
    for a in cross["domains"]:
        assert set(cross["auroc"][a]) == set(cross["domains"])
    gen = ds["generalisation"]
    assert set(gen["lodo"]) <= {"capital", "arithmetic"} and all(0.0 <= v <= 1.0 for v in gen["loto"].values())
    (table,) = ds["verdicts"].values()  # the shipped probe's verdicts per domain on the test split
    assert table["all"]["n"] == ds["n_test"] and set(table) - {"all"} <= {s.domain for s in picked}
    assert all(0.0 <= r["confidently_wrong"] <= r["confident"] <= 1.0 for r in table.values())
    assert plot_quality(record, tmp_path / "quality.png") and (tmp_path / "quality.png").stat().st_size


def test_selective_bench_reports_each_signal_over_splits_and_plots_the_spread(bench_engine, tmp_path: Path):
    from benchmarks.plots import plot_selective
    from benchmarks.selective_qa import run
    from calibration.statements import generate_qa
    from guard.probe import Probe

    probe = Probe.load(bench_engine.config.probe)
    record = _strict_json(run(bench_engine, generate_qa(0)[:40], probe, None, cross_fit_gate=True, splits=12,
                              samples=2, max_tokens=16, alphas=(0.3, 0.5)))
    assert set(record["methods"]) == {"answer_probe", "logprob", "consistency", "gate", "gate_and_probe",
                                      "answer_check", "answer_check_sampled"}
    for rep in record["methods"].values():
        per_split = rep["per_split"]
        assert len(per_split["coverage"]) == len(per_split["risk"]) == 12
        rates = rep["correct"] + rep["hallucinated"] + rep["abstained"]
        assert rates == pytest.approx(1.0)
        answered = [r for r in per_split["risk"] if r is not None]
        # the violation rate (what Learn-then-Test bounds by delta) is the share of all splits above alpha
        assert rep["violation_rate"] == pytest.approx(sum(r > record["alpha"] for r in answered) / 12)
        if answered:
            assert rep["violation_rate_answering"] == pytest.approx(np.mean([r > record["alpha"] for r in answered]))
    assert set(record["alpha_sweep"]) == {"0.3", "0.5"}
    assert plot_selective(record, tmp_path / "selective.png") and (tmp_path / "selective.png").stat().st_size
