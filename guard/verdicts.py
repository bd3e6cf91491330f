"""Sentence verdicts: the rule that turns a sentence's token scores into a verdict, and its records.

:class:`VerdictRule` is built once per probe (pooling, labels, fitted Mondrian calibration) and
applied per sentence at a request's alpha; :mod:`guard.policy` documents the contract it implements.
The records (:class:`SentenceVerdict`, :class:`AbstainReason`, :class:`SteerPoint`,
:class:`GuardSummary`, :class:`GuardEvent`) are what the server serialises into a response's
extension field; they carry positions and numbers, never the sentence text.

* **Pooling.** A sentence's class probabilities come from the scores of its tokens (positions
  ``first .. last``) by the probe's pooling: ``"last"`` — the probabilities of its last *scored*
  token; ``"max"`` — per layer, the elementwise maximum over its tokens of the raw class scores,
  then the layer mean and a softmax (exactly the score the probe was calibrated on; it needs the
  raw ``(layers, k)`` scores).
* **Conformal set.** Mondrian conformal p-values ``p_label = (1 + #{calibration scores of label
  >= 1 - p(label)}) / (n_label + 1)``; a label is in the set at the request's alpha iff its p-value
  exceeds alpha (at the probe's calibrated alpha this is its stored-threshold rule).
* **Shift.** With a probe's shift head (:mod:`guard.shift`) the score rows carry ``d`` more columns; a
  sentence's shift is its last scored token's, whatever the pooling (the head was calibrated on
  statements' last tokens). A shifted sentence gets every label in its set: the guard cannot tell, and
  says so (``uncertain``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NoReturn

import numpy as np

from guard.conformal import MondrianConformal
from guard.errors import AdapterError, ArtifactError, NonFiniteScores
from guard.probabilities import class_probabilities, row_probabilities
from guard.probe import STAND_IN, Probe
from guard.sentences import Sentence
from guard.shift import ShiftCalibration, shift_of_rows
from guard.verdict_records import (
    TRUE_LABEL,
    AbstainReason,
    Decision,
    GuardEvent,
    GuardSummary,
    Mode,
    SentenceVerdict,
    SteerPoint,
    TokenScore,
    Verdict,
    VerdictCounts,
    response_decision,
)

__all__ = ["Mode", "Decision", "Verdict", "VerdictRule", "SentenceVerdict", "AbstainReason", "SteerPoint",
           "VerdictCounts", "GuardSummary", "TokenScore", "GuardEvent", "response_decision", "TRUE_LABEL"]

class VerdictRule:
    """Pooling + Mondrian conformal sets over a probe's labels, decided once per probe.

    Args:
        labels: the probe's labels (must include ``"true"``).
        pooling: ``"last"`` or ``"max"`` (see :mod:`guard.policy`).
        conformal: fitted sets; with calibration scores they also give p-values and any alpha.
        layers: how many layers a token's raw scores have (``(layers, k)``).
        name: how errors name the probe.
        shift: the probe's shift calibration (``None``: no shift head; rows carry only the labels' columns).

    Raises:
        ArtifactError: ``"true"`` is not among the labels, or the calibration's class count differs.

    Example:
        >>> cal = MondrianConformal.from_scores(0.1, [[i / 20 for i in range(1, 20)]] * 2)
        >>> rule = VerdictRule(("true", "false"), "last", cal)
        >>> rule.judge(Sentence(0, "Paris is in France.", 0, 19, 7, 11), np.array([0.95, 0.05]), 1, 0.1).verdict
        'supported'
    """

    def __init__(self, labels: tuple[str, ...], pooling: Literal["last", "max"], conformal: MondrianConformal,
                 layers: int = 1, name: str = "probe", shift: ShiftCalibration | None = None) -> None:
        if TRUE_LABEL not in labels:
            raise ArtifactError(f"probe {name!r} has labels {list(labels)}; verdicts need a {TRUE_LABEL!r} label; "
                                "use a true/false/neither probe from `guard calibrate`")
        if conformal.thresholds is None or len(conformal.thresholds) != len(labels):
            raise ArtifactError(f"probe {name!r}'s conformal calibration does not cover its {len(labels)} labels; "
                                "re-run `guard calibrate`")
        self.labels, self.pooling, self.layers, self.name = labels, pooling, layers, name
        #: False for a random stand-in probe: its verdicts say nothing about truth
        self.calibrated = name != STAND_IN
        self.conformal = conformal
        self.shift = shift
        #: columns of a score row this rule reads: the labels', then the shift head's
        self.columns = len(labels) + (0 if shift is None else shift.dims)
        self._true = labels.index(TRUE_LABEL)

    @classmethod
    def from_probe(cls, probe: Probe) -> VerdictRule:
        """The rule of a calibrated probe (its labels, pooling and conformal calibration).

        Raises:
            ArtifactError: the probe has no conformal calibration or no ``"true"`` label.
        """
        m = probe.manifest
        return cls(m.labels, m.pooling, probe.calibrated(), len(m.layers), m.kind, m.shift)

    @property
    def alpha(self) -> float:
        """The alpha the probe was calibrated at (what a request without ``alpha`` gets)."""
        return self.conformal.alpha

    @property
    def has_p_values(self) -> bool:
        """Whether the calibration scores are stored (p-values and sets at any alpha)."""
        return self.conformal.scores is not None

    def serves(self, alpha: float) -> bool:
        """Whether sets at ``alpha`` can be computed (always at the calibrated alpha)."""
        return alpha == self.alpha or self.has_p_values

    def check_values(self, positions: Sequence[int], values: np.ndarray, row: tuple[int, ...], name: str) -> None:
        """Refuse scores or probabilities (one ``row``-shaped array per position) of the wrong shape, or
        with NaN or infinity.

        Raises:
            AdapterError: names the positions, the problem and the expected shape and label order.
        """
        if values.shape != (len(positions), *row) or not np.isfinite(values).all():
            self._refuse(positions, values, row, name)

    def _refuse(self, positions: Sequence[int], values: np.ndarray, row: tuple[int, ...], name: str) -> NoReturn:
        problem = ("NaN or infinite values" if values.shape == (len(positions), *row) else
                   f"shape {values.shape[1:]} per position" if values.shape[:1] == (len(positions),) else
                   f"{values.shape[0] if values.ndim else 0} rows for {len(positions)} positions")
        error = NonFiniteScores if values.shape == (len(positions), *row) else AdapterError
        raise error(f"{name} for positions {list(positions)[:8]} have {problem}; expected finite values of "
                    f"shape {row} per position in label order {list(self.labels)}")

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores ``(..., layers, k)`` -> class probabilities ``(..., k)``: layers averaged, then softmax."""
        return class_probabilities(scores)

    def row_probabilities(self, positions: Sequence[int], scores: np.ndarray) -> list[tuple[float, ...]]:
        """Checked raw scores ``(n, layers, k)`` of ``positions`` -> each row's class probabilities.

        The numbers of :meth:`probabilities`, as tuples; a few rows (what a streamed chunk brings)
        are done in plain Python (:func:`guard.probabilities.row_probabilities`), more with numpy.

        Raises:
            AdapterError: the wrong shape, or NaN or infinite values.
        """
        row = (self.layers, len(self.labels))
        if scores.shape != (len(positions), *row):
            self._refuse(positions, scores, row, "scores")
        if len(positions) > _PLAIN_ROWS:
            self.check_values(positions, scores, row, "scores")
            return [tuple(p) for p in class_probabilities(scores).tolist()]
        probs = row_probabilities(scores.tolist())
        if probs is None:
            self._refuse(positions, scores, row, "scores")
        return probs

    def shift_columns(self, positions: Sequence[int], scores: np.ndarray) -> np.ndarray | None:
        """The shift columns ``(n, layers, d)`` of raw rows ``(n, layers, columns)`` (``None``: no shift head).

        Raises:
            AdapterError: the probe has a shift head but the rows lack its columns.
            NonFiniteScores: a shift column holds NaN or infinity.
        """
        k = len(self.labels)
        if self.shift is None:
            return None
        if scores.shape[-1] != self.columns:
            raise AdapterError(f"probe {self.name!r} has a shift head: a score row needs {self.columns} columns "
                               f"({k} labels {list(self.labels)}, then {self.shift.dims} shift columns), got "
                               f"{scores.shape[-1]}; pass the engine's shift columns after the labels'")
        columns = scores[..., k:]
        if not np.isfinite(columns).all():
            raise NonFiniteScores(f"shift columns for positions {list(positions)[:8]} have NaN or infinite values")
        return columns

    @staticmethod
    def shift_of(columns: np.ndarray) -> float:
        """One token's shift from its ``(layers, d)`` shift columns (plain Python: the same bits on every path)."""
        values = shift_of_rows([columns.tolist()])
        assert values is not None  # shift_columns refused non-finite columns
        return values[0]

    def pool_max(self, raw: list[np.ndarray]) -> np.ndarray:
        """``max`` pooling: per-layer elementwise max over tokens of raw scores, layers averaged, softmax.

        This is the score the calibration split was conformalised on (``calibration.pipeline``).
        """
        return class_probabilities(np.stack(raw).max(axis=0))  # (t, L, k) -> (k,)

    def judge(self, sentence: Sentence, pooled: Sequence[float] | None, tokens_scored: int,
              alpha: float, shift: float | None = None) -> SentenceVerdict:
        """The verdict on ``sentence`` from its pooled probabilities ``(k,)`` (``None``: no token scored) and,
        with a shift head, its pooled shift."""
        # Any: splatted into model_construct, whose first parameter (_fields_set) is not an int
        span: dict[str, Any] = {"index": sentence.index, "start": sentence.start, "end": sentence.end,
                                "first": sentence.first, "last": sentence.last, "tokens_scored": tokens_scored}
        if pooled is None:
            return SentenceVerdict(verdict="unscored", p_true=None, prediction_set=(), probs=None, **span)
        inside = self.conformal.row_set(pooled, alpha)
        shifted = shift is not None and self.shift is not None and self.shift.shifted(shift)
        if shifted:
            inside = (True,) * len(self.labels)
        p_true = self.conformal.row_p_values(pooled)[self._true] if self.has_p_values else None
        members = tuple(label for label, keep in zip(self.labels, inside) if keep)
        verdict: Verdict = ("flagged" if not inside[self._true] else
                            "supported" if members == (TRUE_LABEL,) else "uncertain")
        # built from checked numbers of the right types: no validation on this per-sentence path
        return SentenceVerdict.model_construct(verdict=verdict, p_true=None if p_true is None else float(p_true),
                                               prediction_set=members,
                                               probs=dict(zip(self.labels, map(float, pooled))), shift=shift,
                                               shifted=shifted, **span)


#: up to this many rows :meth:`VerdictRule.row_probabilities` works in plain Python
_PLAIN_ROWS = 4
