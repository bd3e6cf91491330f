"""The records of a guard's verdicts: what the server serialises into a response's extension field.

:class:`SentenceVerdict`, :class:`AbstainReason`, :class:`SteerPoint`, :class:`GuardSummary`,
:class:`GuardEvent` carry positions and numbers, never the sentence text; :mod:`guard.verdicts` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Mode", "Decision", "Verdict", "SentenceVerdict", "AbstainReason", "SteerPoint", "VerdictCounts",
           "GuardSummary", "TokenScore", "GuardEvent", "response_decision", "TRUE_LABEL"]

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
            ``uncertain`` (true in the set with other labels, e.g. every label when ``shifted``),
            ``unscored`` (no token scored; never flagged).
        p_true: conformal p-value of "true" (``None`` when unscored or the probe stores no calibration scores).
        prediction_set: labels in the conformal set at the request's alpha, in the probe's label order.
        probs: pooled class probabilities (``None`` when unscored).
        tokens_scored: how many of its tokens had a score when it was decided.
        shift: how unlike the probe's calibration data the pooled token is (:mod:`guard.shift`; ``None``: the
            probe has no shift head).
        shifted: the shift was too large for a confident verdict: every label is in the set (``uncertain``).
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
    shift: float | None = None
    shifted: bool = False


class AbstainReason(BaseModel):
    """Why a choice abstained: the pre-generation gate, the first flagged sentence, the answer check on the
    whole answer (:mod:`guard.answer_check`), or (``guard_failure``, with ``on_guard_failure: fail_closed``)
    the guard could not judge the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["gate", "sentence", "answer", "guard_failure"]
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
        score: the smallest p-value of "true" over decided sentences that are not shifted (``None`` when there
            is none).
        abstained: why it abstained, if it did.
        sentences: verdicts of the decided sentences of the text the client got, in order.
        steered: where and how it was steered, if it was.
        calibrated: ``False`` when the probe is a random stand-in (no probe ships for the model): every verdict
            is then ``uncertain`` and says nothing about truth.
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
    calibrated: bool = True

    @classmethod
    def of(cls, verdicts: list[SentenceVerdict], mode: Mode, alpha: float, tokens: int, tokens_scored: int,
           abstained: AbstainReason | None = None, steered: SteerPoint | None = None,
           calibrated: bool = True) -> GuardSummary:
        """The summary of a choice's decided sentences (see :mod:`guard.policy` for the decision)."""
        named = [v.verdict for v in verdicts]
        flagged = named.count("flagged")
        p_true = [v.p_true for v in verdicts if v.p_true is not None and not v.shifted]  # shifted: cannot tell
        # built from checked records and counts: no validation, once or twice per request
        return cls.model_construct(
            decision=response_decision(mode, flagged, abstained is not None, steered is not None),
            mode=mode, alpha=alpha, score=min(p_true) if p_true else None, abstained=abstained,
            sentences=tuple(verdicts), steered=steered, calibrated=calibrated,
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
