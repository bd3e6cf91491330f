"""A small MLP probe family, for models whose residual stream is not linearly separable by label.

One hidden ReLU layer of ``m`` units over standardised features, softmax over ``k`` classes::

    score = relu(((x - mean) / scale) @ w1.T + b1) @ w2.T + b2        # (k,)

trained by full-batch Adam on the L2-regularised softmax cross-entropy from a seeded initialisation,
so the same data and seed give the same probe. The result is the tensor set of a
``head="mlp"`` :class:`guard.probe.Probe` layer (``w2``/``b2`` are its ``weight``/``bias``), which the
engine scores with two ``addmm`` calls per hooked layer.
"""

from __future__ import annotations

import numpy as np

from calibration.fit import softmax, standardise
from guard.errors import ConfigError

__all__ = ["fit_mlp", "mlp_scores"]

_BETAS = (0.9, 0.999)
_EPS = 1e-8


def mlp_scores(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
               mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Class scores ``(n, k)`` of raw features ``x (n, H)`` under one fitted MLP (the tuple :func:`fit_mlp` returns).

    Example:
        >>> x = np.random.default_rng(0).standard_normal((40, 3))
        >>> mlp_scores(x, *fit_mlp(x, (x[:, 0] > 0).astype(int), 2, hidden=4, iters=5)).shape
        (40, 2)
    """
    z = (np.asarray(x, np.float64) - mean) / scale  # (n, H)
    scores: np.ndarray = np.maximum(z @ w1.T + b1, 0.0) @ w2.T + b2
    return scores


def _check(x: np.ndarray, labels: np.ndarray, n_classes: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    x, labels = np.asarray(x, np.float64), np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ConfigError(f"expected features (n, H) and labels (n,), got {x.shape} and {labels.shape}")
    if hidden < 1:
        raise ConfigError(f"an MLP probe needs hidden >= 1 units, got {hidden}")
    counts = np.bincount(labels.astype(int), minlength=n_classes) if labels.size and labels.min() >= 0 else None
    if counts is None or len(counts) != n_classes or (counts == 0).any():
        raise ConfigError(f"fit_mlp needs labels in 0..{n_classes - 1} with every class present; "
                          f"got counts {None if counts is None else counts.tolist()}")
    return x, labels.astype(int)


def fit_mlp(x: np.ndarray, labels: np.ndarray, n_classes: int, hidden: int = 32, l2: float = 1e-2,
            iters: int = 500, lr: float = 1e-2, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit a one-hidden-layer softmax MLP on standardised features.

    Args:
        x: ``(n, H)`` features of one layer.
        labels: ``(n,)`` class indices in ``0..n_classes - 1``; every class must occur.
        n_classes: ``k``, the number of outputs.
        hidden: ``m``, hidden ReLU units.
        l2: penalty ``l2 / 2 * (|w1|^2 + |w2|^2)`` added to the *mean* cross-entropy (biases are free).
        iters: full-batch Adam steps.
        lr: Adam step size.
        seed: seeds the initialisation (He-normal ``w1``, small ``w2``).

    Returns:
        ``(w1 (m, H), b1 (m,), w2 (k, m), b2 (k,), mean (H,), scale (H,))``; ``softmax`` of
        :func:`mlp_scores` gives class probabilities.

    Raises:
        ConfigError: shapes disagree, ``hidden < 1``, or a class has no examples.
    """
    x, labels = _check(x, labels, n_classes, hidden)
    mean, scale = standardise(x)
    z = (x - mean) / scale  # (n, H)
    n, h = z.shape
    onehot = np.eye(n_classes)[labels]  # (n, k)
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((hidden, h)) * np.sqrt(2.0 / h), np.full(hidden, 0.01),
              rng.standard_normal((n_classes, hidden)) * np.sqrt(1.0 / hidden), np.log(onehot.mean(axis=0))]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    for step in range(1, iters + 1):
        grads = _gradients(params, z, onehot, l2)
        for p, g, (m1, m2) in zip(params, grads, moments):
            m1 += (1 - _BETAS[0]) * (g - m1)
            m2 += (1 - _BETAS[1]) * (g * g - m2)
            p -= lr * (m1 / (1 - _BETAS[0] ** step)) / (np.sqrt(m2 / (1 - _BETAS[1] ** step)) + _EPS)
    w1, b1, w2, b2 = params
    return w1, b1, w2, b2, mean, scale


def _gradients(params: list[np.ndarray], z: np.ndarray, onehot: np.ndarray, l2: float) -> list[np.ndarray]:
    """Gradients of mean softmax cross-entropy + ``l2 / 2 * (|w1|^2 + |w2|^2)`` w.r.t. ``(w1, b1, w2, b2)``."""
    w1, b1, w2, b2 = params
    pre = z @ w1.T + b1  # (n, m)
    act = np.maximum(pre, 0.0)
    d_scores = (softmax(act @ w2.T + b2) - onehot) / len(z)  # (n, k)
    d_pre = (d_scores @ w2) * (pre > 0)  # (n, m)
    return [d_pre.T @ z + l2 * w1, d_pre.sum(axis=0), d_scores.T @ act + l2 * w2, d_scores.sum(axis=0)]
