"""Fitting the shift head and choosing ``beta`` on left-out domains (see :mod:`guard.shift`).

For every calibration domain ``D`` the chosen probe is refitted on the training split without ``D``, its
conformal sets calibrated on the calibration split without ``D``, and a domain classifier fitted on the
other domains; then ``D``'s statements are judged as serving would judge them. ``beta`` is the smallest
typicality threshold (of :data:`BETAS`) at which the confidently-wrong share stays at or below
:data:`TARGET_CONFIDENTLY_WRONG` on every left-out domain (the largest tried when none does); the same folds
give the report's per-domain verdict table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from calibration.families import fit_layer, layer_scores
from calibration.fit import fit_one_vs_rest, softmax
from guard.conformal import MondrianConformal
from guard.evaluation import auroc, macro_f1
from guard.shift import shift_of_columns

__all__ = ["BETAS", "TARGET_CONFIDENTLY_WRONG", "SHIFT_L2", "DomainHead", "FoldVerdicts", "fit_domain_head",
           "standardised_mean", "verdict_table", "lodo_verdicts", "choose_beta"]

BETAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2)
TARGET_CONFIDENTLY_WRONG = 0.10
#: ridge penalty of the domain classifier's one-vs-rest read-outs
SHIFT_L2 = 30.0


@dataclass(frozen=True)
class DomainHead:
    """A domain classifier on layer-averaged standardised rows ``z``: ``softmax(z @ weight.T + bias)``."""

    domains: tuple[str, ...]
    weight: np.ndarray  # (D, H)
    bias: np.ndarray  # (D,)

    def shift(self, z: np.ndarray) -> np.ndarray:
        """``1 - max p(domain)`` of rows ``z (n, H)``, as :func:`guard.shift.shift_of_columns` does in serving."""
        return shift_of_columns((np.asarray(z, np.float64) @ self.weight.T + self.bias)[:, None, :])


def standardised_mean(x: np.ndarray, idx: np.ndarray, window: tuple[int, ...],
                      fits: list[tuple[np.ndarray, ...]]) -> np.ndarray:
    """The rows the shift head reads: ``x[idx]`` at the window's sweep layers, standardised by each layer's fit
    (its last two tensors are ``mean`` and ``scale``), averaged over the layers."""
    out: np.ndarray = np.mean([(x[idx, li] - f[-2]) / f[-1] for li, f in zip(window, fits)], axis=0)
    return out


def fit_domain_head(z: np.ndarray, domains: np.ndarray) -> DomainHead:
    """One logistic read-out per domain over ``z (n, H)``, its standardisation folded in."""
    names = tuple(sorted(set(domains.tolist())))
    weight, bias, mean, scale = fit_one_vs_rest(z, np.searchsorted(names, domains), len(names), l2=SHIFT_L2)
    folded = weight / scale
    return DomainHead(names, folded, bias - folded @ mean)


@dataclass
class FoldVerdicts:
    """One left-out domain's statements as the fold's probe judged them."""

    domain: str
    index: np.ndarray  # statement indices
    probs: np.ndarray  # (n, k)
    sets: np.ndarray  # (n, k) bool at the calibration alpha
    typicality: np.ndarray  # (n,)


def verdict_table(probs: np.ndarray, sets: np.ndarray, shifted: np.ndarray, labels: np.ndarray,
                  negated: np.ndarray) -> dict[str, float]:
    """AUROC (all / negated true-false items), macro-F1, coverage (a shifted item counts as covered: it is
    reported uncertain), confidently-wrong share (one label, not shifted, wrong), confident share, shifted share."""
    n = np.arange(len(labels))
    single = (sets.sum(axis=1) == 1) & ~shifted
    tf, tfn = labels < 2, (labels < 2) & negated

    def tf_auroc(mask: np.ndarray) -> float:
        both = (labels[mask] == 0).any() and (labels[mask] == 1).any()
        return auroc(probs[mask, 0] - probs[mask, 1], labels[mask] == 0) if both else float("nan")

    return {"auroc": tf_auroc(tf), "auroc_negated": tf_auroc(tfn),
            "macro_f1": macro_f1(probs.argmax(axis=1), labels, probs.shape[1]),
            "coverage": float((sets[n, labels] | shifted).mean()),
            "confidently_wrong": float((single & ~sets[n, labels]).mean()), "confident": float(single.mean()),
            "shifted": float(shifted.mean()), "n": float(len(labels))}


def lodo_verdicts(x: np.ndarray, labels: np.ndarray, domains: np.ndarray, train: np.ndarray, cal: np.ndarray,
                  evaluate: np.ndarray, family: str, l2: float, window: tuple[int, ...], alpha: float,
                  seed: int = 0, progress: Callable[[str], None] | None = None) -> list[FoldVerdicts]:
    """Per domain of ``train``: the fold's verdicts on ``evaluate``'s statements of that domain.

    Args:
        x: ``(n, L, H)`` features at the sweep layers; ``window`` indexes them.
    """
    folds = []
    for name in sorted(set(domains[train].tolist())):
        tr, ca = train[domains[train] != name], cal[domains[cal] != name]
        held = evaluate[domains[evaluate] == name]
        if not len(held):
            continue
        fits = [fit_layer(family, x[tr, li], labels[tr], 3, l2, seed) for li in window]

        def probs(idx: np.ndarray, fits: list[tuple[np.ndarray, ...]] = fits) -> np.ndarray:
            return softmax(np.mean([layer_scores(family, x[idx, li], f) for li, f in zip(window, fits)], axis=0))

        head = fit_domain_head(standardised_mean(x, tr, window, fits), domains[tr])
        cp = MondrianConformal(alpha).fit(probs(ca), labels[ca])
        cal_shift = np.sort(head.shift(standardised_mean(x, ca, window, fits)))
        p = probs(held)
        held_shift = head.shift(standardised_mean(x, held, window, fits))
        above = len(cal_shift) - np.searchsorted(cal_shift, held_shift, side="left")
        folds.append(FoldVerdicts(name, held, p, cp.predict_sets(p), (1 + above) / (len(cal_shift) + 1)))
        if progress is not None:
            progress(name)
    return folds


def choose_beta(folds: list[FoldVerdicts], labels: np.ndarray, negated: np.ndarray
                ) -> tuple[float, dict[float, dict[str, float]]]:
    """The smallest :data:`BETAS` value whose worst left-out domain stays within the confidently-wrong target,
    with the worst and median numbers at every value."""
    summary = {}
    for beta in BETAS:
        rows = [verdict_table(f.probs, f.sets, f.typicality < beta, labels[f.index], negated[f.index])
                for f in folds]
        cw = np.array([r["confidently_wrong"] for r in rows])
        cov = np.array([r["coverage"] for r in rows])
        summary[beta] = {"confidently_wrong_worst": float(cw.max()), "confidently_wrong_median": float(np.median(cw)),
                         "coverage_worst": float(cov.min()), "coverage_median": float(np.median(cov))}
    ok = [b for b in BETAS if summary[b]["confidently_wrong_worst"] <= TARGET_CONFIDENTLY_WRONG]
    return (min(ok) if ok else BETAS[-1]), summary
