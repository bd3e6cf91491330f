"""Which statements train, calibrate and test a probe, and which are held out to measure generalisation.

* Whole facts go to one split (true, false and negated forms of a fact, in every wording, never straddle
  two splits), 60 / 20 / 20 by default.
* One template (wording) of every relation, drawn with the seed, is **held out**: its statements are
  neither trained nor calibrated on; those of test facts are tested, so the report can compare unseen
  wordings with seen ones on facts the probe never saw either.
* True/false statements of facts the model does not know (:mod:`calibration.knowledge`) leave the splits:
  the probe reads what the model believes, and there is no belief to read. They are reported apart.
* Negated statements are part of the mix unless ``negations=False``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibration.statements import LABELS, Statement

__all__ = ["DatasetSplits", "split_indices", "dataset_splits", "held_out_templates"]


def split_indices(labels: np.ndarray, seed: int, fractions: tuple[float, float] = (0.6, 0.2),
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Disjoint train / calibration / test indices.

    Without ``groups``: stratified by label. With ``groups``: whole groups (e.g. facts) go to one split,
    assigned in random order, so related items never straddle two splits.
    """
    rng = np.random.default_rng(seed)
    if groups is not None:
        uniq = rng.permutation(np.unique(groups))
        a, b = int(len(uniq) * fractions[0]), int(len(uniq) * (fractions[0] + fractions[1]))
        return tuple(np.flatnonzero(np.isin(groups, chunk)) for chunk in (uniq[:a], uniq[a:b], uniq[b:]))
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b = int(len(idx) * fractions[0]), int(len(idx) * (fractions[0] + fractions[1]))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def held_out_templates(statements: Sequence[Statement], seed: int) -> set[str]:
    """One template id per relation (of relations with at least three templates), drawn with ``seed``."""
    by_domain: dict[str, set[str]] = {}
    for s in statements:
        if s.template:
            by_domain.setdefault(s.domain, set()).add(s.template)
    rng = random.Random(seed)
    return {rng.choice(sorted(ts)) for _, ts in sorted(by_domain.items()) if len(ts) >= 3}


@dataclass(frozen=True)
class DatasetSplits:
    """Which statements train, calibrate and test a probe, and which were held out of all three."""

    train: np.ndarray
    cal: np.ndarray
    test: np.ndarray
    core: np.ndarray  # bool: eligible for the three splits
    facts: np.ndarray
    negated: np.ndarray
    is_unknown: np.ndarray  # bool: true/false statements of facts the model does not know
    #: bool: statements in a held-out template (tested on test facts, never trained or calibrated on)
    held_template: np.ndarray


def dataset_splits(statements: list[Statement], unknown: set[str], seed: int, negations: bool = True,
                   hold_templates: bool = True) -> DatasetSplits:
    """The splits :func:`calibration.pipeline.calibrate` uses, reproducible from the statements, the unknown
    facts and the seed."""
    labels = np.array([LABELS.index(s.label) for s in statements])
    facts = np.array([s.fact or s.text for s in statements])
    negated = np.array([s.negated for s in statements])
    held = held_out_templates(statements, seed) if hold_templates else set()
    held_template = np.array([s.template in held for s in statements])
    is_unknown = np.isin(facts, sorted(unknown)) & (labels < 2)
    core = ~is_unknown & (negations | ~negated)
    train, cal, test = (np.flatnonzero(core)[part] for part in split_indices(labels[core], seed, groups=facts[core]))
    train, cal = train[~held_template[train]], cal[~held_template[cal]]
    return DatasetSplits(train, cal, test, core, facts, negated, is_unknown, held_template)
