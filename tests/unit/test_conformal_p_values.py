"""Mondrian conformal p-values and sets at any alpha: validity, consistency with thresholds, artefact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.conformal import MondrianConformal
from guard.errors import ArtifactError, ConfigError
from guard.probe import ConformalCalibration, Probe, ProbeManifest
from tests.unit.synthetic import noisy_softmax

LABELS = ("true", "false", "neither")


def test_p_values_are_valid_and_nearly_uniform_for_each_class_over_200_splits():
    alphas, k = np.array([0.05, 0.1, 0.2, 0.3, 0.5]), 3
    below = np.zeros((200, k, alphas.size))  # P(p_y <= alpha | y = c) per split
    covered = np.zeros((200, k, alphas.size))  # P(y in set at alpha | y = c) per split
    for seed in range(200):
        probs, labels = noisy_softmax(np.random.default_rng(seed), 600, k)
        cp = MondrianConformal(0.1).fit(probs[:300], labels[:300])
        test, y = probs[300:], labels[300:]
        p_true_label = cp.p_values(test)[np.arange(300), y]
        for j, alpha in enumerate(alphas):
            hit = cp.predict_sets(test, alpha)[np.arange(300), y]
            for c in range(k):
                below[seed, c, j] = (p_true_label[y == c] <= alpha).mean()
                covered[seed, c, j] = hit[y == c].mean()
    # Super-uniform: E[P(p <= a)] <= a; with ~100 calibration points per class it is a - O(1/101) at most
    # below a. The mean over 200 splits has a standard error of about 0.003, hence the 0.01 tolerance.
    mean_below = below.mean(axis=0)
    assert np.all(mean_below <= alphas + 0.01), mean_below
    assert np.all(mean_below >= alphas - 0.02), mean_below
    assert np.all(covered.mean(axis=0) >= 1 - alphas - 0.01), covered.mean(axis=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), fitted=st.floats(0.02, 0.6), other=st.floats(0.02, 0.6))
def test_p_value_sets_equal_the_threshold_rule_at_the_fitted_alpha(seed, fitted, other):
    probs, labels = noisy_softmax(np.random.default_rng(seed), 800)  # >= 49 per class even for alpha 0.02
    by_threshold = MondrianConformal(fitted).fit(probs[:600], labels[:600])
    by_count = MondrianConformal(other).fit(probs[:600], labels[:600])  # asked at `fitted`: the p-value path
    test = probs[600:]
    assert np.array_equal(by_count.predict_sets(test, fitted), by_threshold.predict_sets(test))
    p = by_count.p_values(test)
    clear = np.abs(p - fitted) > 1e-9  # exact ties are decided in integers, not floats
    assert np.array_equal((p > fitted)[clear], by_threshold.predict_sets(test)[clear])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), a1=st.floats(0.001, 0.999), a2=st.floats(0.001, 0.999))
def test_sets_shrink_monotonically_as_the_requested_alpha_grows(seed, a1, a2):
    lo, hi = sorted((a1, a2))
    probs, labels = noisy_softmax(np.random.default_rng(seed), 300)
    cp = MondrianConformal(0.1).fit(probs[:150], labels[:150])
    small, large = cp.predict_sets(probs[150:], hi), cp.predict_sets(probs[150:], lo)
    assert np.all(large | ~small)  # small ⊆ large
    p = cp.p_values(probs[150:])
    assert np.all(p >= 1 / (cp.counts + 1)) and np.all(p <= 1)


def test_stored_scores_rebuild_the_fitted_thresholds_to_six_decimals():
    probs, labels = noisy_softmax(np.random.default_rng(1), 300)
    cp = MondrianConformal(0.1).fit(probs, labels)
    rebuilt = MondrianConformal.from_scores(0.1, cp.calibration_scores())
    np.testing.assert_allclose(rebuilt.thresholds, cp.thresholds, atol=5e-7)
    assert rebuilt.counts.tolist() == cp.counts.tolist()


def test_thresholds_only_calibration_names_the_missing_scores():
    cp = MondrianConformal.from_thresholds(0.1, [0.5, 0.5, 0.5])
    with pytest.raises(ConfigError, match="rebuilt from thresholds at alpha=0.1 only"):
        cp.p_values(np.full((1, 3), 1 / 3))
    with pytest.raises(ConfigError, match="from_scores"):
        cp.predict_sets(np.full((1, 3), 1 / 3), 0.2)
    assert cp.predict_sets(np.full((1, 3), 1 / 3), 0.1).shape == (1, 3)  # its own alpha still works


def test_unsorted_stored_scores_are_refused():
    with pytest.raises(ConfigError, match="ascending"):
        MondrianConformal.from_scores(0.1, [[0.3, 0.1]])


def _calibrated_probe(with_scores: bool, seed: int = 0) -> tuple[Probe, np.ndarray]:
    probs, labels = noisy_softmax(np.random.default_rng(seed), 400)
    cp = MondrianConformal(0.1).fit(probs[:200], labels[:200])
    conformal = ConformalCalibration(  # built exactly as calibration/pipeline.py builds it
        alpha=0.1, thresholds=dict(zip(LABELS, cp.thresholds.tolist())), n_cal=dict(zip(LABELS, cp.counts.tolist())),
        scores=dict(zip(LABELS, cp.calibration_scores())) if with_scores else None)
    manifest = ProbeManifest(kind="t", labels=LABELS, layers=(1,), hidden_size=2, num_layers=4, model_fingerprint="x",
                             conformal=conformal)
    zeros = np.zeros((1, 2), np.float32)
    return Probe(manifest, np.zeros((1, 3, 2), np.float32), np.zeros((1, 3), np.float32), zeros, zeros + 1), probs[200:]


def test_probe_p_values_and_sets_at_any_alpha_survive_save_and_load(tmp_path):
    probe, test = _calibrated_probe(with_scores=True)
    probe.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert loaded.manifest == probe.manifest
    np.testing.assert_array_equal(loaded.p_values(test), probe.p_values(test))
    for alpha in (0.05, 0.1, 0.3):
        assert loaded.prediction_sets(test, alpha) == probe.prediction_sets(test, alpha)
    # At the stored alpha, the rounded scores reproduce the full-precision stored thresholds' sets
    # except within 1e-6 of a threshold.
    thresholds = np.array([probe.manifest.conformal.thresholds[label] for label in LABELS])
    clear = np.all(np.abs((1 - test) - thresholds) > 1e-6, axis=1)
    by_threshold = [tuple(label for label, keep in zip(LABELS, row) if keep) for row in (1 - test) <= thresholds]
    by_p_value = loaded.prediction_sets(test, 0.1)
    assert [s for s, ok in zip(by_p_value, clear) if ok] == [s for s, ok in zip(by_threshold, clear) if ok]


def test_an_artefact_without_scores_refuses_another_alpha_naming_its_alpha_and_the_fix():
    probe, test = _calibrated_probe(with_scores=False)
    assert len(probe.prediction_sets(test)) == len(test) == len(probe.prediction_sets(test, 0.1))
    with pytest.raises(ArtifactError,
                       match=r"calibrated at alpha=0\.1 .*sets at alpha=0\.05.*re-run `guard calibrate`"):
        probe.prediction_sets(test, 0.05)
    with pytest.raises(ArtifactError, match=r"alpha=0\.1 .*p-values cannot be computed.*guard calibrate"):
        probe.p_values(test)


def test_a_manifest_whose_scores_disagree_with_its_thresholds_refuses_to_load(tmp_path):
    probe, _ = _calibrated_probe(with_scores=True)
    probe.save(tmp_path / "p")
    raw = json.loads((tmp_path / "p.json").read_text())
    raw["conformal"]["thresholds"]["true"] += 0.05
    (tmp_path / "p.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="conformal scores of 'true'.*disagree.*guard calibrate"):
        Probe.load(tmp_path / "p")
