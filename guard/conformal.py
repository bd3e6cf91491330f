"""Split-conformal calibration with finite-sample guarantees (numpy only).

* :class:`MondrianConformal` — prediction sets over the probe's labels with class-conditional
  coverage: for exchangeable calibration and test data, ``P(y in set | y = k) >= 1 - alpha`` for
  every class ``k``. Nonconformity is ``1 - p_k``; the threshold of class ``k`` is the
  ``ceil((n_k + 1)(1 - alpha))``-th smallest calibration score of that class.
* :func:`selective_threshold` — Learn-then-Test over a fixed grid of confidence thresholds with
  exact binomial p-values and a Bonferroni correction: the returned threshold has, with
  probability ``>= 1 - delta`` over the calibration draw, a risk (error rate among answered
  items) ``<= alpha``. (Fixed-sequence testing from the most conservative threshold stops at once
  when few items are answered there, so it certifies nothing on small sets.)

Lifecycle: ``fit`` before ``predict``; calling out of order names the missing step.
"""

from __future__ import annotations

import math

import numpy as np

from guard.errors import ConfigError

__all__ = ["MondrianConformal", "selective_threshold", "min_calibration_size", "binomial_cdf"]


def min_calibration_size(alpha: float) -> int:
    """Fewest calibration points per class for a finite ``(1 - alpha)`` threshold."""
    return math.ceil(1.0 / alpha) - 1


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha!r} is invalid: expected a miscoverage level strictly between 0 and 1, e.g. 0.1")


class MondrianConformal:
    """Class-conditional split-conformal prediction sets.

    Example:
        >>> cp = MondrianConformal(alpha=0.2).fit(np.array([[.9, .1]] * 9 + [[.2, .8]] * 9), np.array([0] * 9 + [1] * 9))
        >>> cp.predict_sets(np.array([[.85, .15]])).tolist()
        [[True, False]]
    """

    def __init__(self, alpha: float) -> None:
        _check_alpha(alpha)
        self.alpha = alpha
        self.thresholds: np.ndarray | None = None
        self.counts: np.ndarray | None = None

    def fit(self, probs: np.ndarray, labels: np.ndarray) -> MondrianConformal:
        """Compute per-class thresholds from calibration probabilities ``(n, K)`` and labels ``(n,)``.

        Raises:
            ConfigError: a class has fewer than :func:`min_calibration_size` points, or shapes disagree.
        """
        probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
        if probs.ndim != 2 or labels.shape != (probs.shape[0],):
            raise ConfigError(f"expected probs (n, K) and labels (n,), got {probs.shape} and {labels.shape}")
        k = probs.shape[1]
        need = min_calibration_size(self.alpha)
        thresholds, counts = np.empty(k), np.zeros(k, np.int64)
        for c in range(k):
            scores = np.sort(1.0 - probs[labels == c, c])
            n = scores.size
            counts[c] = n
            if n < need:
                raise ConfigError(
                    f"class {c} has {n} calibration points; alpha={self.alpha} needs at least {need} per class "
                    "(add calibration data or raise alpha)"
                )
            rank = math.ceil((n + 1) * (1 - self.alpha))
            thresholds[c] = scores[rank - 1] if rank <= n else np.inf
        self.thresholds, self.counts = thresholds, counts
        return self

    @classmethod
    def from_thresholds(cls, alpha: float, thresholds: np.ndarray | list[float]) -> MondrianConformal:
        """Rebuild fitted sets from stored per-class thresholds (e.g. a probe manifest's)."""
        cp = cls(alpha)
        cp.thresholds = np.asarray(thresholds, np.float64)
        return cp

    def _require_fit(self) -> np.ndarray:
        if self.thresholds is None:
            raise ConfigError("MondrianConformal is not fitted: call fit(probs, labels) on calibration data first")
        return self.thresholds

    def predict_sets(self, probs: np.ndarray) -> np.ndarray:
        """Boolean prediction sets ``(m, K)``: class ``k`` is in the set when ``1 - p_k <= threshold_k``."""
        return (1.0 - np.asarray(probs, np.float64)) <= self._require_fit()


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= k)``, exact, in log space."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def selective_threshold(confidence: np.ndarray, correct: np.ndarray, alpha: float, delta: float = 0.1,
                        grid: int = 20) -> float:
    """Lowest confidence threshold whose selective risk is certified ``<= alpha`` with probability ``>= 1 - delta``.

    Args:
        confidence: ``(n,)`` confidences in ``[0, 1]`` on calibration items.
        correct: ``(n,)`` whether each calibration answer was right.
        alpha: tolerated error rate among answered items.
        delta: tolerated probability that the certificate is wrong.
        grid: thresholds tested are ``j / grid`` for ``j = 1 .. grid`` (fixed before seeing data).

    Returns:
        the threshold ``lam``: answer when ``confidence >= lam``; ``inf`` when none is certified (abstain on all).

    Raises:
        ConfigError: invalid ``alpha``/``delta``, confidences outside ``[0, 1]``, or mismatched shapes.
    """
    _check_alpha(alpha)
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta={delta!r} is invalid: expected a failure probability strictly between 0 and 1")
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ConfigError(f"confidence {confidence.shape} and correct {correct.shape} must be equal-length vectors")
    if confidence.size and (confidence.min() < 0 or confidence.max() > 1):
        raise ConfigError(f"confidences span [{confidence.min():.3g}, {confidence.max():.3g}]; expected probabilities in [0, 1]")
    best = math.inf
    for j in range(1, grid + 1):
        lam = j / grid
        answered = confidence >= lam
        n_answered = int(answered.sum())
        if n_answered == 0:
            continue
        n_err = int((~correct[answered]).sum())
        if binomial_cdf(n_err, n_answered, alpha) <= delta / grid:
            best = min(best, lam)
    return best
