"""Split-conformal calibration with finite-sample guarantees (numpy only).

* :class:`MondrianConformal` — prediction sets over the probe's labels with class-conditional
  coverage: for exchangeable calibration and test data, ``P(y in set | y = k) >= 1 - alpha`` for
  every class ``k``. Nonconformity is ``s_k(x) = 1 - p_k(x)``; the threshold of class ``k`` is the
  ``ceil((n_k + 1)(1 - alpha))``-th smallest calibration score of that class. With the calibration
  scores kept (:meth:`MondrianConformal.fit`, :meth:`MondrianConformal.from_scores`) it also gives
  Mondrian p-values ``p_k(x) = (1 + #{i: y_i = k, s_i >= s_k(x)}) / (n_k + 1)`` (``P(p_y(x) <= t) <= t``
  for every ``t``) and sets at any ``alpha``: ``k`` is in the set iff ``p_k(x) > alpha``, which at the
  fitted ``alpha`` is exactly the threshold rule (both reduce to the same count; see :func:`_rank`).
Selective answering (risk control among answered items) lives in :mod:`guard.selective`.

Lifecycle: ``fit`` before ``predict``; calling out of order names the missing step.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

import numpy as np

from guard.errors import ConfigError

__all__ = ["MondrianConformal", "min_calibration_size"]


def min_calibration_size(alpha: float) -> int:
    """Fewest calibration points per class for a finite ``(1 - alpha)`` threshold."""
    return math.ceil(1.0 / alpha) - 1


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha!r} is invalid: "
                          "expected a miscoverage level strictly between 0 and 1, e.g. 0.1")


def _rank(n: int, alpha: float) -> int:
    """1-based rank of the class threshold among ``n`` sorted calibration scores (``> n``: no finite threshold).

    ``k`` is in the set iff ``s <= S_(rank)`` iff ``#{S_i >= s} >= n + 1 - rank`` iff ``p_k > alpha``:
    one integer rule serves the threshold and the p-value paths, so they never disagree by rounding.
    """
    return math.ceil((n + 1) * (1 - alpha))


class MondrianConformal:
    """Class-conditional split-conformal prediction sets.

    Example:
        >>> probs = np.array([[.9, .1]] * 9 + [[.2, .8]] * 9)
        >>> cp = MondrianConformal(alpha=0.2).fit(probs, np.array([0] * 9 + [1] * 9))
        >>> cp.predict_sets(np.array([[.95, .05]])).tolist()
        [[True, False]]
        >>> cp.p_values(np.array([[.95, .05]])).tolist()
        [[1.0, 0.1]]
    """

    def __init__(self, alpha: float) -> None:
        _check_alpha(alpha)
        self.alpha = alpha
        self.thresholds: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        #: per class, its calibration nonconformity scores sorted ascending (``None`` when rebuilt from thresholds)
        self.scores: list[np.ndarray] | None = None
        self._rows: _RowRule | None = None

    def fit(self, probs: np.ndarray, labels: np.ndarray) -> MondrianConformal:
        """Compute per-class thresholds from calibration probabilities ``(n, K)`` and labels ``(n,)``.

        Raises:
            ConfigError: a class has fewer than :func:`min_calibration_size` points, or shapes disagree.
        """
        probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
        if probs.ndim != 2 or labels.shape != (probs.shape[0],):
            raise ConfigError(f"expected probs (n, K) and labels (n,), got {probs.shape} and {labels.shape}")
        need = min_calibration_size(self.alpha)
        scores = [np.sort(1.0 - probs[labels == c, c]) for c in range(probs.shape[1])]
        for c, s in enumerate(scores):
            if s.size < need:
                raise ConfigError(
                    f"class {c} has {s.size} calibration points; alpha={self.alpha} needs at least {need} per class "
                    "(add calibration data or raise alpha)"
                )
        return self._set_scores(scores)

    def _set_scores(self, scores: list[np.ndarray]) -> MondrianConformal:
        thresholds = []
        for s in scores:
            rank = _rank(s.size, self.alpha)
            thresholds.append(s[rank - 1] if rank <= s.size else np.inf)
        self.scores = scores
        self.thresholds = np.asarray(thresholds, np.float64)
        self.counts = np.array([s.size for s in scores], np.int64)
        self._rows = _RowRule(self.thresholds, scores)
        return self

    @classmethod
    def from_scores(cls, alpha: float, scores: list[list[float]] | list[np.ndarray]) -> MondrianConformal:
        """Rebuild fitted sets from stored per-class calibration scores (thresholds recomputed from them).

        Raises:
            ConfigError: a class's scores are empty, unsorted, or outside ``[0, 1]``.
        """
        arrays = [np.asarray(s, np.float64) for s in scores]
        for c, s in enumerate(arrays):
            if s.ndim != 1 or s.size == 0 or np.any(np.diff(s) < 0) or s[0] < 0 or s[-1] > 1:
                raise ConfigError(
                    f"calibration scores of class {c} must be a non-empty ascending list in [0, 1] "
                    f"(nonconformity 1 - p), got {s.size} values; re-run `guard calibrate`"
                )
        return cls(alpha)._set_scores(arrays)

    def calibration_scores(self, decimals: int = 6) -> list[list[float]]:
        """Per-class sorted calibration scores, rounded for a manifest (what :meth:`from_scores` reads).

        Raises:
            ConfigError: not fitted, or rebuilt from thresholds only.
        """
        return [np.round(s, decimals).tolist() for s in self._require_scores()]

    @classmethod
    def from_thresholds(cls, alpha: float, thresholds: np.ndarray | list[float]) -> MondrianConformal:
        """Rebuild fitted sets from stored per-class thresholds (e.g. a probe manifest's)."""
        cp = cls(alpha)
        cp.thresholds = np.asarray(thresholds, np.float64)
        cp._rows = _RowRule(cp.thresholds, None)
        return cp

    def _require_fit(self) -> np.ndarray:
        if self.thresholds is None:
            raise ConfigError("MondrianConformal is not fitted: call fit(probs, labels) on calibration data first")
        return self.thresholds

    def _require_scores(self) -> list[np.ndarray]:
        self._require_fit()
        if self.scores is None:
            raise ConfigError(
                f"MondrianConformal was rebuilt from thresholds at alpha={self.alpha} only; p-values and other "
                "alphas need the calibration scores: fit(probs, labels) or from_scores(alpha, scores)"
            )
        return self.scores

    def _counts_at_least(self, probs: np.ndarray) -> np.ndarray:
        """``(m, K)``: per class, how many of its calibration scores are ``>=`` the test score ``1 - p_k``."""
        probs = np.atleast_2d(np.asarray(probs, np.float64))
        scores = self._require_scores()
        if probs.shape[1] != len(scores):
            raise ConfigError(f"probabilities have {probs.shape[1]} classes but the calibration has {len(scores)}")
        return np.stack([s.size - np.searchsorted(s, 1.0 - probs[:, c], side="left")
                         for c, s in enumerate(scores)], axis=1)

    def p_values(self, probs: np.ndarray) -> np.ndarray:
        """Mondrian conformal p-values ``(m, K)``, each in ``[1 / (n_k + 1), 1]``.

        Raises:
            ConfigError: not fitted, or rebuilt from thresholds only.
        """
        at_least = self._counts_at_least(probs)
        assert self.counts is not None  # set with the scores _counts_at_least required
        p: np.ndarray = (1.0 + at_least) / (1.0 + self.counts)
        return p

    def predict_sets(self, probs: np.ndarray, alpha: float | None = None) -> np.ndarray:
        """Boolean prediction sets ``(m, K)`` at ``alpha`` (default: the fitted one).

        At the fitted alpha, class ``k`` is in the set when ``1 - p_k <= threshold_k``; at another alpha,
        when its p-value exceeds ``alpha`` (the same rule, see :func:`_rank`).

        Raises:
            ConfigError: not fitted; ``alpha`` invalid; or another alpha without calibration scores.
        """
        if alpha is None or alpha == self.alpha:
            return (1.0 - np.asarray(probs, np.float64)) <= self._require_fit()
        _check_alpha(alpha)
        need = np.array([s.size + 1 - _rank(s.size, alpha) for s in self._require_scores()])
        return self._counts_at_least(probs) >= need

    def row_set(self, probs: Sequence[float], alpha: float | None = None) -> tuple[bool, ...]:
        """:meth:`predict_sets` of one row of probabilities in plain Python: the same float64
        comparisons, so the same set, without numpy's per-call cost (what a server deciding one
        sentence at a time needs).

        Raises:
            ConfigError: as :meth:`predict_sets`.
        """
        rows = self._require_rows()
        if alpha is None or alpha == self.alpha:
            return tuple(1.0 - p <= t for p, t in zip(probs, rows.thresholds, strict=True))
        _check_alpha(alpha)
        self._require_scores()
        return tuple(c >= k for c, k in zip(rows.counts_at_least(probs), rows.need(alpha), strict=True))

    def row_p_values(self, probs: Sequence[float]) -> tuple[float, ...]:
        """:meth:`p_values` of one row of probabilities in plain Python (the same numbers).

        Raises:
            ConfigError: as :meth:`p_values`.
        """
        rows = self._require_rows()
        self._require_scores()
        return tuple((1.0 + c) / (1.0 + len(s)) for c, s in zip(rows.counts_at_least(probs), rows.scores, strict=True))

    def _require_rows(self) -> _RowRule:
        self._require_fit()
        assert self._rows is not None  # set wherever the thresholds are
        return self._rows


class _RowRule:
    """A fitted :class:`MondrianConformal` as Python lists, for one row at a time (built once per fit)."""

    def __init__(self, thresholds: np.ndarray, scores: list[np.ndarray] | None) -> None:
        self.thresholds: list[float] = thresholds.tolist()
        self.scores: list[list[float]] = [s.tolist() for s in scores] if scores is not None else []
        self._need: dict[float, list[int]] = {}

    def counts_at_least(self, probs: Sequence[float]) -> list[int]:
        """Per class, how many of its calibration scores are ``>=`` ``1 - p``."""
        return [len(s) - bisect_left(s, 1.0 - p) for p, s in zip(probs, self.scores, strict=True)]

    def need(self, alpha: float) -> list[int]:
        """Per class, the count at which a label is in the set at ``alpha`` (cached, a few alphas)."""
        if (need := self._need.get(alpha)) is None:
            if len(self._need) >= 64:
                self._need.clear()
            need = self._need[alpha] = [len(s) + 1 - _rank(len(s), alpha) for s in self.scores]
        return need
