"""The shipped probe on the real default model, scored where serving scores it: inside the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

#: what the regenerated shipped probe must keep holding in the engine (calibration/results/README.md: measured
#: 0.836, 0.815, 0.58, 0.08; the issue's targets 0.85 / 0.85 / 0.70 are not met yet and are stated there)
MIN_TEST_AUROC = 0.82
MIN_NEGATED_AUROC = 0.80
MIN_CONFIDENT = 0.55
MAX_CONFIDENTLY_WRONG_TEST = 0.10
#: held-out wordings may trail all test statements by this much (measured 0.052; the target is 0.05)
MAX_UNSEEN_WORDING_GAP = 0.08


@pytest.fixture(scope="module")
def shipped(model_path: str) -> str:
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    path = shipped_probe(ModelSpec.from_folder(model_path).fingerprint)
    assert path is not None, "no probe ships for the embedded default model"
    return str(path)


def test_shipped_probe_holds_its_numbers_in_the_engine_on_held_out_facts_templates_negations_and_topics(shipped):
    from adapters.vllm.engine import GuardedLLM
    from calibration.commands import evaluate_statements
    from calibration.holdout import holdout_statements
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
        test = [statements[i] for i in splits.test]
        metrics = evaluate_statements(llm, test)
        negated = evaluate_statements(llm, [s for s in test if s.negated])
        unseen_wording = evaluate_statements(llm, [statements[i] for i in splits.test if splits.held_template[i]])
        topics = evaluate_statements(llm, holdout_statements())
    assert metrics["n"] == manifest.metrics["n_test"]  # the same held-out split the probe never saw
    # The serving path (in-worker scores and shift) reproduces what calibration measured on collected features.
    assert abs(metrics["auroc_true_vs_false"] - manifest.metrics["auroc_true_vs_false"]) < 0.01
    assert abs(metrics["coverage"] - manifest.metrics["coverage"]) < 0.02
    assert abs(metrics["coverage_or_uncertain"] - manifest.metrics["test_coverage"]) < 0.02
    assert abs(metrics["shifted"] - manifest.metrics["test_shifted"]) < 0.02
    assert metrics["auroc_true_vs_false"] >= MIN_TEST_AUROC and metrics["coverage_or_uncertain"] >= 0.85
    assert metrics["confident"] >= MIN_CONFIDENT and metrics["confidently_wrong"] <= MAX_CONFIDENTLY_WRONG_TEST
    assert negated["auroc_true_vs_false"] >= MIN_NEGATED_AUROC
    assert unseen_wording["auroc_true_vs_false"] >= metrics["auroc_true_vs_false"] - MAX_UNSEEN_WORDING_GAP
    # topics no statement of the corpus covers: honest verdicts (covered, or reported uncertain), few confident errors
    assert topics["coverage_or_uncertain"] >= 0.85 and topics["confidently_wrong"] <= 0.10
    assert topics["shifted"] > metrics["shifted"]


def test_guard_evaluate_prints_one_row_per_file(shipped, tmp_path, capsys):
    from guard.__main__ import main

    rows = ["statement,label", "The capital of France is Paris.,true", "The capital of France is Rome.,false",
            "The capital of Japan is Tokyo.,true", "The capital of Japan is Madrid.,false",
            "The capital of Italy is Rome.,true", "The capital of Italy is Lima.,false",
            "The capital of Zorvath is Quenlor.,neither", "Brindel invented the Talvor engine.,neither"]
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(rows) + "\n")
    negated = tmp_path / "negated.jsonl"
    negated.write_text('{"statement": "The capital of France is not Rome.", "label": "true"}\n'
                       '{"statement": "The capital of France is not Paris.", "label": "false"}\n')
    assert main(["evaluate", "--probe", shipped, "--statements", str(mine), str(negated), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = json.loads("\n".join(lines[lines.index("{"):]))  # engine logs may precede it in one process
    assert [row["file"] for row in report["files"]] == [str(mine), str(negated)]
    metrics = report["files"][0]["metrics"]
    assert metrics["n"] == 8 and report["files"][1]["metrics"]["n"] == 2
    assert set(metrics) >= {"auroc_true_vs_false", "accuracy", "macro_f1", "ece", "coverage", "mean_set_size",
                            "coverage_or_uncertain", "confident", "confidently_wrong", "shifted"}
    assert metrics["auroc_true_vs_false"] > 0.5
    assert np.isfinite(metrics["ece"])
    assert main(["evaluate", "--probe", shipped, "--statements", str(mine), str(negated)]) == 0
    table = capsys.readouterr().out
    assert "mine.csv" in table and "negated.jsonl" in table and "conf_wrong" in table


def test_guard_evaluate_rejects_a_bad_file_before_starting_an_engine(shipped, tmp_path, capsys):
    from guard.__main__ import main

    data = tmp_path / "bad.csv"
    data.write_text("statement,label\nThe sky is green.,nope\n")
    assert main(["evaluate", "--probe", shipped, "--statements", str(data)]) == 2
    assert "bad.csv:2: label 'nope' is not one of" in capsys.readouterr().err


def test_guard_generate_prints_per_token_probabilities_and_a_conformal_verdict(shipped, capsys):
    from guard.__main__ import main
    from guard.probe import Probe

    argv = ["generate", "--chat", "--eager", "--json", "--max-tokens", "16", "What is the capital of France?"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    out = json.loads("\n".join(lines[lines.index("{"):]))
    assert out["probe"]["kind"] == Probe.load(shipped).manifest.kind != "stand-in"  # the shipped probe
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
        n_layers = len(gate.layers)
        assert res.scores.scores.shape[-1] == 3 and res.gate_scores.shape == (len(res.scores.positions), n_layers, 2)
        assert res.shift_scores is not None  # the shift head rides in the same pass, between the two
        assert np.allclose(res.shift_scores, Probe.load(shipped).shift_columns(res.scores.hidden), atol=1e-3)
        assert np.allclose(res.gate_scores, gate.score(res.scores.hidden), atol=1e-3)
        last = int(np.flatnonzero(res.scores.positions == n - 1)[0])
        p_correct = gate.probabilities(res.gate_scores[last : last + 1])[0, 1]
        assert 0.0 < p_correct < 1.0
