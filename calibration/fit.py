"""Probe families fitted on residual-stream features, each returning weights for a :class:`guard.probe.Probe`.

* :func:`fit_mass_mean` — the difference of class means (true − false), centred between them.
* :func:`fit_logistic` — L2-regularised logistic regression on standardised features (Newton's
  method; exact and dependency-free).
* :func:`fit_one_vs_rest` — one logistic read-out per label (true / false / neither).

All work on ``(n, H)`` features of one layer and return ``(weight (k, H), bias (k,), mean (H,), scale (H,))``.
"""

from __future__ import annotations

import numpy as np

from guard.errors import ConfigError
from guard.probabilities import softmax

__all__ = ["standardise", "fit_mass_mean", "fit_logistic", "fit_one_vs_rest", "sigmoid", "softmax"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, bool)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ConfigError(f"expected features (n, H) and labels (n,), got {x.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ConfigError(f"fitting needs both classes; got {int(y.sum())} positives of {y.size}")
    return x, y


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (constant features get scale 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0,
                 iters: int = 30) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Binary logistic regression, ``P(y) = sigmoid(((x - mean) / scale) @ w + b)``.

    Returns:
        ``(w (H,), b, mean (H,), scale (H,))``.
    """
    x, y = _check(x, y)
    mean, scale = standardise(x)
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])  # (n, H + 1)
    theta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = sigmoid(z @ theta)
        grad = z.T @ (p - y) + reg * theta
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1]), mean, scale


def fit_mass_mean(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Mass-mean direction ``mu_true - mu_false``.

    The bias puts the midpoint at 0 and a 1-D logistic fit sets the scale.

    Returns:
        ``(w (H,), b, mean (H,), scale (H,))`` in the same convention as :func:`fit_logistic`.
    """
    x, y = _check(x, y)
    direction = x[y].mean(axis=0) - x[~y].mean(axis=0)
    midpoint = (x[y].mean(axis=0) + x[~y].mean(axis=0)) / 2
    proj = ((x - midpoint) @ direction)[:, None]
    a, b, m, s = fit_logistic(proj, y, l2=1e-3)
    # sigmoid(a * ((proj - m) / s) + b) with proj = (x - midpoint) @ direction
    w = direction * (a[0] / s[0])
    bias = b - a[0] * m[0] / s[0]
    return w, float(bias), midpoint, np.ones_like(midpoint)


def fit_one_vs_rest(x: np.ndarray, labels: np.ndarray, n_classes: int, l2: float = 1.0,
                    family: str = "logistic") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One binary read-out per class (``family``: ``logistic`` or ``mass-mean``), sharing one standardisation.

    Returns:
        ``(weight (k, H), bias (k,), mean (H,), scale (H,))``; ``softmax`` of the scores gives class probabilities.

    Raises:
        ConfigError: an unknown family, or a class without examples.
    """
    if family not in ("logistic", "mass-mean"):
        raise ConfigError(f"probe family {family!r} is not one-vs-rest capable; expected 'logistic' or 'mass-mean'")
    x = np.asarray(x, np.float64)
    mean, scale = standardise(x)
    ws, bs = [], []
    for c in range(n_classes):
        y = np.asarray(labels) == c
        w, b, m, s = fit_logistic(x, y, l2=l2) if family == "logistic" else fit_mass_mean(x, y)
        # fold each model's own standardisation into the shared one
        w_shared = w / s * scale
        b_shared = b - np.sum(w / s * (m - mean))
        ws.append(w_shared)
        bs.append(b_shared)
    return np.stack(ws), np.array(bs), mean, scale
