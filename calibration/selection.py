"""Choosing a probe by how it generalises: leave-one-domain-out and leave-one-template-out validation.

A probe that fits its training mix can still be wrong on the next relation or wording. So ``guard
calibrate`` does not pick layers, family and regularisation by fit: for each candidate it trains on all
domains (or templates) but one and scores the one left out, then keeps the candidate whose *worst* and
*median* left-out true-vs-false AUROC are best. A window of layers is scored by averaging its layers'
class scores (exactly what the probe does), so each layer is fitted once per fold.

The ranking score of an item is ``score_true - score_false`` of the layer-averaged scores, i.e.
``log p(true) / p(false)`` of the probe's softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from guard.evaluation import auroc

__all__ = ["Fold", "Candidate", "FoldScores", "leave_one_out", "grouped_folds", "fold_scores", "rank_candidates",
           "transfer_matrix", "MIN_PER_CLASS"]

#: fewest true and fewest false items a left-out group needs to be scored
MIN_PER_CLASS = 4

#: ``fit(x_train (n, H), labels (n,)) -> score(x (m, H)) -> class scores (m, k)``
Fitter = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class Fold:
    """Train on ``train``, score ``test`` (the left-out group ``name``)."""

    name: str
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Candidate:
    """One probe configuration: a family (and its regularisation) over a window of sweep layers."""

    family: str
    l2: float
    window: tuple[int, ...]  # indices into the sweep

    def label(self, sweep: Sequence[int]) -> str:
        """A readable name, e.g. ``mlp l2=0.03 layers 14-18``."""
        layers = [sweep[i] for i in self.window]
        span = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
        return f"{self.family} l2={self.l2:g} layers {span}"


def _scorable(labels: np.ndarray) -> bool:
    return min(int((labels == 0).sum()), int((labels == 1).sum())) >= MIN_PER_CLASS


def leave_one_out(groups: np.ndarray, train: np.ndarray, test: np.ndarray | None = None,
                  labels: np.ndarray | None = None, facts: np.ndarray | None = None) -> list[Fold]:
    """One fold per group: train on ``train`` outside the group, test on ``test`` (default ``train``) inside it.

    With ``labels``, groups whose test part lacks :data:`MIN_PER_CLASS` true and false items, or whose training
    part lacks a class its test part has, are skipped. With ``facts``, a fold's training part also drops every
    statement of a fact it tests (another wording of the same fact would leak the answer).
    """
    test = train if test is None else test
    folds = []
    for g in sorted(set(groups[test].tolist())):
        held = test[groups[test] == g]
        rest = train[groups[train] != g]
        if facts is not None:
            rest = rest[~np.isin(facts[rest], facts[held])]
        if labels is not None and (not _scorable(labels[held]) or not set(labels[held].tolist()) <= set(
                labels[rest].tolist())):
            continue
        folds.append(Fold(str(g), rest, held))
    return folds


def grouped_folds(groups: np.ndarray, train: np.ndarray, k: int, seed: int, labels: np.ndarray) -> list[Fold]:
    """``k`` folds of whole groups (e.g. facts), for data with a single domain or wording."""
    rng = np.random.default_rng(seed)
    uniq = rng.permutation(np.unique(groups[train]))
    fold_of = {g: i % k for i, g in enumerate(uniq.tolist())}
    assignment = np.full(len(groups), "", dtype=object)  # indexed like ``groups``: ``train`` holds absolute indices
    assignment[train] = [f"fold {fold_of[g]}" for g in groups[train].tolist()]
    return leave_one_out(assignment.astype(str), train, labels=labels) if len(train) else []


@dataclass
class FoldScores:
    """Class scores ``(n_test, k)`` of every fold's test items, per sweep layer (``scores[fold][layer]``)."""

    folds: list[Fold]
    scores: list[dict[int, np.ndarray]]

    def window_auroc(self, window: tuple[int, ...], labels: np.ndarray, mask: np.ndarray | None = None
                     ) -> dict[str, float]:
        """Per fold: true-vs-false AUROC of the window's averaged scores on the fold's true/false test items
        (restricted to ``mask`` when given; folds left without both classes are skipped)."""
        out = {}
        for fold, per_layer in zip(self.folds, self.scores):
            mean = np.mean([per_layer[i] for i in window], axis=0)
            y = labels[fold.test]
            keep = (y < 2) & (mask[fold.test] if mask is not None else True)
            if _scorable(y[keep]):
                out[fold.name] = auroc(mean[keep, 0] - mean[keep, 1], y[keep] == 0)
        return out


def fold_scores(fit: Fitter, features: np.ndarray, labels: np.ndarray, folds: list[Fold],
                layers: Sequence[int], tick: Callable[[], None] | None = None) -> FoldScores:
    """Fit ``fit`` once per fold and sweep layer (``features (n, L, H)``); keep the test items' class scores.

    ``tick`` is called after each fit (a progress bar's step).
    """
    scores = []
    for fold in folds:
        per_layer = {}
        for li in layers:
            score = fit(features[fold.train, li], labels[fold.train])
            per_layer[li] = score(features[fold.test, li])
            if tick is not None:
                tick()
        scores.append(per_layer)
    return FoldScores(folds, scores)


def rank_candidates(results: dict[Candidate, tuple[dict[str, float], dict[str, float]]]
                    ) -> list[tuple[Candidate, dict[str, float]]]:
    """Candidates best first by ``(worst + median left-out-domain AUROC) / 2 + median left-out-template AUROC / 2``
    (each rescaled to [0, 1] weight), with the summary numbers of each.

    Args:
        results: per candidate, ``(per-domain AUROC, per-template AUROC)`` of its left-out folds.
    """
    rows = []
    for cand, (by_domain, by_template) in results.items():
        d = np.array(list(by_domain.values()) or [0.5])
        t = np.array(list(by_template.values()) or [0.5])
        summary = {"lodo_worst": float(d.min()), "lodo_median": float(np.median(d)),
                   "loto_worst": float(t.min()), "loto_median": float(np.median(t))}
        summary["objective"] = (summary["lodo_worst"] + summary["lodo_median"] + summary["loto_median"]) / 3
        rows.append((cand, summary))
    rows.sort(key=lambda r: -r[1]["objective"])
    return rows


def transfer_matrix(fit: Fitter, x: np.ndarray, labels: np.ndarray, domains: np.ndarray, train: np.ndarray,
                    held_out: np.ndarray) -> dict[str, dict[str, float]]:
    """``auroc[a][b]``: a probe fitted on domain ``a``'s training items, scored on domain ``b``'s held-out items.

    Args:
        x: ``(n, H)`` features at one layer; ``labels`` over all three classes (the fit sees every class
            domain ``a`` has; the AUROC reads true vs false).
    """
    names = [d for d in sorted(set(domains.tolist()))
             if _scorable(labels[train[domains[train] == d]]) and _scorable(labels[held_out[domains[held_out] == d]])]
    grid: dict[str, dict[str, float]] = {}
    for a in names:
        fit_idx = train[(domains[train] == a) & (labels[train] < 2)]
        score = fit(x[fit_idx], labels[fit_idx])
        row = {}
        for b in names:
            idx = held_out[(domains[held_out] == b) & (labels[held_out] < 2)]
            s = score(x[idx])
            row[b] = auroc(s[:, 0] - s[:, 1], labels[idx] == 0)
        grid[a] = row
    return grid
