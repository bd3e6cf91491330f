"""Detection-quality metrics in numpy: AUROC, accuracy, macro-F1, ECE, and selective-answering risk/coverage."""

from __future__ import annotations

import numpy as np

from guard.errors import ConfigError

__all__ = ["auroc", "accuracy", "macro_f1", "expected_calibration_error", "verdict_metrics", "risk_coverage", "aurc",
           "selective_outcomes"]


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (ties count half).

    Raises:
        ConfigError: one class is absent.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"AUROC needs both classes; got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    i = 0
    while i < scores.size:  # average ranks over ties
        j = i
        while j + 1 < scores.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Share of predictions equal to the labels."""
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def macro_f1(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over ``n_classes`` classes."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    f1s = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (labels == c))
        fp, fn = np.sum((pred == c) & (labels != c)), np.sum((pred != c) & (labels == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class confidence over equal-width bins."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(np.mean(pred[mask] == labels[mask]) - conf[mask].mean())
    return float(ece)


def verdict_metrics(probs: np.ndarray, labels: np.ndarray, sets: np.ndarray | None = None) -> dict[str, float]:
    """The standard report of a true / false / neither probe on labelled items.

    Args:
        probs: ``(n, 3)`` class probabilities in the order true, false, neither.
        labels: ``(n,)`` class indices.
        sets: optional ``(n, 3)`` conformal prediction sets.

    Returns:
        ``auroc_true_vs_false`` (items labelled true or false, scored by ``p_true - p_false``; NaN when one
        of the two is absent), ``accuracy``, ``macro_f1``, ``ece``, ``n`` and, with ``sets``,
        ``coverage`` and ``mean_set_size``.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    tf = labels < 2
    has_both = bool((labels[tf] == 0).any() and (labels[tf] == 1).any())
    pred = probs.argmax(axis=1)
    out = {
        "auroc_true_vs_false": auroc(probs[tf, 0] - probs[tf, 1], labels[tf] == 0) if has_both else float("nan"),
        "accuracy": accuracy(pred, labels),
        "macro_f1": macro_f1(pred, labels, probs.shape[1]),
        "ece": expected_calibration_error(probs, labels),
        "n": float(len(labels)),
    }
    if sets is not None:
        out["coverage"] = float(sets[np.arange(len(labels)), labels].mean())
        out["mean_set_size"] = float(sets.sum(axis=1).mean())
    return out


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve of answering the most confident items first.

    Returns:
        ``(coverage, risk)``, each ``(n,)``: after answering the ``i + 1`` most confident items,
        the share answered and the error rate among them. Tied confidences are answered together
        (a threshold cannot separate them), so the curve is the same for any order of ties.

    Raises:
        ConfigError: shapes disagree or there are no items.
    """
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or confidence.size == 0:
        raise ConfigError(f"confidence {confidence.shape} and correct {correct.shape} "
                          "must be equal-length, non-empty vectors")
    order = np.argsort(-confidence, kind="mergesort")
    errors = np.cumsum(~correct[order]).astype(np.float64)
    n = np.arange(1, confidence.size + 1, dtype=np.float64)
    sorted_conf = confidence[order]
    # the last index of each run of tied confidences holds the run's cumulative counts
    last_of_run = np.r_[sorted_conf[1:] != sorted_conf[:-1], True]
    run_end = np.flatnonzero(last_of_run)
    fill = np.searchsorted(run_end, np.arange(confidence.size))
    errors, n = errors[run_end][fill], n[run_end][fill]
    return n / confidence.size, errors / n


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean selective risk over all coverages; lower is better)."""
    return float(risk_coverage(confidence, correct)[1].mean())


def selective_outcomes(answered: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Abstention-aware rates: ``correct``, ``hallucinated`` (answered and wrong), ``abstained``,
    plus ``coverage`` and ``risk`` (error rate among answered; NaN when nothing is answered)."""
    answered, correct = np.asarray(answered, bool), np.asarray(correct, bool)
    n = max(len(answered), 1)
    n_answered = int(answered.sum())
    wrong = int((answered & ~correct).sum())
    return {
        "correct": float((answered & correct).sum() / n),
        "hallucinated": wrong / n,
        "abstained": float((~answered).sum() / n),
        "coverage": n_answered / n,
        "risk": wrong / n_answered if n_answered else float("nan"),
    }
