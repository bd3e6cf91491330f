"""Selective answering, evaluated: risk-coverage, AURC and the certified threshold over many random splits.

For a confidence signal (the answer probe's ``p(true)``, the pre-generation gate's ``p(correct)``,
or the baseline ``exp(mean token log-probability)``) and graded answers, :func:`selective_report`
repeats, over ``splits`` random halvings of the items: certify a threshold on one half
(:func:`guard.selective.selective_threshold`, error among answered ``<= alpha`` with probability
``>= 1 - delta``), apply it to the other half, and record coverage, realised risk and the
abstention-aware outcome rates. The share of splits whose realised risk exceeds ``alpha`` shows the
guarantee at work (it is a statement about the expected risk, so a finite test half can exceed
``alpha`` by chance somewhat more often than ``delta``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from guard.errors import ConfigError
from guard.evaluation import aurc, auroc, risk_coverage, selective_outcomes
from guard.selective import selective_threshold

__all__ = ["selective_report", "split_outcomes", "curve_points"]


def curve_points(confidence: np.ndarray, correct: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """The risk-coverage curve, thinned to at most ``max_points`` points (for plots and JSON)."""
    coverage, risk = risk_coverage(confidence, correct)
    keep = np.unique(np.linspace(0, len(coverage) - 1, min(max_points, len(coverage))).astype(int))
    return {"coverage": coverage[keep].round(5).tolist(), "risk": risk[keep].round(5).tolist()}


def split_outcomes(confidence: np.ndarray, correct: np.ndarray, alpha: float, delta: float = 0.1,
                   splits: int = 200, seed: int = 0, cal_fraction: float = 0.5) -> list[tuple[bool, dict[str, float]]]:
    """Per random split: whether a threshold was certified on the calibration part, and the test part's
    :func:`guard.evaluation.selective_outcomes` under it (the raw material of :func:`selective_report`)."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    rng = np.random.default_rng(seed)
    n_cal = int(round(confidence.size * cal_fraction))
    rows = []
    for _ in range(splits):
        idx = rng.permutation(confidence.size)
        cal, test = idx[:n_cal], idx[n_cal:]
        lam = selective_threshold(confidence[cal], correct[cal], alpha, delta)
        rows.append((bool(np.isfinite(lam)), selective_outcomes(confidence[test] >= lam, correct[test])))
    return rows


def selective_report(confidence: np.ndarray, correct: np.ndarray, alpha: float, delta: float = 0.1,
                     splits: int = 200, seed: int = 0, cal_fraction: float = 0.5) -> dict[str, Any]:
    """Risk/coverage of selective answering with a certified threshold, averaged over random splits.

    Args:
        confidence: ``(n,)`` in ``[0, 1]``; higher means more likely correct.
        correct: ``(n,)`` graded answers.

    Returns:
        ``auroc`` (confidence vs correctness), ``aurc``, ``alpha``, ``delta``, ``splits``, and means over
        splits of ``coverage``, ``risk`` (over splits that answered anything), ``correct``, ``hallucinated``,
        ``abstained``; ``certified`` (share of splits where a threshold was certified), ``violation_rate``
        (share of all splits whose realised risk exceeds ``alpha``; a split that answers nothing has none:
        this is the probability Learn-then-Test bounds by ``delta``), ``violation_rate_answering`` (the same
        share among splits that answered anything), and ``curve`` (risk-coverage points).

    Raises:
        ConfigError: fewer than 4 items or mismatched shapes.
    """
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or confidence.size < 4:
        raise ConfigError(f"selective evaluation needs at least 4 graded items; got confidence {confidence.shape}, "
                          f"correct {correct.shape}")
    rows = split_outcomes(confidence, correct, alpha, delta, splits, seed, cal_fraction)
    answering = [o["risk"] for _, o in rows if o["coverage"] > 0]
    both = bool(correct.any() and (~correct).any())
    return {
        "n": int(confidence.size),
        "accuracy": float(correct.mean()),
        "auroc": auroc(confidence, correct) if both else float("nan"),
        "aurc": aurc(confidence, correct),
        "alpha": alpha,
        "delta": delta,
        "splits": splits,
        "certified": float(np.mean([c for c, _ in rows])),
        "coverage": float(np.mean([o["coverage"] for _, o in rows])),
        "risk": float(np.mean(answering)) if answering else float("nan"),
        "violation_rate": float(np.sum([r > alpha for r in answering]) / len(rows)),
        "violation_rate_answering": float(np.mean([r > alpha for r in answering])) if answering else 0.0,
        **{k: float(np.mean([o[k] for _, o in rows])) for k in ("correct", "hallucinated", "abstained")},
        "curve": curve_points(confidence, correct),
    }
