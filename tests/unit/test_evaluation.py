from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.evaluation import accuracy, auroc, expected_calibration_error, macro_f1


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_auroc_equals_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=40), 1)  # ties on purpose
    pos = rng.uniform(size=40) < 0.4
    if pos.all() or not pos.any():
        pos[0], pos[1] = True, False
    diff = scores[pos][:, None] - scores[~pos][None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert abs(auroc(scores, pos) - expected) < 1e-12


def test_perfect_and_reversed_rankings():
    s, y = np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True])
    assert auroc(s, y) == 1.0 and auroc(-s, y) == 0.0


def test_accuracy_f1_and_ece_on_a_known_case():
    labels, pred = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    assert accuracy(pred, labels) == 0.75
    assert abs(macro_f1(pred, labels, 3) - np.mean([2 / 3, 2 / 3, 1.0])) < 1e-12
    probs = np.eye(3)[labels]
    assert expected_calibration_error(probs, labels) == 0.0


def test_risk_coverage_answers_the_most_confident_first_and_groups_ties():
    from guard.evaluation import aurc, risk_coverage

    conf = np.array([0.9, 0.8, 0.8, 0.1])
    correct = np.array([True, False, True, False])
    coverage, risk = risk_coverage(conf, correct)
    assert coverage.tolist() == [0.25, 0.75, 0.75, 1.0]
    assert np.allclose(risk, [0.0, 1 / 3, 1 / 3, 0.5])
    assert abs(aurc(conf, correct) - np.mean([0.0, 1 / 3, 1 / 3, 0.5])) < 1e-12


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_a_confidence_that_ranks_correct_answers_first_has_the_lowest_aurc(seed):
    from guard.evaluation import aurc

    rng = np.random.default_rng(seed)
    correct = rng.uniform(size=30) < 0.5
    oracle = correct + rng.uniform(0, 0.5, size=30)  # every correct item above every wrong one
    shuffled = rng.uniform(size=30)
    assert aurc(oracle, correct) <= aurc(shuffled, correct) + 1e-12


def test_selective_outcomes_partition_the_items():
    from guard.evaluation import selective_outcomes

    out = selective_outcomes(np.array([True, True, False, False]), np.array([True, False, True, False]))
    assert out["correct"] + out["hallucinated"] + out["abstained"] == 1.0
    assert out == {"correct": 0.25, "hallucinated": 0.25, "abstained": 0.5, "coverage": 0.5, "risk": 0.5}
