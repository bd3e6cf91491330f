"""The pre-generation gate at serving time: answer, or abstain before the answer is shown.

The gate's columns ride along with the probe's in every score row (:mod:`guard.heads`); the row of
the prompt's last token holds its verdict on the question. :class:`GateRule` turns that row into
``p(correct)`` and compares it with the Learn-then-Test threshold certified at the request's
``alpha`` (recomputed from the calibration split the artefact stores, once per alpha). Where the
stored calibration certifies no threshold at that ``alpha``, the gate does not decide: it reports
``certified = False`` and lets the answer through (it never abstains without a certificate, and it
never claims one it does not have). A gate with a question scope (:mod:`guard.scope`) decides on questions
worded as its calibration questions only; any other question it lets through undecided, ``in_scope = False``:
on new kinds of question its guess is no better than chance (calibration/results/README.md).
"""

from __future__ import annotations

import math

import numpy as np

from guard.answer_check import AnswerRule
from guard.errors import ArtifactError, NonFiniteScores
from guard.probabilities import row_probabilities
from guard.probe import Probe
from guard.selective import CertifiedDecision, ThresholdCache

__all__ = ["GateDecision", "GateRule"]


class GateDecision(CertifiedDecision):
    """What the gate said about one question (``threshold`` ``None``: nothing certified there, so it lets the
    answer through; ``in_scope`` ``False``: the question is unlike those the gate was calibrated on, so it does not
    decide, and lets the answer through too)."""

    in_scope: bool = True


class GateRule:
    """Decides from a fused score row ``(L, k_probe + 2)`` (or the gate's own ``(L, 2)`` columns).

    Args:
        gate: the gate artefact (labels ``("incorrect", "correct")`` with a selective calibration).
        offset: index of the gate's first column in a fused row (the probe's label count).

    Raises:
        ArtifactError: the artefact is not a calibrated gate.
    """

    def __init__(self, gate: Probe, offset: int) -> None:
        selective = gate.manifest.selective
        if selective is None or "correct" not in gate.labels:
            raise ArtifactError(f"{gate.manifest.kind!r} is not a calibrated pre-generation gate (it needs a 'correct' "
                                "label and a selective calibration); run guard calibrate")
        self.gate, self.offset, self.selective = gate, offset, selective
        self._thresholds = ThresholdCache(selective)
        #: the answer check on whole answers, when the gate carries an answer combiner (an on-policy gate)
        self.answers = AnswerRule(gate, offset) if gate.manifest.answer_combiner is not None else None
        self._correct = offset + list(gate.labels).index("correct")
        #: the question wordings the gate decides on (``None``: every question)
        self.scope = gate.manifest.question_scope

    @property
    def alpha(self) -> float:
        """The alpha the gate was calibrated at (the default of requests that set none)."""
        return self.selective.alpha

    def threshold(self, alpha: float | None = None) -> float:
        """Certified threshold at ``alpha`` (``inf`` when none); cached per alpha."""
        return self._thresholds.at(alpha)

    def decide(self, row: np.ndarray, alpha: float | None = None, question: str = "") -> GateDecision:
        """The gate's decision for the prompt's last-token score row; ``question``: the question's text (or the
        whole prompt), read by a scoped gate (a scoped gate does not decide on an empty one)."""
        cols = np.asarray(row)[:, self.offset : self.offset + len(self.gate.labels)]
        probs = row_probabilities([cols.tolist()])  # one row: plain Python, as the stream's rows
        if probs is None:
            raise NonFiniteScores(f"the gate's score row {cols.tolist()} holds NaN or infinite values")
        p = probs[0][self._correct - self.offset]
        in_scope = self.scope is None or self.scope.covers(question)
        lam = float(self.threshold(alpha)) if in_scope else math.inf
        certified = math.isfinite(lam)
        # plain Python numbers of the declared types: no validation on the per-request path
        return GateDecision.model_construct(p_correct=round(p, 6), alpha=float(self.alpha if alpha is None else alpha),
                                            threshold=lam if certified else None, certified=certified,
                                            answer=bool(not certified or p >= lam), in_scope=in_scope)
