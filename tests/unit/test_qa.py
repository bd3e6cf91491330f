"""Grading answers, the pre-generation gate, and selective-answering reports (no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.gate import GATE_LABELS, fit_gate
from calibration.qa import grade, normalise
from calibration.selective import selective_report
from calibration.statements import generate_qa
from guard.errors import ConfigError
from guard.model_spec import ModelSpec
from guard.probe import Probe


@pytest.mark.parametrize("answer, accepted, expected", [
    ("The capital of France is Paris.", ("Paris",), True),
    ("Paris is lovely, but the capital is Lyon.", ("Lyon",), True),
    ("The capital of Australia is Sydney.", ("Canberra",), False),
    ("20 + 47 = 67.", ("67",), True),
    ("20 + 47 = 167.", ("67",), False),  # whole numbers only, not digits inside another number
    ("The currency of Greece is the Euro.", ("euro",), True),
    ("It is in South America.", ("South America",), True),
    ("It is in South Africa.", ("South America",), False),
    ("The capital of Paraguay is Asunción.", ("Asuncion",), True),  # accents are ignored
    ("Tokyo\nBut also Kyoto.", ("Kyoto",), False),  # only the first line is graded
    ("", ("Paris",), False),
])
def test_grading_matches_whole_normalised_words_of_the_first_line(answer, accepted, expected):
    assert grade(answer, accepted) is expected


def test_grading_without_accepted_answers_is_refused():
    with pytest.raises(ConfigError, match="at least one accepted answer"):
        grade("Paris", ())


def test_normalise_drops_case_articles_and_punctuation():
    assert normalise("The  Euro!") == "euro"


def test_generated_qa_items_are_deterministic_and_cover_several_domains():
    a, b = generate_qa(0), generate_qa(0)
    assert [x.question for x in a] == [x.question for x in b]
    assert len({x.domain for x in a}) >= 6 and len({x.question for x in a}) == len(a)


def _spec(h: int) -> ModelSpec:
    return ModelSpec(model_type="llama", hidden_size=h, num_layers=4, fingerprint="synthetic")


def test_gate_recovers_a_planted_knowledge_direction_and_certifies_a_threshold():
    rng = np.random.default_rng(0)
    n, h = 900, 32
    u = rng.standard_normal(h)
    u /= np.linalg.norm(u)
    rows = rng.standard_normal((n, 2, h))
    knows = rows[:, 0] @ u  # the model "knows" the answer when the state points along u
    correct = rng.uniform(size=n) < 1 / (1 + np.exp(-3 * knows))
    rows[:, 1] = rows[:, 0] + 0.1 * rng.standard_normal((n, h))
    idx = rng.permutation(n)
    gate = fit_gate(rows, correct, idx[:450], idx[450:], (1, 2), _spec(h), "synthetic", alpha=0.2)
    assert gate.labels == GATE_LABELS and gate.manifest.selective is not None
    w = gate.folded()[0][0, :, 1]  # layer 0, the 'correct' column, with normalisation folded in
    assert abs(w @ u) / np.linalg.norm(w) > 0.8
    lam = gate.manifest.selective.threshold_at()
    assert np.isfinite(lam)
    # fresh draws from the same process: the certified threshold keeps the risk among answered <= alpha
    fresh = rng.standard_normal((20_000, h))
    fresh_correct = rng.uniform(size=20_000) < 1 / (1 + np.exp(-3 * (fresh @ u)))
    fresh_rows = np.stack([fresh, fresh], axis=1)
    answered = gate.probabilities(gate.score(fresh_rows))[:, 1] >= lam
    assert answered.mean() > 0.1 and (~fresh_correct[answered]).mean() <= 0.2


def test_cross_fitted_gate_confidence_ranks_held_out_items():
    from calibration.gate import cross_fitted_confidence
    from guard.evaluation import auroc

    rng = np.random.default_rng(4)
    rows = rng.standard_normal((300, 1, 16))
    correct = rng.uniform(size=300) < 1 / (1 + np.exp(-3 * rows[:, 0, 0]))
    assert auroc(cross_fitted_confidence(rows, correct), correct) > 0.75
    noise = cross_fitted_confidence(rng.standard_normal((300, 1, 16)), correct)
    assert auroc(noise, correct) < 0.65  # no leak from training folds into their own scores


def test_gate_round_trips_as_an_ordinary_probe_artefact(tmp_path):
    rng = np.random.default_rng(1)
    rows, correct = rng.standard_normal((60, 1, 8)), rng.uniform(size=60) < 0.5
    gate = fit_gate(rows, correct, np.arange(30), np.arange(30, 60), (2,), _spec(8), "x")
    again = Probe.load(gate.save(tmp_path / "gate"))
    assert again.manifest == gate.manifest
    assert np.allclose(again.probabilities(again.score(rows)), gate.probabilities(gate.score(rows)))


def test_gate_refuses_a_training_split_with_one_outcome():
    rows = np.zeros((10, 1, 4))
    with pytest.raises(ConfigError, match="needs both correct and incorrect"):
        fit_gate(rows, np.ones(10, bool), np.arange(5), np.arange(5, 10), (0,), _spec(4), "x")


def test_selective_report_is_honest_about_what_it_answers():
    rng = np.random.default_rng(2)
    conf = rng.uniform(size=2000)
    correct = rng.uniform(size=2000) < 0.3 + 0.7 * conf
    good = selective_report(conf, correct, alpha=0.2, splits=100)
    useless = selective_report(rng.uniform(size=2000), correct, alpha=0.2, splits=100)
    assert good["auroc"] > 0.7 and good["coverage"] > 0.1 and good["violation_rate"] <= 0.25
    assert abs(good["correct"] + good["hallucinated"] + good["abstained"] - 1) < 1e-9
    assert useless["coverage"] < 0.05  # a signal that carries nothing certifies (almost) nothing
    assert good["aurc"] < useless["aurc"]


def test_selective_report_refuses_too_few_items():
    with pytest.raises(ConfigError, match="at least 4 graded items"):
        selective_report(np.array([0.5]), np.array([True]), alpha=0.1)
