"""The MLP probe family: it learns what a linear probe cannot, and exports exactly what it fitted."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.fit import fit_logistic, softmax
from calibration.mlp import fit_mlp, mlp_scores
from guard.errors import ConfigError
from guard.evaluation import auroc
from guard.model_spec import ModelSpec
from guard.probe import ConformalCalibration


def _xor(seed: int, n: int = 1500, h: int = 20, flip: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Label = sign(x.u) XOR sign(x.v) for orthonormal u, v in ``h`` dimensions.

    5% of labels flipped, offset features.
    """
    rng = np.random.default_rng(seed)
    u, v = np.linalg.qr(rng.standard_normal((h, 2)))[0].T
    x = rng.standard_normal((n, h))
    y = ((x @ u > 0) ^ (x @ v > 0)) ^ (rng.uniform(size=n) < flip)
    return x * 2 + 5, y


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_probe_separates_xor_classes_where_linear_fails(seed):
    x, y = _xor(seed)
    train, test = slice(0, 1000), slice(1000, None)
    p = softmax(mlp_scores(x[test], *fit_mlp(x[train], y[train].astype(int), 2, hidden=16, iters=300, seed=seed)))[:, 1]
    assert auroc(p, y[test]) > 0.88  # the Bayes limit with 5% flipped labels is 0.95 accuracy
    assert np.mean((p > 0.5) == y[test]) > 0.8
    w, b, mean, scale = fit_logistic(x[train], y[train])
    linear = ((x[test] - mean) / scale) @ w + b
    assert abs(auroc(linear, y[test]) - 0.5) < 0.08
    assert abs(np.mean((linear > 0) == y[test]) - 0.5) < 0.08


def test_mlp_probe_recovers_a_planted_linear_direction():
    rng = np.random.default_rng(3)
    direction = rng.standard_normal(24)
    direction /= np.linalg.norm(direction)
    y = rng.uniform(size=800) < 0.5
    x = rng.standard_normal((800, 24)) + np.outer(np.where(y, 1.5, -1.5), direction) + 5
    fit = fit_mlp(x[:500], y[:500].astype(int), 2, iters=300)
    w1, b1, w2, b2, mean, scale = fit
    margin = np.diff(mlp_scores(x[500:], *fit), axis=1)[:, 0]  # score(true) - score(false)
    assert auroc(margin, y[500:]) > 0.9
    # the input gradient of the margin, averaged over held-out rows, points along the planted direction
    active = (((x[500:] - mean) / scale) @ w1.T + b1 > 0).astype(float)  # (n, m)
    grad = (active * (w2[1] - w2[0])).mean(axis=0) @ w1 / scale  # (H,)
    assert grad @ direction / np.linalg.norm(grad) > 0.8


def test_mlp_fit_is_reproducible_from_its_seed_and_varies_with_it():
    x, y = _xor(0, n=200, h=6)
    a, b, c = (fit_mlp(x, y.astype(int), 2, hidden=8, iters=20, seed=s) for s in (4, 4, 5))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_mlp_fit_names_a_class_without_examples():
    with pytest.raises(ConfigError, match=r"every class present; got counts \[2, 2, 0\]"):
        fit_mlp(np.ones((4, 3)), np.array([0, 1, 0, 1]), 3)


def test_calibration_exports_an_mlp_probe_that_scores_as_calibration_measured():
    from calibration import export, families

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 240)
    feats = {"last": (rng.standard_normal((240, 2, 12)) + labels[:, None, None] * 0.5 + 3).astype(np.float32)}
    train, held = np.arange(160), np.arange(160, 240)
    fits = [export.fit_probe_layer("mlp", feats, li, labels, train, 3e-2) for li in range(2)]
    conformal = ConformalCalibration(alpha=0.1, thresholds={"true": 0.5, "false": 0.5, "neither": 0.5},
                                     n_cal={"true": 9, "false": 9, "neither": 9})
    spec = ModelSpec.from_config({"model_type": "llama", "hidden_size": 12, "num_hidden_layers": 8})
    probe = export.probe_from(fits, (3, 5), "mlp", spec, "m", {}, conformal, seed=0)
    assert probe.manifest.head == "mlp" and probe.manifest.kind == "softmax-mlp"
    assert probe.hidden_units == families.MLP_HIDDEN
    measured = softmax(np.mean([export.item_scores("mlp", feats, li, held, fits[li]) for li in range(2)], axis=0))
    np.testing.assert_allclose(probe.probabilities(probe.score(feats["last"][held])), measured, rtol=1e-4, atol=1e-5)
