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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import numpy as np
from pydantic import BaseModel, ConfigDict

from guard.conformal import MondrianConformal
from guard.errors import AdapterError, ArtifactError, NonFiniteScores
from guard.probabilities import class_probabilities, row_probabilities
from guard.probe import Probe
from guard.sentences import Sentence

__all__ = ["Mode", "Decision", "Verdict", "VerdictRule", "SentenceVerdict", "AbstainReason", "SteerPoint",
           "VerdictCounts", "GuardSummary", "TokenScore", "GuardEvent", "response_decision", "TRUE_LABEL"]

#: the label whose absence from a prediction set flags a sentence
TRUE_LABEL = "true"
Mode = Literal["pass", "flag", "abstain", "steer"]
Decision = Literal["pass", "flag", "abstain", "steer"]
Verdict = Literal["supported", "uncertain", "flagged", "unscored"]


class SentenceVerdict(BaseModel):
    """The verdict on one sentence.

    Attributes:
        index: the sentence's order in the choice's text.
        start / end: its character span in the generated text (end exclusive).
        first / last: token positions of its first and last non-whitespace characters.
        verdict: ``supported`` (set is exactly {true}), ``flagged`` (true not in the set),
            ``uncertain`` (true in the set with other labels), ``unscored`` (no token scored; never flagged).
        p_true: conformal p-value of "true" (``None`` when unscored or the probe stores no calibration scores).
        prediction_set: labels in the conformal set at the request's alpha, in the probe's label order.
        probs: pooled class probabilities (``None`` when unscored).
        tokens_scored: how many of its tokens had a score when it was decided.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    start: int
    end: int
    first: int
    last: int
    verdict: Verdict
    p_true: float | None
    prediction_set: tuple[str, ...]
    probs: dict[str, float] | None
    tokens_scored: int


class AbstainReason(BaseModel):
    """Why a choice abstained: the pre-generation gate, the first flagged sentence, or (``guard_failure``,
    with ``on_guard_failure: fail_closed``) the guard could not judge the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["gate", "sentence", "guard_failure"]
    alpha: float
    sentence: int | None = None
    p_true: float | None = None
    detail: str = ""


class SteerPoint(BaseModel):
    """Where and how a choice was steered (mode "steer"); positions and numbers, never text.

    Attributes:
        kind: what triggered it: the pre-generation ``gate``, a flagged ``sentence``, or the ``request``
            itself (``how="always"``).
        how: ``continue`` (the text before the flagged sentence is kept, generation goes on steered
            from its first token), ``regenerate`` (the whole answer is generated again, steered) or
            ``always`` (every generated token was steered).
        alpha: the conformal alpha at which the sentence was flagged (or the gate's alpha).
        strength: the steering strength the steered generation used.
        position: the first token position generated with steering (``None``: the first generated one).
        kept_chars: characters of the unsteered answer kept before the steered text.
        flagged: the verdict on the sentence that was replaced (``None`` when the gate triggered).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["gate", "sentence", "request"]
    how: Literal["continue", "regenerate", "always"]
    alpha: float
    strength: float
    position: int | None
    kept_chars: int
    flagged: SentenceVerdict | None = None


class VerdictCounts(BaseModel):
    """How many sentences got each verdict, and how many tokens arrived and were scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sentences: int = 0
    supported: int = 0
    uncertain: int = 0
    flagged: int = 0
    unscored: int = 0
    tokens: int = 0
    tokens_scored: int = 0


class GuardSummary(BaseModel):
    """The response-level verdict of one choice.

    Attributes:
        decision: ``pass``, ``flag``, ``abstain`` or ``steer`` (see :mod:`guard.policy`).
        score: the smallest p-value of "true" over decided sentences (``None`` when there is none).
        abstained: why it abstained, if it did.
        sentences: verdicts of the decided sentences of the text the client got, in order.
        steered: where and how it was steered, if it was.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Decision
    mode: Mode
    alpha: float
    score: float | None
    abstained: AbstainReason | None
    sentences: tuple[SentenceVerdict, ...]
    counts: VerdictCounts
    steered: SteerPoint | None = None

    @classmethod
    def of(cls, verdicts: list[SentenceVerdict], mode: Mode, alpha: float, tokens: int, tokens_scored: int,
           abstained: AbstainReason | None = None, steered: SteerPoint | None = None) -> GuardSummary:
        """The summary of a choice's decided sentences (see :mod:`guard.policy` for the decision)."""
        named = [v.verdict for v in verdicts]
        flagged = named.count("flagged")
        p_true = [v.p_true for v in verdicts if v.p_true is not None]
        # built from checked records and counts: no validation, once or twice per request
        return cls.model_construct(
            decision=response_decision(mode, flagged, abstained is not None, steered is not None),
            mode=mode, alpha=alpha, score=min(p_true) if p_true else None, abstained=abstained,
            sentences=tuple(verdicts), steered=steered,
            counts=VerdictCounts.model_construct(sentences=len(verdicts), tokens=tokens, tokens_scored=tokens_scored,
                                                 supported=named.count("supported"),
                                                 uncertain=named.count("uncertain"), flagged=flagged,
                                                 unscored=named.count("unscored")))


def response_decision(mode: Mode, flagged: int, abstained: bool, steered: bool = False) -> Decision:
    """The response-level decision (see the module's contract)."""
    if mode == "pass":
        return "pass"
    if abstained:
        return "abstain"
    if steered:
        return "steer"
    return "flag" if flagged else "pass"


@dataclass(frozen=True)
class TokenScore:
    """A token's class probabilities, in the probe's label order."""

    position: int
    probs: tuple[float, ...]


@dataclass(frozen=True)
class GuardEvent:
    """What to send now for one choice.

    Attributes:
        text: text to emit (in abstain mode, verified sentences, then possibly the abstain message).
        token_scores: scores of tokens whose text has been emitted, in position order, each once.
        sentences: verdicts decided now, in order.
        abstained: set when the guard abstained now: stop generating this choice.
        steer: set when the guard asks for steering now (mode "steer"): stop this generation, start
            the steered one as it says, then call :meth:`StreamGuard.resume`.
    """

    text: str = ""
    token_scores: tuple[TokenScore, ...] = ()
    sentences: tuple[SentenceVerdict, ...] = ()
    abstained: AbstainReason | None = None
    steer: SteerPoint | None = None

    def __bool__(self) -> bool:
        """Whether it carries anything to send."""
        return bool(self.text or self.token_scores or self.sentences or self.abstained is not None
                    or self.steer is not None)


class VerdictRule:
    """Pooling + Mondrian conformal sets over a probe's labels, decided once per probe.

    Args:
        labels: the probe's labels (must include ``"true"``).
        pooling: ``"last"`` or ``"max"`` (see :mod:`guard.policy`).
        conformal: fitted sets; with calibration scores they also give p-values and any alpha.
        layers: how many layers a token's raw scores have (``(layers, k)``).
        name: how errors name the probe.

    Raises:
        ArtifactError: ``"true"`` is not among the labels, or the calibration's class count differs.

    Example:
        >>> cal = MondrianConformal.from_scores(0.1, [[i / 20 for i in range(1, 20)]] * 2)
        >>> rule = VerdictRule(("true", "false"), "last", cal)
        >>> rule.judge(Sentence(0, "Paris is in France.", 0, 19, 7, 11), np.array([0.95, 0.05]), 1, 0.1).verdict
        'supported'
    """

    def __init__(self, labels: tuple[str, ...], pooling: Literal["last", "max"], conformal: MondrianConformal,
                 layers: int = 1, name: str = "probe") -> None:
        if TRUE_LABEL not in labels:
            raise ArtifactError(f"probe {name!r} has labels {list(labels)}; verdicts need a {TRUE_LABEL!r} label; "
                                "use a true/false/neither probe from `guard calibrate`")
        if conformal.thresholds is None or len(conformal.thresholds) != len(labels):
            raise ArtifactError(f"probe {name!r}'s conformal calibration does not cover its {len(labels)} labels; "
                                "re-run `guard calibrate`")
        self.labels, self.pooling, self.layers, self.name = labels, pooling, layers, name
        self.conformal = conformal
        self._true = labels.index(TRUE_LABEL)

    @classmethod
    def from_probe(cls, probe: Probe) -> VerdictRule:
        """The rule of a calibrated probe (its labels, pooling and conformal calibration).

        Raises:
            ArtifactError: the probe has no conformal calibration or no ``"true"`` label.
        """
        m = probe.manifest
        return cls(m.labels, m.pooling, probe.calibrated(), len(m.layers), m.kind)

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

    def pool_max(self, raw: list[np.ndarray]) -> np.ndarray:
        """``max`` pooling: per-layer elementwise max over tokens of raw scores, layers averaged, softmax.

        This is the score the calibration split was conformalised on (``calibration.pipeline``).
        """
        return class_probabilities(np.stack(raw).max(axis=0))  # (t, L, k) -> (k,)

    def judge(self, sentence: Sentence, pooled: Sequence[float] | None, tokens_scored: int,
              alpha: float) -> SentenceVerdict:
        """The verdict on ``sentence`` from its pooled probabilities ``(k,)`` (``None``: no token scored)."""
        # Any: splatted into model_construct, whose first parameter (_fields_set) is not an int
        span: dict[str, Any] = {"index": sentence.index, "start": sentence.start, "end": sentence.end,
                                "first": sentence.first, "last": sentence.last, "tokens_scored": tokens_scored}
        if pooled is None:
            return SentenceVerdict(verdict="unscored", p_true=None, prediction_set=(), probs=None, **span)
        inside = self.conformal.row_set(pooled, alpha)
        p_true = self.conformal.row_p_values(pooled)[self._true] if self.has_p_values else None
        members = tuple(label for label, keep in zip(self.labels, inside) if keep)
        verdict: Verdict = ("flagged" if not inside[self._true] else
                            "supported" if members == (TRUE_LABEL,) else "uncertain")
        # built from checked numbers of the right types: no validation on this per-sentence path
        return SentenceVerdict.model_construct(verdict=verdict, p_true=None if p_true is None else float(p_true),
                                               prediction_set=members,
                                               probs=dict(zip(self.labels, map(float, pooled))), **span)


#: up to this many rows :meth:`VerdictRule.row_probabilities` works in plain Python
_PLAIN_ROWS = 4
