"""The pre-generation gate's scope, fitted and measured: where it decides, and how well it ranks there.

The on-policy gate (:mod:`calibration.answer_gate`) guesses from the prompt's last row whether the model will
answer right. :func:`scope_report` measures the two halves of :mod:`guard.scope`'s bargain, leave-one-relation-out:

* **left-out relations** — with the scope fitted on the other relations' questions, the share of the left-out
  relation's questions the gate would still decide on (``in_scope``), and its AUROC on those (``auroc_in_scope``;
  ``None`` when fewer than both grades are there). The gate is trusted where that share is 0 or that AUROC is
  above chance; ``trusted_everywhere`` says whether it is on every relation;
* **new facts of calibrated relations** — the gate's AUROC when the facts asked about are left out of its fit
  (five folds grouped by fact), per relation and pooled: how well it ranks where it does decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from guard.evaluation import auroc
from guard.scope import QuestionScope

__all__ = ["FACT_FOLDS", "fact_folds", "scope_of", "scope_report"]

#: folds of the new-facts measurement (grouped by fact, so a fact's wordings stay together)
FACT_FOLDS = 5


def scope_of(templates: Sequence[str], questions: Sequence[str], domains: Sequence[str]) -> QuestionScope:
    """The scope of calibration questions (a question without a template is grouped by its relation)."""
    return QuestionScope.of((t or f"{d}/?", q) for t, q, d in zip(templates, questions, domains))


def fact_folds(facts: Sequence[str], folds: int = FACT_FOLDS, seed: int = 0) -> np.ndarray:
    """A fold number per answer, the same for every answer on one fact (an empty fact is its own)."""
    keys = [f or f"#{i}" for i, f in enumerate(facts)]
    unique = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {k: int(order[i] % folds) for i, k in enumerate(unique)}
    return np.array([fold_of[k] for k in keys])


def _auroc(signal: np.ndarray, correct: np.ndarray) -> float | None:
    return float(auroc(signal, correct)) if correct.any() and not correct.all() else None


def scope_report(templates: Sequence[str], questions: Sequence[str], domains: np.ndarray, gate_lodo: np.ndarray,
                 gate_new_facts: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """The scope's report (see the module): ``gate_lodo`` are the gate's left-out-relation logits,
    ``gate_new_facts`` its logits with the facts left out."""
    left_out: dict[str, dict[str, float | None]] = {}
    for domain in sorted(set(domains.tolist())):
        rest = np.flatnonzero(domains != domain)
        scope = scope_of([templates[i] for i in rest], [questions[i] for i in rest], [domains[i] for i in rest])
        held = np.flatnonzero(domains == domain)
        inside = held[[scope.covers(questions[i]) for i in held]]
        left_out[domain] = {"in_scope": len(inside) / len(held),
                            "auroc_in_scope": _auroc(gate_lodo[inside], correct[inside]) if len(inside) else None,
                            "auroc_all": _auroc(gate_lodo[held], correct[held])}
    trusted = all(r["in_scope"] == 0 or (r["auroc_in_scope"] is not None and r["auroc_in_scope"] > 0.5)
                  for r in left_out.values())
    per_relation = {d: _auroc(gate_new_facts[domains == d], correct[domains == d]) for d in left_out}
    known = [v for v in per_relation.values() if v is not None]
    full = scope_of(templates, questions, list(domains))
    return {"left_out": left_out, "trusted_everywhere": trusted,
            "left_out_in_scope_median": float(np.median([r["in_scope"] for r in left_out.values()])),
            "calibration_in_scope": float(np.mean([full.covers(q) for q in questions])),
            "frames": len(full.frames),
            "new_facts": {"pooled": _auroc(gate_new_facts, correct),
                          "median": float(np.median(known)) if known else None, "per_relation": per_relation}}
