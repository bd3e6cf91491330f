"""Probe families as fitters: one layer's features and labels in, a scoring function (and its tensors) out.

* ``logistic`` — one L2-regularised logistic read-out per label (one-vs-rest), on standardised features.
* ``mlp`` — one hidden ReLU layer and a softmax (:mod:`calibration.mlp`). A 135M model represents
  "subject and object match" and "the sentence is negated" as separate directions; whether the claim is
  true is their exclusive-or, which no single linear read-out computes and one hidden layer does.
* ``mass-mean`` — class-mean differences (one-vs-rest), the cheapest baseline.

:func:`fitter` gives the ``fit(x, labels) -> score(x) -> (m, k)`` closures the selection folds use;
:func:`fit_layer` gives the tensors of one layer of an exported :class:`guard.probe.Probe`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from calibration.fit import fit_one_vs_rest
from calibration.mlp import fit_mlp, mlp_scores
from guard.errors import ConfigError

__all__ = ["FAMILIES", "DEFAULT_L2", "MLP_HIDDEN", "MLP_ITERS", "fitter", "fit_layer", "layer_scores"]

FAMILIES = ("logistic", "mass-mean", "mlp", "mil")
#: the regularisation each family is tried at (logistic: ridge on standardised features; mlp: weight penalty on the
#: mean cross-entropy); ``guard calibrate`` picks among them by left-out-domain validation
DEFAULT_L2 = {"logistic": (30.0, 300.0), "mass-mean": (0.0,), "mlp": (3e-2, 1e-1), "mil": (1e-2,)}
MLP_HIDDEN = 32
MLP_ITERS = 400

Tensors = tuple[np.ndarray, ...]


def fit_layer(family: str, x: np.ndarray, labels: np.ndarray, n_classes: int, l2: float, seed: int = 0) -> Tensors:
    """One layer's tensors: ``(weight, bias, mean, scale)``, or ``(w1, b1, w2, b2, mean, scale)`` for ``mlp``.

    Raises:
        ConfigError: an unknown family, or a class without examples.
    """
    if family == "mlp":  # each family converts to float64 itself: one copy of a large layer, not two
        return fit_mlp(x, labels, n_classes, hidden=MLP_HIDDEN, l2=l2, iters=MLP_ITERS, seed=seed)
    if family in ("logistic", "mass-mean"):
        return fit_one_vs_rest(x, labels, n_classes, l2=l2, family=family)
    raise ConfigError(f"probe family {family!r} has no per-row fitter; expected one of logistic, mass-mean, mlp")


def layer_scores(family: str, x: np.ndarray, tensors: Tensors) -> np.ndarray:
    """Class scores ``(m, k)`` of rows ``x (m, H)`` under one layer's tensors (:func:`fit_layer`)."""
    if family == "mlp":
        return mlp_scores(x, *tensors)
    weight, bias, mean, scale = tensors
    out: np.ndarray = ((np.asarray(x, np.float64) - mean) / scale) @ weight.T + bias
    return out


def fitter(family: str, l2: float, seed: int = 0) -> Callable[[np.ndarray, np.ndarray],
                                                              Callable[[np.ndarray], np.ndarray]]:
    """``fit(x, labels) -> score``: fits over the classes present (``0 .. max label``) and scores new rows."""

    def fit(x: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        tensors = fit_layer(family, x, labels, int(labels.max()) + 1, l2, seed)
        return lambda rows: layer_scores(family, rows, tensors)

    return fit
