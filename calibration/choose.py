"""``guard calibrate``'s choice of family, regularisation and layers, by left-out domains and templates.

Two stages keep the cost linear in the sweep:

1. **Layers.** A logistic read-out per sweep layer, validated leave-one-domain-out on the training split;
   the layers are ranked by the median of their left-out-domain AUROCs.
2. **Candidates.** Every family and regularisation to try (:data:`calibration.families.DEFAULT_L2`), fitted
   per fold on the best :data:`TOP_LAYERS` layers only, and every window of consecutive sweep layers among
   them (up to :data:`MAX_WIDTH` wide): leave-one-domain-out *and* leave-one-template-out, ranked by
   :func:`calibration.selection.rank_candidates`.

The report shows the whole ranked table, the per-layer curve and the chosen candidate's per-domain AUROCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from calibration.families import DEFAULT_L2, fitter
from calibration.progress import Progress
from calibration.selection import Candidate, FoldScores, fold_scores, grouped_folds, leave_one_out, rank_candidates

__all__ = ["Selection", "select_probe", "TOP_LAYERS", "MAX_WIDTH"]

#: how many of the best sweep layers (stage 1) the candidates of stage 2 are built from
TOP_LAYERS = 3
#: widest window of consecutive sweep layers a probe may average
MAX_WIDTH = 3


@dataclass
class Selection:
    """What the selection measured and chose."""

    best: Candidate
    #: candidates best first, with ``lodo_worst``, ``lodo_median``, ``loto_worst``, ``loto_median``, ``objective``
    ranked: list[tuple[Candidate, dict[str, float]]]
    #: stage 1: per sweep layer, the median left-out-domain AUROC of a logistic read-out
    layer_auroc: dict[int, float]
    #: the chosen candidate's left-out-domain AUROC per domain (all / negated / plain statements)
    by_domain: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the chosen candidate's left-out-template AUROC per template fold
    by_template: dict[str, float] = field(default_factory=dict)


def _windows(top: Sequence[int], width: int | None) -> list[tuple[int, ...]]:
    """Windows of consecutive sweep indices inside ``top`` (all of one ``width`` when given)."""
    widths = [width] if width else list(range(1, MAX_WIDTH + 1))
    out = []
    for w in widths:
        for start in range(min(top), max(top) - w + 2):
            window = tuple(range(start, start + w))
            if set(window) <= set(top) or (width and len(top) < w):
                out.append(window)
    return sorted(set(out)) or [tuple(sorted(top))[:1]]


def select_probe(x: np.ndarray, labels: np.ndarray, domains: np.ndarray, template_index: np.ndarray,
                 negated: np.ndarray, train: np.ndarray, families: Sequence[str], seed: int = 0,
                 width: int | None = None, facts: np.ndarray | None = None) -> Selection:
    """Choose a candidate on the training split ``train`` (features ``x (n, L, H)`` at the sweep layers).

    Args:
        template_index: each statement's template number within its relation (leave-one-template-out folds
            leave out that number in every relation at once, and train on no other wording of a fact they test).
        facts: each statement's fact (default: its index). Data with one domain (or one wording) is validated on
            five folds of whole facts instead.
        families: the families to compare (e.g. ``("logistic", "mlp")``).
        width: a fixed window width (``None``: every width up to :data:`MAX_WIDTH`).
    """
    x = np.asarray(x)  # as collected (float32, maybe memory-mapped): each fit converts its own layer's rows
    facts = np.arange(len(labels)).astype(str) if facts is None else facts
    lodo = leave_one_out(domains, train, labels=labels)
    loto = leave_one_out(template_index, train, labels=labels, facts=facts)
    if len(lodo) < 2:  # a single domain (e.g. a user's file): folds of whole facts stand in
        lodo = grouped_folds(facts, train, 5, seed, labels)
    if len(loto) < 2:  # a single wording
        loto = lodo
    with Progress(len(lodo) * x.shape[1], "choosing layers (left-out domains)", unit="fits") as bar:
        stage1 = fold_scores(fitter("logistic", DEFAULT_L2["logistic"][0], seed), x, labels, lodo, range(x.shape[1]),
                             bar.update)
    layer_auroc = {li: float(np.median(list(stage1.window_auroc((li,), labels).values()) or [0.5]))
                   for li in range(x.shape[1])}
    top = sorted(sorted(layer_auroc, key=lambda li: -layer_auroc[li])[:TOP_LAYERS])
    top = sorted(set(range(min(top), max(top) + 1)) if max(top) - min(top) < MAX_WIDTH else top)
    results: dict[Candidate, tuple[dict[str, float], dict[str, float]]] = {}
    scores: dict[Candidate, tuple[FoldScores, FoldScores]] = {}
    settings = [(family, l2) for family in families for l2 in DEFAULT_L2[family]]
    with Progress(len(settings) * (len(lodo) + len(loto)) * len(top), "comparing families (left-out domains and "
                  "templates)", unit="fits") as bar:
        for family, l2 in settings:
            fit = fitter(family, l2, seed)
            by_domain = fold_scores(fit, x, labels, lodo, top, bar.update)
            by_template = fold_scores(fit, x, labels, loto, top, bar.update)
            for window in _windows(top, width):
                cand = Candidate(family, l2, window)
                results[cand] = (by_domain.window_auroc(window, labels), by_template.window_auroc(window, labels))
                scores[cand] = (by_domain, by_template)
    ranked = rank_candidates(results)
    best = ranked[0][0]
    domain_folds, _ = scores[best]
    per_domain = {name: {"all": auc} for name, auc in results[best][0].items()}
    for key, mask in (("negated", negated), ("plain", ~negated)):
        for name, auc in domain_folds.window_auroc(best.window, labels, mask).items():
            per_domain.setdefault(name, {})[key] = auc
    return Selection(best, ranked, layer_auroc, per_domain, results[best][1])
