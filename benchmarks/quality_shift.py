"""``guard bench quality``'s generalisation part: left-out domains and templates, and verdicts under shift.

* ``generalisation``: true-vs-false AUROC of a logistic read-out at one layer, trained on every domain (or
  template number) but one and scored on the one left out — the leave-one-domain-out and
  leave-one-template-out rows of the selection ``guard calibrate`` makes, on the bench's statements;
* ``verdicts``: for each probe given (``--probe`` repeated: before and after), its verdict table per domain
  on the test split and on the hand-written held-out topics no probe trains on
  (:mod:`calibration.holdout`): coverage (a statement reported uncertain counts as covered),
  confidently-wrong share, confident share, shifted share — numbers from the probe's numpy reference on the
  captured rows, which the engine equals (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.families import DEFAULT_L2, fitter
from calibration.selection import leave_one_out
from calibration.shift_fit import verdict_table
from calibration.statements import LABELS, Statement
from guard.evaluation import auroc
from guard.probe import Probe
from guard.shift import shift_of_columns

__all__ = ["generalisation", "probe_verdicts", "probe_rows", "verdict_lines", "verdicts_for"]


def generalisation(x: np.ndarray, labels: np.ndarray, domains: np.ndarray, template_index: np.ndarray,
                   train: np.ndarray, facts: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """``{"lodo": {domain: AUROC}, "loto": {template number: AUROC}}`` at one layer (``x (n, H)``); a template fold
    trains on no other wording of a fact it tests (``facts``)."""
    fit = fitter("logistic", DEFAULT_L2["logistic"][0])
    out: dict[str, dict[str, float]] = {}
    for name, groups, same in (("lodo", domains, None), ("loto", template_index.astype(str), facts)):
        rows = {}
        for fold in leave_one_out(groups, train, labels=labels, facts=same):
            score = fit(x[fold.train], labels[fold.train])
            tf = fold.test[labels[fold.test] < 2]
            s = score(x[tf])
            rows[fold.name] = auroc(s[:, 0] - s[:, 1], labels[tf] == 0)
        out[name] = rows
    return out


def probe_verdicts(probe: Probe, rows: np.ndarray, statements: Sequence[Statement], idx: np.ndarray
                   ) -> dict[str, dict[str, float]]:
    """Per domain (and ``all``) of ``statements[idx]``: the probe's verdict table at its calibrated alpha.

    Args:
        rows: ``(n, L, H)`` captured rows at the probe's layers, for every statement.
    """
    sets_rule = probe.conformal()
    if sets_rule is None or tuple(probe.labels) != LABELS:
        return {}
    probs = probe.probabilities(probe.score(rows[idx]))
    sets = sets_rule.predict_sets(probs)
    shifted = np.zeros(len(idx), bool)
    if probe.manifest.shift is not None:
        values = shift_of_columns(probe.shift_columns(rows[idx]))
        shifted = np.array([probe.manifest.shift.shifted(float(v)) for v in values], bool)
    labels = np.array([LABELS.index(statements[i].label) for i in idx])
    negated = np.array([statements[i].negated for i in idx])
    domains = np.array([statements[i].domain for i in idx])
    out = {"all": verdict_table(probs, sets, shifted, labels, negated)}
    for d in sorted(set(domains.tolist())):
        m = domains == d
        out[d] = verdict_table(probs[m], sets[m], shifted[m], labels[m], negated[m])
    return out


def verdict_lines(name: str, table: dict[str, dict[str, float]]) -> list[str]:
    """Summary lines: the probe's ``all`` row and its worst domain."""
    if not table:
        return []
    a = table["all"]
    domains = {d: r for d, r in table.items() if d != "all"}
    worst = max(domains, key=lambda d: domains[d]["confidently_wrong"]) if domains else "all"
    return [f"  {name}: coverage {a['coverage']:.3f}, confidently wrong {a['confidently_wrong']:.3f}, confident "
            f"{a['confident']:.3f}, shifted {a['shifted']:.3f}; worst domain {worst}: confidently wrong "
            f"{table[worst]['confidently_wrong']:.3f}, coverage {table[worst]['coverage']:.3f}"]


def probe_rows(feats: np.ndarray, layers: Sequence[int], probe: Probe) -> np.ndarray | None:
    """``(n, L_probe, H)`` rows at the probe's layers from features at ``layers`` (``None``: not all captured)."""
    if not set(probe.layers) <= set(layers):
        return None
    return feats[:, [list(layers).index(layer) for layer in probe.layers]]


def verdicts_for(probes: dict[str, Probe], feats: np.ndarray, layers: Sequence[int],
                 statements: Sequence[Statement], idx: np.ndarray) -> dict[str, Any]:
    """:func:`probe_verdicts` of every probe whose layers were captured."""
    out = {}
    for name, probe in probes.items():
        rows = probe_rows(feats, layers, probe)
        if rows is not None:
            out[name] = probe_verdicts(probe, rows, statements, idx)
    return out
