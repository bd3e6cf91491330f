"""Each probe family recovers a planted direction on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

import calibration.fit as fit_module
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
    # our solvers stand in for sklearn's LogisticRegression (L2, unpenalised intercept): same objective, so the
    # same optimum
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12)) * rng.uniform(0.5, 3.0, 12) + rng.uniform(-2, 2, 12)
    y = (x @ rng.standard_normal(12) + rng.normal(0, 2, 300)) > 0
    w, b, mean, scale = fit_logistic(x, y, l2=3.0)
    ref = sklearn.LogisticRegression(C=1 / 3.0, tol=1e-10, max_iter=10_000).fit((x - mean) / scale, y)
    assert np.allclose(w, ref.coef_[0], atol=1e-5) and abs(b - ref.intercept_[0]) < 1e-5


def _newton_reference(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """The exact optimum of the same objective on standardised ``x``: Newton's method to machine precision."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    reg = np.r_[np.full(x.shape[1], l2), 0.0]
    theta = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-(z @ theta)))
        step = np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + np.diag(reg), z.T @ (p - y) + reg * theta)
        theta -= step
        if np.abs(step).max() < 1e-13:
            break
    return theta[:-1], float(theta[-1])


def _correlated(seed: int, n: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Ill-conditioned features like a residual stream: a few strong shared directions, one huge feature."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 8)) * np.geomspace(10, 0.5, 8)) @ rng.standard_normal((8, h))
    x += rng.standard_normal((n, h)) * 0.5
    x[:, 0] *= 100
    y = (x @ rng.standard_normal(h) / np.sqrt(h) + rng.normal(0, 3, n)) > 0
    return x, y


@pytest.fixture
def lbfgs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every logistic fit, however narrow, through L-BFGS."""
    monkeypatch.setattr(fit_module, "NEWTON_MAX_FEATURES", 0)


@pytest.mark.parametrize("rank", [0, 128])  # without and with the preconditioner: it changes the path, not the optimum
@pytest.mark.parametrize("l2", [1.0, 30.0, 300.0])
def test_lbfgs_fit_reaches_the_exact_newton_optimum(lbfgs_only, monkeypatch: pytest.MonkeyPatch, l2, rank):
    monkeypatch.setattr(fit_module, "PRECONDITION_RANK", rank)
    x, y = _correlated(3, 400, 60)
    w, b, mean, scale = fit_logistic(x, y, l2=l2)
    w_ref, b_ref = _newton_reference(x, y, l2)
    assert np.abs(w - w_ref).max() <= 1e-4 * np.abs(w_ref).max() and abs(b - b_ref) <= 1e-4 * max(1.0, abs(b_ref))
    z = (x - mean) / scale
    assert np.abs(sigmoid(z @ w + b) - sigmoid(z @ w_ref + b_ref)).max() < 1e-6


def test_both_solvers_give_the_same_probe_either_side_of_the_threshold(monkeypatch: pytest.MonkeyPatch):
    x, y = _correlated(4, 500, 40)
    newton = fit_logistic(x, y, l2=30.0)
    monkeypatch.setattr(fit_module, "NEWTON_MAX_FEATURES", 0)
    lbfgs = fit_logistic(x, y, l2=30.0)
    assert np.allclose(lbfgs[0], newton[0], rtol=0, atol=1e-6 * np.abs(newton[0]).max())
    assert lbfgs[1] == pytest.approx(newton[1], abs=1e-6)
    assert np.array_equal(lbfgs[2], newton[2]) and np.array_equal(lbfgs[3], newton[3])


def test_lbfgs_fit_on_separable_data_stays_finite_at_the_penalised_optimum(lbfgs_only):
    rng = np.random.default_rng(5)
    y = rng.uniform(size=300) < 0.5
    x = rng.standard_normal((300, 20))
    x[:, 0] += np.where(y, 4.0, -4.0)  # a perfect margin on feature 0: without the penalty, |w| grows forever
    assert x[y, 0].min() > x[~y, 0].max()
    w, b, mean, scale = fit_logistic(x, y, l2=1.0)
    w_ref, b_ref = _newton_reference(x, y, 1.0)
    assert np.isfinite(w).all() and np.isfinite(b) and np.linalg.norm(w) < 50
    assert np.abs(w - w_ref).max() <= 1e-4 * np.abs(w_ref).max()
    assert np.mean((((x - mean) / scale) @ w + b > 0) == y) == 1.0


def test_one_vs_rest_through_lbfgs_equals_one_binary_fit_per_class(lbfgs_only):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 600)
    x = rng.standard_normal((3, 30))[labels] * 2 + rng.standard_normal((600, 30))
    weight, bias, mean, scale = fit_one_vs_rest(x, labels, 3, l2=30.0)
    for c in range(3):
        w, b, m, s = fit_logistic(x, labels == c, l2=30.0)
        assert np.allclose(weight[c], w, atol=1e-10) and bias[c] == pytest.approx(b, abs=1e-10)
        assert np.array_equal(mean, m) and np.array_equal(scale, s)


def test_a_probe_at_hidden_size_4096_fits():
    # a large model's width, on the default route (L-BFGS): Newton's (4097 x 4097) Hessian per step took tens of
    # seconds per fit; timing is guard bench calibrate's job, this only proves the wide fit runs and learns
    rng = np.random.default_rng(7)
    y = rng.uniform(size=2000) < 0.5
    direction = rng.standard_normal(4096) * (3 / 64)  # norm about 3: classes 6 apart along it
    x = rng.standard_normal((2000, 4096)).astype(np.float32) + np.outer(np.where(y, 1.0, -1.0), direction)
    w, b, mean, scale = fit_logistic(x[:1500], y[:1500], l2=300.0)
    assert w.shape == (4096,) and np.isfinite(w).all()
    assert auroc(((x[1500:] - mean) / scale) @ w + b, y[1500:]) > 0.9
