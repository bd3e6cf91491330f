"""The bench suite's pure parts: ratios, metrics, the cross-domain matrix, answer agreement, records, plots, CLI,
and the probe-fitting bench (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.overhead import ARMS, summarise
from benchmarks.quality import class_metrics, cross_domain, per_layer
from benchmarks.record import finite, save_record
from benchmarks.selective_qa import agreement


def _round(plain_tps: float, slow: float) -> dict:
    """One round where every guard arm runs ``slow`` times slower than plain in every way."""
    plain = {"throughput_tok_s": plain_tps, "ttft_s": 0.1, "itl_s": 0.05}
    arm = {"throughput_tok_s": plain_tps / slow, "ttft_s": 0.1 * slow, "itl_s": 0.05 * slow}
    return {"plain": plain, **{a: arm for a in ARMS[1:]}}


def test_latency_ratios_are_per_round_arm_over_plain_so_drift_between_rounds_cancels():
    # plain throughput drifts 10x between rounds; the arms stay 2x slower within each round
    summary = summarise({"8": [_round(100.0, 2.0), _round(10.0, 2.0), _round(50.0, 2.0)]})
    for arm in ARMS[1:]:
        cell = summary["8"][arm]
        assert cell["throughput_tok_s_ratio"]["median"] == pytest.approx(0.5)
        assert cell["ttft_s_ratio"]["median"] == pytest.approx(2.0)
        assert cell["itl_s_ratio"]["min"] == pytest.approx(2.0) == cell["itl_s_ratio"]["max"]
    assert summary["8"]["plain"]["throughput_tok_s"] == 50.0


def test_macro_f1_counts_only_classes_present_in_the_labels():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    labels = np.array([0, 1, 0, 1])  # a true/false-only file: no "neither"
    m = class_metrics(probs, labels)
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0 and m["auroc_true_vs_false"] == 1.0
    wrong = class_metrics(np.array([[0.1, 0.1, 0.8]] * 4), labels)  # predicts an absent class: no credit
    assert wrong["macro_f1"] == 0.0 and wrong["accuracy"] == 0.0


def test_true_vs_false_auroc_is_none_when_a_side_is_missing():
    assert class_metrics(np.full((3, 3), 1 / 3), np.array([0, 0, 2]))["auroc_true_vs_false"] is None


def _two_domains(rng: np.random.Generator, n: int = 80, h: int = 6) -> tuple[np.ndarray, ...]:
    """Truth lives on feature 0 in domain "a" and on feature 1 in domain "b"; everything else is noise."""
    labels = rng.integers(0, 2, 2 * n)
    domains = np.array(["a"] * n + ["b"] * n)
    x = rng.normal(0, 1, (2 * n, h))
    x[:n, 0] += 3 * (labels[:n] == 0)
    x[n:, 1] += 3 * (labels[n:] == 0)
    idx = rng.permutation(2 * n)
    return x, labels, domains, np.sort(idx[: n]), np.sort(idx[n:])


def test_cross_domain_matrix_is_high_in_domain_and_far_lower_across_orthogonal_domains():
    x, labels, domains, train, held = _two_domains(np.random.default_rng(0))
    out = cross_domain(x, labels, domains, train, held)
    assert out["domains"] == ["a", "b"]
    assert out["auroc"]["a"]["a"] > 0.9 and out["auroc"]["b"]["b"] > 0.9
    # a probe of one domain reads noise features in the other: no transfer (its sign there is chance)
    assert out["auroc"]["a"]["b"] < 0.75 and out["auroc"]["b"]["a"] < 0.75
    assert sum(out["n_test"].values()) == len(held)


def test_cross_domain_leaves_out_domains_too_small_to_score():
    x, labels, domains, train, held = _two_domains(np.random.default_rng(1))
    domains = domains.copy()
    domains[np.flatnonzero(domains == "b")[:3]] = "tiny"
    assert "tiny" not in cross_domain(x, labels, domains, train, held)["domains"]


def test_per_layer_probe_finds_the_layer_that_carries_the_signal():
    rng = np.random.default_rng(2)
    labels = np.tile([0, 1, 2], 60)
    feats = rng.normal(0, 1, (180, 2, 8))  # (n, L, H); layer 1 carries the label, layer 0 is noise
    feats[np.arange(180), 1, labels] += 3.0
    out = per_layer(feats, labels, np.arange(0, 120), np.arange(120, 180), (10, 12))
    assert out["12"]["accuracy"] > 0.9 and out["12"]["auroc_true_vs_false"] > 0.95
    assert out["10"]["accuracy"] < 0.6


@pytest.mark.parametrize("samples, expected", [(["Paris."], 1.0), (["It is Lyon."], 0.0), (["Paris.", "Lyon."], 0.5)])
def test_sampling_agreement_compares_only_words_the_question_does_not_contain(samples, expected):
    question = "What is the capital of France?"
    assert agreement("The capital of France is Paris.", samples, question) == expected


def test_records_are_strict_json_with_nan_as_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "deep" / "r.json"
    save_record(str(out), {"risk": float("nan"), "rows": [1.5, float("-inf")]}, "summary line")
    assert json.loads(out.read_text()) == {"risk": None, "rows": [1.5, None]}
    assert capsys.readouterr().out.strip() == "summary line"
    assert finite((1.0, {"x": float("inf")})) == [1.0, {"x": None}]


def test_guard_bench_subcommands_parse_with_their_own_options():
    from guard.__main__ import build_parser

    parser = build_parser()
    lat = parser.parse_args(["bench", "latency", "--rounds", "2", "--concurrency", "1,8"])
    assert (lat.command, lat.bench, lat.rounds, lat.concurrency, lat.out) == ("bench", "latency", 2, "1,8", None)
    sel = parser.parse_args(["bench", "selective", "--samples", "0", "--alpha", "0.2"])
    assert (sel.samples, sel.alpha, sel.splits) == (0, 0.2, 200)
    qual = parser.parse_args(["bench", "quality", "--statements", "a.csv", "--statements", "b.jsonl"])
    assert qual.statements == ["a.csv", "b.jsonl"]
    fit = parser.parse_args(["bench", "calibrate", "--hidden", "8192", "--baseline-layers", "1"])
    assert (fit.hidden, fit.layers, fit.baseline_layers, fit.rows, fit.threads) == (8192, 8, 1, 4000, 1)
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "nonsense"])


def test_latency_and_selective_plots_render_from_records_alone(tmp_path: Path):
    from benchmarks.plots import plot_latency, plot_selective

    latency = {"rounds": 3, "summary": summarise({"1": [_round(10.0, 1.1)] * 3, "8": [_round(40.0, 1.2)] * 3}),
               "proxy": {"guard_processing_ms_per_request": 1.6, "guard_processing_ms_per_chunk": 0.33}}
    assert plot_latency(latency, tmp_path / "l.png")
    rep = {"aurc": 0.3, "certified": 0.9, "violation_rate": 0.05, "correct": 0.2, "hallucinated": 0.05,
           "abstained": 0.75, "curve": {"coverage": [0.5, 1.0], "risk": [0.2, 0.5]},
           "per_split": {"coverage": [0.2, 0.0], "risk": [0.1, None]}}
    selective = {"alpha": 0.3, "delta": 0.1, "splits": 2, "accuracy": 0.5, "methods": {"logprob": rep, "gate": rep}}
    assert plot_selective(selective, tmp_path / "s.png")
    assert (tmp_path / "l.png").stat().st_size > 1000 and (tmp_path / "s.png").stat().st_size > 1000


def test_calibrate_bench_records_both_solvers_per_layer_time_memory_and_agreement():
    from benchmarks.probe_fit import ARMS, run, summary_text

    record = run(rows=240, hidden=48, layers=2, baseline_layers=1, crossover=(24,))
    assert set(record["arms"]) == set(ARMS) == {"newton", "lbfgs"}
    new, old = record["arms"]["lbfgs"], record["arms"]["newton"]
    assert len(new["seconds_per_layer"]) == 2 and len(old["seconds_per_layer"]) == 1  # the baseline: fewer layers
    assert old["all_layers_s_extrapolated"] >= 0 and new["all_layers_s"] >= 0
    for arm in (new, old):
        assert arm["peak_rss_mib"] >= arm["rss_before_fit_mib"] > 0 and arm["fit_extra_rss_mib"] >= 0
    assert record["max_probability_difference"] < 1e-6  # same objective, same optimum
    assert [c["hidden"] for c in record["crossover"]] == [24] and record["crossover"][0]["lbfgs_s"] > 0
    assert "speed-up per layer" in summary_text(record)


def test_the_calibrate_bench_baseline_is_the_newton_solver_calibration_still_uses_on_narrow_features():
    from benchmarks.probe_fit import _newton_one_vs_rest, features
    from calibration.families import fit_layer

    x, labels = features(300, 40, layer=0)
    for old, new in zip(_newton_one_vs_rest(x, labels, 3, 30.0), fit_layer("logistic", x, labels, 3, 30.0)):
        assert np.allclose(old, new, rtol=1e-12, atol=1e-12)


def test_the_selective_bench_scores_the_shipped_check_with_and_without_the_samples_agreement():
    from benchmarks.selective_qa import _answer_check
    from calibration.qa import AnsweredItem
    from calibration.statements import QAItem
    from tests.unit.fake_upstream import make_gate

    gate = make_gate(answer_check=True, sampled=True)  # its sampled combiner reads the agreement alone
    rows = np.zeros((1, 4), np.float32)
    answered = [AnsweredItem(QAItem(f"Q{i}?", ("a",), "d"), "a", True, -0.5, None, rows, rows) for i in range(3)]
    agreed = np.array([0.0, 0.5, 1.0])
    out = _answer_check(answered, gate, False, np.array([True] * 3), 0, agreed)
    assert set(out) == {"answer_check", "answer_check_sampled"}
    assert out["answer_check_sampled"] == pytest.approx(1 / (1 + np.exp(-(12 * agreed - 6))), abs=1e-6)
    assert set(_answer_check(answered, gate, False, np.array([True] * 3), 0)) == {"answer_check"}
