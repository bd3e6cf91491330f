"""Each probe family recovers a planted direction on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.fit import (
    fit_logistic,
    fit_mass_mean,
    fit_one_vs_rest,
    sigmoid,
    softmax,
)
from guard.errors import ConfigError
from guard.evaluation import auroc


def _planted(seed: int, n: int = 600, h: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(h)
    direction /= np.linalg.norm(direction)
    y = rng.uniform(size=n) < 0.5
    x = rng.standard_normal((n, h)) + np.outer(np.where(y, 1.5, -1.5), direction) + 5
    return x, y, direction


@pytest.mark.parametrize("fit", [fit_logistic, fit_mass_mean])
def test_binary_probe_recovers_the_planted_direction(fit):
    x, y, direction = _planted(0)
    w, b, mean, scale = fit(x[:400], y[:400])
    score = ((x[400:] - mean) / scale) @ w + b
    assert auroc(score, y[400:]) > 0.9
    effective = w / scale
    assert abs(effective @ direction) / np.linalg.norm(effective) > 0.8
    acc = np.mean((sigmoid(score) > 0.5) == y[400:])
    assert acc > 0.85


@pytest.mark.parametrize("family", ["logistic", "mass-mean"])
def test_one_vs_rest_separates_three_planted_classes(family):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 16)) * 3
    labels = rng.integers(0, 3, 900)
    x = centres[labels] + rng.standard_normal((900, 16))
    w, b, mean, scale = fit_one_vs_rest(x[:600], labels[:600], 3, family=family)
    probs = softmax(((x[600:] - mean) / scale) @ w.T + b)
    assert np.mean(probs.argmax(axis=1) == labels[600:]) > 0.9


def test_fitting_with_one_class_names_the_problem():
    with pytest.raises(ConfigError, match="both classes"):
        fit_logistic(np.ones((4, 2)), np.ones(4, bool))


def test_one_vs_rest_rejects_an_unknown_family_by_name():
    with pytest.raises(ConfigError, match="'svm'"):
        fit_one_vs_rest(np.ones((4, 2)), np.array([0, 1, 0, 1]), 2, family="svm")


def test_logistic_fit_matches_scikit_learn_on_standardised_features():
    # our Newton solver is the dependency-free stand-in for sklearn's LogisticRegression (L2, unpenalised
    # intercept): same objective, so the same optimum
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12)) * rng.uniform(0.5, 3.0, 12) + rng.uniform(-2, 2, 12)
    y = (x @ rng.standard_normal(12) + rng.normal(0, 2, 300)) > 0
    w, b, mean, scale = fit_logistic(x, y, l2=3.0)
    ref = sklearn.LogisticRegression(C=1 / 3.0, tol=1e-10, max_iter=10_000).fit((x - mean) / scale, y)
    assert np.allclose(w, ref.coef_[0], atol=1e-5) and abs(b - ref.intercept_[0]) < 1e-5
