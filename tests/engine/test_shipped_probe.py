"""The shipped probe on the real default model, scored where serving scores it: inside the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest


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
    from guard.__main__ import main

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
    from guard.__main__ import main

    data = tmp_path / "bad.csv"
    data.write_text("statement,label\nThe sky is green.,nope\n")
    assert main(["evaluate", "--probe", shipped, "--statements", str(data)]) == 2
    assert "bad.csv:2: label 'nope' is not one of" in capsys.readouterr().err


def test_guard_generate_prints_per_token_probabilities_and_a_conformal_verdict(capsys):
    from guard.__main__ import main

    argv = ["generate", "--chat", "--eager", "--json", "--max-tokens", "16", "What is the capital of France?"]
    assert main(argv) == 0
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


def test_guard_evaluate_qa_answers_grades_and_reports_selective_answering_end_to_end(tmp_path, capsys):
    from guard.__main__ import main

    data = tmp_path / "qa.csv"
    data.write_text("question,answers\nWhat is the capital of France?,Paris\nWhat is the capital of Japan?,Tokyo\n"
                    "What is 23 plus 36?,59\nWhat is the capital of Australia?,Canberra\n"
                    "What is the chemical symbol of gold?,Au\nHow many hours are in one day?,24\n")
    assert main(["evaluate-qa", "--qa", str(data), "--splits", "10", "--alpha", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 6 and 0.0 <= out["accuracy"] <= 1.0
    france = out["examples"][0]
    assert "Paris" in france["answer"] and france["correct"] is True  # graded against the accepted answer
    assert out["gate"] is not None  # the shipped gate rides along with the shipped probe
    assert {"answer_probe", "logprob", "gate", "gate_and_probe"} <= set(out["methods"])
    for rep in out["methods"].values():
        assert rep["n"] == 6 and 0.0 <= rep["coverage"] <= 1.0
        assert abs(rep["correct"] + rep["hallucinated"] + rep["abstained"] - 1.0) < 1e-9
        assert rep["aurc"] is not None and 0.0 <= rep["aurc"] <= 1.0


def test_shipped_gate_is_scored_in_the_same_matmul_as_the_probe_and_matches_the_reference(shipped):
    from adapters.vllm.engine import GuardedLLM
    from calibration.qa import qa_prompt
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec
    from guard.probe import Probe
    from guard.shipped import shipped_probe

    gate_path = shipped_probe(Probe.load(shipped).manifest.model_fingerprint, gate=True)
    assert gate_path is not None, "no pre-generation gate ships for the embedded default model"
    gate = Probe.load(gate_path)
    assert gate.manifest.selective is not None  # calibrated for selective answering
    config = GuardConfig.build(probe=shipped, gate=str(gate_path), capture_hidden=True, enforce_eager=True,
                               max_model_len=512)
    with GuardedLLM(config) as llm:  # the start-up self-test already compares both read-outs on captured rows
        prompts = [qa_prompt(llm.tokenizer, q) for q in ("What is the capital of France?", "What is 37 plus 48?")]
        results = llm.generate(prompts, hidden=True)
        spec = ModelSpec.from_folder(llm.model_path)
    gate.check_model(spec)
    for res in results:
        n = len(res.prompt_token_ids)
        assert res.scores.scores.shape[-1] == 3 and res.gate_scores.shape == (len(res.scores.positions), 4, 2)
        assert np.allclose(res.gate_scores, gate.score(res.scores.hidden), atol=1e-3)
        last = int(np.flatnonzero(res.scores.positions == n - 1)[0])
        p_correct = gate.probabilities(res.gate_scores[last : last + 1])[0, 1]
        assert 0.0 < p_correct < 1.0
