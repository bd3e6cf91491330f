"""Probe families fitted on residual-stream features, each returning weights for a :class:`guard.probe.Probe`.

* :func:`fit_mass_mean` — the difference of class means (true − false), centred between them.
* :func:`fit_logistic` — L2-regularised logistic regression on standardised features.
* :func:`fit_one_vs_rest` — one logistic read-out per label (true / false / neither).

All work on ``(n, H)`` features of one layer and return ``(weight (k, H), bias (k,), mean (H,), scale (H,))``.

The logistic objective is the summed log-loss plus ``l2 / 2 * ||w||^2`` (no penalty on the bias), solved two
ways to the same optimum. Up to :data:`NEWTON_MAX_FEATURES` features, Newton's method: exact in a handful of
steps, but each builds and solves an ``(H + 1)^2`` Hessian (``O(n H^2 + H^3)``), a minute per layer at
``H = 4096``. Above, L-BFGS (scipy) with the analytic gradient, preconditioned along the features' top directions:
two ``(n, H)`` matrix-vector products per step and no ``H x H`` matrix; at :data:`LBFGS_GTOL` its coefficients agree
with Newton's to about ``1e-7`` relative. Measured on the default model's activations (``n = 3000``, three classes
one-vs-rest, one BLAS thread): Newton is faster up to 64 features, L-BFGS 1.4x at 128, 4x at 576 (the default
model), 13x at 1,728 and 17x at 4,032 (layers side by side); ``guard bench calibrate`` records ``H = 4096``.
"""

from __future__ import annotations

import numpy as np

from guard.errors import ConfigError
from guard.probabilities import softmax

__all__ = ["standardise", "fit_mass_mean", "fit_logistic", "fit_one_vs_rest", "sigmoid", "softmax",
           "NEWTON_MAX_FEATURES", "LBFGS_GTOL", "LBFGS_MAX_ITERS", "PRECONDITION_RANK"]

#: widest features Newton's method fits; wider ones go to L-BFGS (the crossover: see the module docstring)
NEWTON_MAX_FEATURES = 64
#: L-BFGS stops when every gradient component of the per-row objective is below this
LBFGS_GTOL = 1e-9
#: L-BFGS gives up after this many iterations (tens to a few hundred suffice at the probes' penalties)
LBFGS_MAX_ITERS = 5000
#: how many of the features' top directions L-BFGS is preconditioned along
PRECONDITION_RANK = 128


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


def _labels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` as booleans, once shapes and classes are right (``x`` is neither copied nor converted)."""
    y, shape = np.asarray(y, bool), np.shape(x)
    if len(shape) != 2 or y.shape != (shape[0],):
        raise ConfigError(f"expected features (n, H) and labels (n,), got {shape} and {y.shape}")
    if y.all() or not y.any():
        raise ConfigError(f"fitting needs both classes; got {int(y.sum())} positives of {y.size}")
    return y


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(x, y)
    return np.asarray(x, np.float64), y


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (constant features get scale 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0,
                 iters: int = 30) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Binary logistic regression, ``P(y) = sigmoid(((x - mean) / scale) @ w + b)``.

    Minimises the summed log-loss plus ``l2 / 2 * ||w||^2`` (the bias is not penalised): Newton's method up to
    :data:`NEWTON_MAX_FEATURES` features, L-BFGS above (see the module docstring).

    Args:
        iters: Newton iterations (the exact solver); L-BFGS runs to its tolerance.

    Returns:
        ``(w (H,), b, mean (H,), scale (H,))``.

    Raises:
        ConfigError: features and labels of mismatched shapes, or a single class.

    Example:
        >>> x = np.random.default_rng(0).standard_normal((50, 3))
        >>> w, b, mean, scale = fit_logistic(x, x[:, 0] > 0)
        >>> bool(w[0] > abs(w[1:]).max())
        True
    """
    y = _labels(x, y)
    z, mean, scale = _standardised(x)
    w, b = _fit_standardised(z, y, l2, iters)
    return w, b, mean, scale


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, scale)`` with ``z = (x - mean) / scale`` (:func:`standardise`'s statistics): the fit's one float64
    copy of ``x (n, H)``, centred and scaled in place (L-BFGS makes no other ``(n, H)`` array)."""
    z = np.array(x, dtype=np.float64)
    mean = z.mean(axis=0)
    z -= mean
    scale = np.sqrt(np.einsum("ij,ij->j", z, z) / max(len(z), 1))
    scale[scale < 1e-6] = 1.0
    z /= scale
    return z, mean, scale


def _fit_standardised(z: np.ndarray, y: np.ndarray, l2: float, iters: int,
                      directions: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """``(w, b)`` of the penalised logistic fit on standardised features ``z (n, H)``."""
    if z.shape[1] <= NEWTON_MAX_FEATURES:
        return _newton(z, y, l2, iters)
    return _lbfgs(z, y, l2, directions)


def _newton(z: np.ndarray, y: np.ndarray, l2: float, iters: int) -> tuple[np.ndarray, float]:
    """Newton's method on ``[z, 1]``: an ``(H + 1)^2`` Hessian per step, exact in a handful of steps."""
    z = np.hstack([z, np.ones((z.shape[0], 1))])  # (n, H + 1)
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
    return theta[:-1], float(theta[-1])


def _top_directions(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V (H, k), s (k,))``: approximate top right singular vectors and values of ``z``, for preconditioning.

    A randomised range finder with one power step: four passes over ``z`` as matrix products with ``k + 16``
    columns (seeded, so fits repeat exactly). Any orthonormal ``V`` keeps the fit exact; a good one makes it fast.
    """
    k = min(PRECONDITION_RANK, min(z.shape) // 4)
    if k < 8:
        return np.zeros((z.shape[1], 0)), np.zeros(0)
    probe = np.random.default_rng(0).standard_normal((z.shape[1], k + 16))
    basis = np.linalg.qr(z @ (z.T @ (z @ probe)))[0]  # (n, k + 16)
    _, values, vt = np.linalg.svd(basis.T @ z, full_matrices=False)
    return vt[:k].T.copy(), values[:k]


def _lbfgs(z: np.ndarray, y: np.ndarray, l2: float,
           directions: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """L-BFGS on the same objective, divided by ``n`` so the gradient tolerance does not depend on the row count.

    Each step costs two ``(n, H)`` matrix-vector products and no ``(H, H)`` matrix. Residual streams have a few
    directions of very large variance, along which the curvature dwarfs the penalty's; L-BFGS then needs many
    hundreds of steps. It runs in ``w = P u`` instead, where ``P`` shrinks the top directions of ``z``
    (:func:`_top_directions`, or ``directions`` computed once for several fits of the same ``z``) to the curvature
    of the rest: the same optimum, reached in a fraction of the steps.
    """
    try:
        from scipy.optimize import minimize
    except ImportError as exc:
        raise ConfigError(f"fitting a logistic probe on {z.shape[1]} features needs scipy, which is not installed; "
                          "install guard's engine extras: pip install 'guard[engine]'") from exc
    n, target = z.shape[0], y.astype(np.float64)
    v, values = directions if directions is not None else _top_directions(z)
    curvature = values**2 / 4 + l2  # the Hessian's along each direction at p = 1/2
    # (k,) each top direction scaled by sqrt(curvature of the k-th / its own) <= 1, never to 0 (P stays invertible)
    shrink = np.sqrt(curvature[-1] / curvature) - 1 if len(values) and curvature[-1] > 0 else np.zeros(len(values))

    def precondition(u: np.ndarray) -> np.ndarray:  # P is symmetric: it maps u to w and gradients in w to u
        out: np.ndarray = u + v @ (shrink * (v.T @ u))
        return out

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = precondition(theta[:-1]), theta[-1]
        s = z @ w + b  # (n,)
        loss = np.logaddexp(0.0, s).sum() - target @ s + 0.5 * l2 * (w @ w)
        r = sigmoid(s) - target
        grad = np.empty_like(theta)
        grad[:-1] = precondition(z.T @ r + l2 * w)
        grad[-1] = r.sum()
        return float(loss) / n, grad / n

    res = minimize(objective, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": LBFGS_MAX_ITERS, "maxcor": 20, "ftol": 0.0, "gtol": LBFGS_GTOL})
    return precondition(res.x[:-1]), float(res.x[-1])


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
    if family == "logistic":
        z, mean, scale = _standardised(x)  # shared by every class's fit
        directions = _top_directions(z) if z.shape[1] > NEWTON_MAX_FEATURES else None
    else:
        x = np.asarray(x, np.float64)
        mean, scale = standardise(x)
    ws, bs = [], []
    for c in range(n_classes):
        y = np.asarray(labels) == c
        if family == "logistic":
            w, b = _fit_standardised(z, _labels(z, y), l2, 30, directions)
        else:
            # fold the model's own standardisation into the shared one
            wm, bm, m, s = fit_mass_mean(x, y)
            w, b = wm / s * scale, bm - np.sum(wm / s * (m - mean))
        ws.append(w)
        bs.append(b)
    return np.stack(ws), np.array(bs), mean, scale
