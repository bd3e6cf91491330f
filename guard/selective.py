"""Selective answering with a finite-sample guarantee: Learn-then-Test over confidence thresholds.

Answer an item when its confidence is at least ``lam``; abstain otherwise. :func:`selective_threshold`
picks the lowest ``lam`` on a fixed grid whose selective risk (error rate among answered items) is
certified ``<= alpha`` with probability ``>= 1 - delta`` over the calibration draw:

* for each grid threshold, the null hypothesis "risk > alpha" is tested with the exact binomial
  p-value ``P(Binomial(n_answered, alpha) <= n_errors)``;
* thresholds are tested in a fixed order, from the most conservative (highest) down, with the
  *fallback procedure*: each threshold owns ``delta / grid`` of the error budget, and a threshold
  that is certified passes its whole level on to the next one; a threshold that fails (typically
  the top ones, which answer too few items to certify anything) loses its share but does not end
  the search. The family-wise error stays ``<= delta`` under any dependence, and it certifies
  at least as much as testing every threshold at ``delta / grid`` (Bonferroni), without the
  plain fixed-sequence test's habit of stopping at the first sparsely populated threshold.

:class:`SelectiveCalibration` stores a calibration split's confidences and grades in an artefact's
manifest, so the threshold for any requested ``alpha`` can be recomputed at serving time.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from guard.errors import ConfigError

__all__ = ["binomial_cdf", "selective_threshold", "SelectiveCalibration", "ThresholdCache", "CertifiedDecision"]


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
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _check(alpha: float, delta: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha!r} is invalid: "
                          "expected a tolerated error rate strictly between 0 and 1 (e.g. 0.1)")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta={delta!r} is invalid: expected a failure probability strictly between 0 and 1")


def selective_threshold(confidence: np.ndarray, correct: np.ndarray, alpha: float, delta: float = 0.1,
                        grid: int = 20) -> float:
    """Lowest confidence threshold whose selective risk is certified ``<= alpha`` with probability ``>= 1 - delta``.

    Args:
        confidence: ``(n,)`` confidences in ``[0, 1]`` on calibration items.
        correct: ``(n,)`` whether each calibration answer was right.
        alpha: tolerated error rate among answered items.
        delta: tolerated probability that the certificate is wrong.
        grid: thresholds tested are ``j / grid`` for ``j = grid .. 1`` (fixed before seeing data).

    Returns:
        the threshold ``lam``: answer when ``confidence >= lam``; ``inf`` when none is certified (abstain on all).

    Raises:
        ConfigError: invalid ``alpha``/``delta``, confidences outside ``[0, 1]``, or mismatched shapes.
    """
    _check(alpha, delta)
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ConfigError(f"confidence {confidence.shape} and correct {correct.shape} must be equal-length vectors")
    if confidence.size and (confidence.min() < 0 or confidence.max() > 1):
        raise ConfigError(f"confidences span [{confidence.min():.3g}, {confidence.max():.3g}]; "
                          "expected probabilities in [0, 1]")
    best, carried = math.inf, 0.0
    for j in range(grid, 0, -1):
        lam = j / grid
        answered = confidence >= lam
        n_answered = int(answered.sum())
        level = carried + delta / grid
        p_value = binomial_cdf(int((~correct[answered]).sum()), n_answered, alpha) if n_answered else 1.0
        if p_value <= level:
            best, carried = lam, level
        else:
            carried = 0.0
    return best


class SelectiveCalibration(BaseModel):
    """A calibration split for selective answering, stored in an artefact's manifest.

    ``threshold`` is the certified threshold at the stored ``alpha`` (``None``: nothing could be
    certified, so the gate abstains on every item at that ``alpha``); :meth:`threshold_at` recomputes
    it for any other ``alpha`` from the stored split.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(gt=0.0, lt=1.0)
    delta: float = Field(gt=0.0, lt=1.0)
    method: Literal["ltt-fallback"] = "ltt-fallback"
    grid: int = Field(default=20, ge=1)
    #: the probe label whose probability is the confidence (e.g. ``"correct"``)
    label: str
    threshold: float | None
    confidences: list[float]
    correct: list[bool]

    @model_validator(mode="after")
    def _same_length(self) -> SelectiveCalibration:
        if len(self.confidences) != len(self.correct) or not self.confidences:
            raise ValueError(f"confidences ({len(self.confidences)}) and correct ({len(self.correct)}) must be "
                             "non-empty and of equal length")
        return self

    def threshold_at(self, alpha: float | None = None, delta: float | None = None) -> float:
        """The certified threshold for ``alpha`` (default: the stored one); ``inf`` when none is certified.

        Raises:
            ConfigError: ``alpha`` or ``delta`` outside ``(0, 1)``.
        """
        return selective_threshold(np.array(self.confidences), np.array(self.correct),
                                   self.alpha if alpha is None else alpha, self.delta if delta is None else delta,
                                   self.grid)

    @classmethod
    def fit(cls, confidence: np.ndarray, correct: np.ndarray, alpha: float, delta: float, label: str,
            grid: int = 20) -> SelectiveCalibration:
        """Certify a threshold on a calibration split and keep the split (rounded to 6 decimals)."""
        confidence = np.round(np.asarray(confidence, np.float64), 6)
        lam = selective_threshold(confidence, correct, alpha, delta, grid)
        return cls(alpha=alpha, delta=delta, grid=grid, label=label, threshold=lam if math.isfinite(lam) else None,
                   confidences=confidence.tolist(), correct=np.asarray(correct, bool).tolist())


class ThresholdCache:
    """A calibration's certified thresholds, computed once per requested ``alpha`` (at most 64 kept).

    Serving asks for the same few alphas over and over; each is a Learn-then-Test pass over the stored split.
    """

    def __init__(self, calibration: SelectiveCalibration) -> None:
        self.calibration = calibration
        self._thresholds: dict[float, float] = {}

    def at(self, alpha: float | None = None) -> float:
        """Certified threshold at ``alpha`` (default: the stored one; ``inf`` when none is certified)."""
        alpha = self.calibration.alpha if alpha is None else alpha
        if alpha not in self._thresholds:
            if len(self._thresholds) > 64:
                self._thresholds.clear()
            self._thresholds[alpha] = self.calibration.threshold_at(alpha)
        return self._thresholds[alpha]


class CertifiedDecision(BaseModel):
    """A decision to answer or not by a certified threshold (the gate's on a question, the answer check's on an
    answer)."""

    model_config = ConfigDict(frozen=True)

    p_correct: float
    alpha: float
    #: certified threshold at ``alpha`` (``None``: nothing certified there)
    threshold: float | None
    certified: bool
    answer: bool
