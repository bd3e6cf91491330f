"""The shipped probe on the real default model, scored where serving scores it: inside the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def shipped(model_path: str) -> str:
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    path = shipped_probe(ModelSpec.from_folder(model_path).fingerprint)
    assert path is not None, "no probe ships for the embedded default model"
    return str(path)


def test_shipped_probe_reaches_auroc_085_on_held_out_statements_scored_in_the_engine(shipped):
    from adapters.vllm.engine import GuardedLLM
    from calibration.commands import evaluate_statements
    from calibration.knowledge import known_facts
    from calibration.pipeline import dataset_splits
    from calibration.statements import generate_statements
    from guard.config import GuardConfig
    from guard.probe import Probe

    manifest = Probe.load(shipped).manifest
    statements = generate_statements(0)
    with GuardedLLM(GuardConfig.build(probe=shipped, enforce_eager=True, max_model_len=512)) as llm:
        _, unknown = known_facts(llm, statements)
        splits = dataset_splits(statements, unknown, seed=0)
        metrics = evaluate_statements(llm, [statements[i] for i in splits.test])
    assert metrics["n"] == manifest.metrics["n_test"]  # the same held-out split the probe never saw
    assert metrics["auroc_true_vs_false"] >= 0.85
    # The serving path (in-worker scores) reproduces what calibration measured on collected features.
    assert abs(metrics["auroc_true_vs_false"] - manifest.metrics["auroc_true_vs_false"]) < 0.01
    assert abs(metrics["coverage"] - manifest.metrics["coverage"]) < 0.02
    assert metrics["coverage"] >= 0.8


def test_guard_evaluate_reports_metrics_for_a_user_file_as_json(shipped, tmp_path, capsys):
    from adapters.cli import main

    rows = ["statement,label", "The capital of France is Paris.,true", "The capital of France is Rome.,false",
            "The capital of Japan is Tokyo.,true", "The capital of Japan is Madrid.,false",
            "The capital of Italy is Rome.,true", "The capital of Italy is Lima.,false",
            "The capital of Zorvath is Quenlor.,neither", "Brindel invented the Talvor engine.,neither"]
    data = tmp_path / "mine.csv"
    data.write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "--probe", shipped, "--statements", str(data), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = json.loads("\n".join(lines[lines.index("{"):]))  # engine logs may precede it in one process
    metrics = report["metrics"]
    assert metrics["n"] == 8
    assert set(metrics) >= {"auroc_true_vs_false", "accuracy", "macro_f1", "ece", "coverage", "mean_set_size"}
    assert metrics["auroc_true_vs_false"] > 0.5
    assert np.isfinite(metrics["ece"])


def test_guard_evaluate_rejects_a_bad_file_before_starting_an_engine(shipped, tmp_path, capsys):
    from adapters.cli import main

    data = tmp_path / "bad.csv"
    data.write_text("statement,label\nThe sky is green.,nope\n")
    assert main(["evaluate", "--probe", shipped, "--statements", str(data)]) == 2
    assert "bad.csv:2: label 'nope' is not one of" in capsys.readouterr().err


def test_guard_generate_prints_per_token_probabilities_and_a_conformal_verdict(capsys):
    from adapters.cli import main

    assert main(["generate", "--chat", "--eager", "--json", "--max-tokens", "16", "What is the capital of France?"]) == 0
    lines = capsys.readouterr().out.splitlines()
    out = json.loads("\n".join(lines[lines.index("{"):]))
    assert out["probe"]["kind"] == "one-vs-rest-logistic"  # the shipped probe, not the stand-in
    (result,) = out["results"]
    assert "Paris" in result["completion"]
    rows = result["token_scores"]
    positions = [r["position"] for r in rows]
    assert positions == list(range(positions[0], positions[0] + len(rows)))  # contiguous, no gaps
    assert all(abs(sum(r["probs"]) - 1) < 1e-3 for r in rows)
    verdict = result["verdict"]
    assert verdict["probs"] == rows[-1]["probs"] and verdict["set"]  # a non-empty conformal set
    assert set(verdict["set"]) <= {"true", "false", "neither"}
