"""A multiple-instance probe over token bags, in the spirit of sAwMIL.

A statement (or an answer) is a *bag* of token instances; its label is carried by a sparse subset
of them, not by every token. The probe scores each instance linearly, ``z_i = w . x_i + b``, and a
bag by its highest-scoring instance. Training maximises the likelihood of the bag labels under a
smooth maximum (``tau * logsumexp(z / tau)``), which routes the gradient to the instances that
carry the label; a final one-dimensional logistic fit on the *hard* maximum calibrates the scale,
so that in the engine ``sigmoid(max_i z_i)`` is the bag's probability.

The output has the same shape as every other probe family here — per-instance linear weights —
so it runs in the engine unchanged; the policy's max over a sentence's tokens is the bag score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calibration.fit import fit_logistic, sigmoid
from calibration.fit import standardise as standardise_features
from guard.errors import ConfigError

__all__ = ["fit_mil", "fit_mil_one_vs_rest", "bag_scores"]


def _stack(bags: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not bags:
        raise ConfigError("MIL fitting needs at least one bag")
    sizes = np.array([len(b) for b in bags])
    if (sizes == 0).any():
        raise ConfigError(f"bag {int(np.flatnonzero(sizes == 0)[0])} is empty; every bag needs at least one instance")
    x = np.concatenate([np.asarray(b, np.float64) for b in bags])
    if x.ndim != 2:
        raise ConfigError(f"bags must be (n_i, H) arrays, got instances of shape {x.shape[1:]}")
    return x, np.concatenate([[0], np.cumsum(sizes)[:-1]])


def bag_scores(instance_scores: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Hard maximum of instance scores per bag (``starts``: each bag's first instance)."""
    return np.maximum.reduceat(instance_scores, starts)


def _smooth_max(z: np.ndarray, starts: np.ndarray, bag_of: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-bag ``tau * logsumexp(z / tau)`` and each instance's softmax weight within its bag."""
    top = np.maximum.reduceat(z, starts)
    e = np.exp((z - top[bag_of]) / tau)
    total = np.add.reduceat(e, starts)
    return top + tau * np.log(total), e / total[bag_of]


def _initial_directions(z: np.ndarray, inst_y: np.ndarray, seed: int) -> list[np.ndarray]:
    """Starting points: the instance-level mean difference and both signs of the direction whose
    variance grows most in positive bags (a sparse witness adds variance even where it leaves the
    mean unchanged, which is exactly where mean pooling is blind)."""
    mean_diff = z[inst_y].mean(0) - z[~inst_y].mean(0)
    cov_diff = np.cov(z[inst_y], rowvar=False) - np.cov(z[~inst_y], rowvar=False)
    _, eigvecs = np.linalg.eigh(np.atleast_2d(cov_diff))
    top = eigvecs[:, -1]
    rng = np.random.default_rng(seed)
    unit = [mean_diff / (np.linalg.norm(mean_diff) + 1e-12), top, -top, rng.standard_normal(z.shape[1])]
    return [u / (np.linalg.norm(u) + 1e-12) for u in unit]  # unit norm: instance scores start at O(1)


def _adam(z_in: np.ndarray, y: np.ndarray, starts: np.ndarray, bag_of: np.ndarray, theta: np.ndarray, l2: float,
          tau: float, iters: int, lr: float) -> tuple[float, np.ndarray]:
    """Full-batch Adam on the smooth-max bag log-loss; returns (final loss, parameters)."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    b1, b2 = 0.9, 0.999
    n = len(y)
    for t in range(1, iters + 1):
        z = z_in @ theta[:-1] + theta[-1]
        s, weight = _smooth_max(z, starts, bag_of, tau)
        g_bag = (sigmoid(s) - y) / n  # d(mean log-loss)/d(bag score)
        g_inst = weight * g_bag[bag_of]
        grad = np.append(z_in.T @ g_inst + l2 * theta[:-1], g_inst.sum())
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    s, _ = _smooth_max(z_in @ theta[:-1] + theta[-1], starts, bag_of, tau)
    p = np.clip(sigmoid(s), 1e-12, 1 - 1e-12)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)) + 0.5 * l2 * theta[:-1] @ theta[:-1])
    return loss, theta


def fit_mil(bags: Sequence[np.ndarray], y: np.ndarray, l2: float = 1e-2, tau: float = 0.5, iters: int = 400,
            lr: float = 0.05, seed: int = 0, standardise: tuple[np.ndarray, np.ndarray] | None = None
            ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Fit a max-pooled linear MIL probe on bags of instances.

    Args:
        bags: one ``(n_i, H)`` array of instances per bag.
        y: bag labels (bool).
        l2: ridge penalty on the standardised weights.
        tau: temperature of the smooth maximum used while training.
        iters, lr: full-batch Adam steps and step size.
        standardise: ``(mean, scale)`` to use instead of the instances' own.

    Returns:
        ``(w (H,), b, mean (H,), scale (H,))``: instance score ``((x - mean) / scale) @ w + b``; a bag's
        probability is the sigmoid of its highest instance score.

    Raises:
        ConfigError: empty bags, shape mismatch, or a single class.
    """
    x, starts = _stack(bags)
    y = np.asarray(y, bool)
    if y.shape != (len(bags),):
        raise ConfigError(f"expected one label per bag ({len(bags)}), got shape {y.shape}")
    if y.all() or not y.any():
        raise ConfigError(f"MIL fitting needs positive and negative bags; got {int(y.sum())} positives of {y.size}")
    mean, scale = standardise if standardise is not None else standardise_features(x)
    z_in = (x - mean) / scale
    sizes = np.diff(np.append(starts, len(x)))
    bag_of = np.repeat(np.arange(len(bags)), sizes)
    best: tuple[float, np.ndarray] | None = None
    for init in _initial_directions(z_in, y[bag_of], seed):
        loss, theta = _adam(z_in, y, starts, bag_of, np.append(init, 0.0), l2, tau, iters, lr)
        if best is None or loss < best[0]:
            best = (loss, theta)
    assert best is not None
    theta = best[1]
    w, b = theta[:-1], theta[-1]
    # Calibrate the hard max: P(bag) = sigmoid(a * max_i z_i + c), folded into w and b (a > 0 keeps the argmax).
    hard = bag_scores(z_in @ w + b, starts)
    a, c, m1, s1 = fit_logistic(hard[:, None], y, l2=1e-3)
    slope = a[0] / s1[0]
    if slope <= 0:
        raise ConfigError("MIL probe found no direction whose maximum separates the bags; check the labels")
    return w * slope, float(b * slope + c - slope * m1[0]), mean, scale


def fit_mil_one_vs_rest(bags: Sequence[np.ndarray], labels: np.ndarray, n_classes: int, **kwargs: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One MIL read-out per class over shared standardisation: ``(weight (k, H), bias (k,), mean, scale)``."""
    mean, scale = standardise_features(_stack(bags)[0])
    labels = np.asarray(labels)
    fits = [fit_mil(bags, labels == c, standardise=(mean, scale), **kwargs) for c in range(n_classes)]  # type: ignore[arg-type]
    return np.stack([f[0] for f in fits]), np.array([f[1] for f in fits]), mean, scale
