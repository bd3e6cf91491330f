"""The guard's decision: per-request options, sentence verdicts and the per-choice state machine.

Contract (what a guarded response promises):

* **Sentences.** The generated text is split by :class:`~guard.sentences.SentenceSplitter`.
* **Pooling.** A sentence's class probabilities come from the scores of its tokens (positions
  ``first .. last``) by the probe's pooling: ``"last"`` — the probabilities of its last *scored*
  token; ``"max"`` — per layer, the elementwise maximum over its tokens of the raw class scores,
  then the layer mean and a softmax (exactly the score the probe was calibrated on; it needs the
  raw ``(layers, k)`` scores, :meth:`StreamGuard.add_scores`).
* **Conformal set.** Mondrian conformal p-values ``p_label = (1 + #{calibration scores of label
  >= 1 - p(label)}) / (n_label + 1)``; a label is in the set at the request's alpha iff its p-value
  exceeds alpha (at the probe's calibrated alpha this is its stored-threshold rule).
* **Flag.** A sentence is *flagged* when "true" is not in its set. Finite-sample meaning: among
  sentences that are in fact true, at most alpha are flagged on average, provided they are
  exchangeable with the probe's calibration statements. Verdicts: ``supported`` (the set is exactly
  {"true"}), ``flagged``, ``uncertain`` (otherwise). A sentence none of whose tokens has a score is
  ``unscored`` and is never flagged.
* **Decision.** ``pass`` when nothing is flagged or the mode is "pass"; ``flag`` in mode "flag"
  with at least one flagged sentence (the text is unchanged); ``abstain`` in mode "abstain" with a
  flagged sentence, or when the pre-generation gate said so (modes "flag" and "abstain").

Streaming (one :class:`StreamGuard` per choice, used by streaming and non-streaming paths alike):
the score of generated token ``p`` arrives only when ``p`` is fed back (the next engine step) and
the last generated token never gets one, so text and scores arrive separately. A sentence is
decided once it is closed and all its tokens are scored, or at :meth:`StreamGuard.finish`. In modes
"flag" and "pass" text is emitted as it arrives. In mode "abstain" text is held until its sentence
is decided and emitted only if it is not flagged; at the first flagged sentence the guard emits the
abstain message and stops: sentences already emitted stay, and nothing unverified is ever sent.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.errors import AdapterError, RequestOptionError
from guard.sentences import Sentence, SentenceSplitter
from guard.verdicts import (
    AbstainReason,
    Decision,
    GuardSummary,
    Mode,
    SentenceVerdict,
    VerdictCounts,
    VerdictRule,
)

__all__ = ["DEFAULT_ABSTAIN_MESSAGE", "GuardOptions", "parse_guard_options", "response_decision", "TokenScore",
           "GuardEvent", "StreamGuard"]

#: what a choice says instead of an unverified answer when no ``abstain_message`` is given
DEFAULT_ABSTAIN_MESSAGE = "I'm not confident enough to answer that reliably."
_MAX_MESSAGE = 2000
_EXPECTED = {
    "mode": "one of 'pass', 'flag', 'abstain'",
    "alpha": "a number strictly between 0 and 1, or null for the probe's calibrated alpha",
    "abstain_message": f"a non-empty string of at most {_MAX_MESSAGE} characters, or null for the default",
    "gate": "true or false",
    "gate_alpha": "a number strictly between 0 and 1, or null for the gate's calibrated alpha",
}


class GuardOptions(BaseModel):
    """The ``guard`` object of a request body (strict JSON types; unknown fields refused).

    Attributes:
        mode: ``pass`` (score only), ``flag`` (report flagged sentences), ``abstain`` (replace an
            unverified answer by the abstain message); room is left for ``steer``.
        alpha: the tolerated flag rate among true sentences; ``None`` uses the probe's calibrated alpha.
        abstain_message: replaces :data:`DEFAULT_ABSTAIN_MESSAGE`.
        gate: consult the pre-generation gate when one is loaded.
        gate_alpha: the gate's tolerated error rate among answered questions; ``None`` uses the gate's
            calibrated alpha.

    Example:
        >>> GuardOptions(mode="abstain", alpha=0.05).message
        "I'm not confident enough to answer that reliably."
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    mode: Mode = "flag"
    alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    abstain_message: str | None = Field(default=None, min_length=1, max_length=_MAX_MESSAGE)
    gate: bool = True
    gate_alpha: float | None = Field(default=None, gt=0.0, lt=1.0)

    @property
    def message(self) -> str:
        """The text emitted on abstention."""
        return self.abstain_message or DEFAULT_ABSTAIN_MESSAGE


def parse_guard_options(raw: object, param: str = "guard") -> GuardOptions:
    """Validate a request's ``guard`` object (``None``: defaults).

    Raises:
        RequestOptionError: names the field path (``guard.alpha``), the value given and the accepted
            values; ``.param`` is the path of the first bad field.
    """
    if raw is None:
        return GuardOptions()
    if not isinstance(raw, dict):
        raise RequestOptionError(f"{param}={_show(raw)} is invalid: expected an object with optional fields "
                                 f"{', '.join(GuardOptions.model_fields)}", param=param)
    try:
        return GuardOptions.model_validate(raw)
    except ValidationError as exc:
        problems, paths = [], []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            paths.append(f"{param}.{name}")
            expected = (f"no such field (accepted fields: {', '.join(GuardOptions.model_fields)})"
                        if err["type"] == "extra_forbidden" else _EXPECTED.get(name, err["msg"]))
            problems.append(f"{paths[-1]}={_show(err.get('input'))} is invalid: expected {expected}")
        raise RequestOptionError("; ".join(problems), param=paths[0]) from exc


def _show(value: object) -> str:
    """A value as JSON, shortened: error messages name it without echoing long user text."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def response_decision(mode: Mode, flagged: int, abstained: bool) -> Decision:
    """The response-level decision (see the module's contract)."""
    if mode == "pass":
        return "pass"
    if abstained:
        return "abstain"
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
    """

    text: str = ""
    token_scores: tuple[TokenScore, ...] = ()
    sentences: tuple[SentenceVerdict, ...] = ()
    abstained: AbstainReason | None = None


class StreamGuard:
    """The per-choice state machine: feed text and scores as they arrive, emit what is safe to send.

    Feed every generated token's text in order with :meth:`add_text` (tokens with empty text, such
    as an end-of-sequence token, too: they carry the previous token's score forward), each score
    with :meth:`add_probs` or :meth:`add_scores` (any order relative to the text; positions of
    generated tokens only), then call :meth:`finish`. A sentence with no scored token at all is
    ``unscored`` and never flagged. A score that never arrives (only the last token's, in vLLM) holds
    its sentence's decision, and in abstain mode its text, until :meth:`finish`. Every call returns a :class:`GuardEvent`; once the guard has
    abstained, later calls return empty events. Work per token is O(1) except at sentence decisions.

    Args:
        rule: the probe's verdict rule (build once per probe with :meth:`VerdictRule.from_probe`).
        options: the request's options.

    Raises:
        RequestOptionError: ``options.alpha`` cannot be served by this probe (param ``guard.alpha``).

    Example:
        >>> from guard.conformal import MondrianConformal
        >>> rule = VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, [[i / 20 for i in range(1, 20)]] * 2))
        >>> g = StreamGuard(rule, GuardOptions(mode="abstain"))
        >>> g.add_text(7, "Paris is in France.").text, g.add_text(8, "").text   # held until decided
        ('', '')
        >>> g.add_probs(7, np.array([0.95, 0.05])).text   # the sentence is not closed yet
        ''
        >>> g.finish().text, g.summary().decision
        ('Paris is in France.', 'pass')
    """

    def __init__(self, rule: VerdictRule, options: GuardOptions | None = None) -> None:
        self.rule, self.options = rule, options or GuardOptions()
        self.alpha = self.options.alpha if self.options.alpha is not None else rule.alpha
        if not rule.serves(self.alpha):
            raise RequestOptionError(
                f"guard.alpha={self.alpha} cannot be served: probe {rule.name!r} was calibrated at alpha={rule.alpha} "
                f"and stores no calibration scores; omit guard.alpha (or use {rule.alpha}), or re-run `guard calibrate`",
                param="guard.alpha")
        self._splitter = SentenceSplitter()
        self._closed: deque[Sentence] = deque()  # closed, not yet decided
        self._probs: dict[int, np.ndarray] = {}  # position -> (k,)
        self._raw: dict[int, np.ndarray] = {}  # position -> (L, k), max pooling only
        self._unreleased: deque[tuple[int, int, int]] = deque()  # (position, char offset, length)
        self._first_position: int | None = None
        self._next_unscored = 0  # every text position below it is scored
        self._forget_from = 0  # scores below it were dropped
        self._received = self._emitted = 0  # characters
        self._tokens = self._tokens_scored = 0
        self._verdicts: list[SentenceVerdict] = []
        self._abstained: AbstainReason | None = None
        self._finished = False
        self._out_text: list[str] = []
        self._out_scores: list[TokenScore] = []
        self._out_sentences: list[SentenceVerdict] = []
        self._out_abstained: AbstainReason | None = None

    @property
    def stopped(self) -> bool:
        """Whether the guard has abstained (the server should stop generating this choice)."""
        return self._abstained is not None

    def add_text(self, position: int, text: str) -> GuardEvent:
        """Add the text of generated token ``position`` (strictly increasing, every token once).

        Raises:
            AdapterError: positions out of order, or text after :meth:`finish`.
        """
        if self._finished:
            raise AdapterError(f"text for position {position} arrived after finish(); feed all tokens first")
        closed = self._splitter.feed(position, text)
        if self.stopped:
            return GuardEvent()
        if self._first_position is None:
            self._first_position = self._next_unscored = self._forget_from = position
            for early in [p for p in self._probs if p < position]:  # prompt positions: not ours
                self._drop(early)
                self._tokens_scored -= 1
            self._advance_unscored()
        self._tokens += 1
        self._unreleased.append((position, self._received, len(text)))
        self._received += len(text)
        self._closed.extend(closed)
        if self.options.mode != "abstain":
            self._emit(text)
        return self._step()

    def add_probs(self, position: int, probs: np.ndarray) -> GuardEvent:
        """Add token ``position``'s class probabilities ``(k,)`` in the probe's label order.

        Raises:
            AdapterError: wrong shape, non-finite values, a duplicate position, or a ``max``-pooling
                probe (which needs :meth:`add_scores`).
        """
        if self.rule.pooling == "max":
            raise AdapterError(f"probe {self.rule.name!r} pools by 'max' over raw per-layer scores; feed them with "
                               "add_scores(position, scores) of shape (layers, labels), not probabilities")
        probs = np.asarray(probs, np.float64)
        self._check(position, probs, (len(self.rule.labels),), "probs")
        return self._store(position, probs, None)

    def add_scores(self, position: int, scores: np.ndarray) -> GuardEvent:
        """Add token ``position``'s raw probe scores ``(layers, k)`` (one row of ``TokenScores.scores``).

        Raises:
            AdapterError: wrong shape, non-finite values or a duplicate position.
        """
        scores = np.asarray(scores, np.float64)
        self._check(position, scores, (self.rule.layers, len(self.rule.labels)), "scores")
        raw = scores if self.rule.pooling == "max" else None
        return self._store(position, self.rule.probabilities(scores), raw)

    def finish(self) -> GuardEvent:
        """The stream ended: close the last sentence and decide every closed one with the scores there are."""
        if self._finished:
            return GuardEvent()
        self._finished = True
        self._closed.extend(self._splitter.finish())
        return self._step()

    def gate_abstain(self, reason: str = "") -> GuardEvent:
        """The pre-generation gate says abstain: call before any text. Ignored in mode "pass"."""
        if self.stopped or self.options.mode == "pass":
            return GuardEvent()
        self._abstain(AbstainReason(kind="gate", alpha=self.alpha, detail=reason))
        return self._flush()

    def summary(self) -> GuardSummary:
        """The response-level verdict so far (final after :meth:`finish` or an abstention)."""
        counts = {name: sum(v.verdict == name for v in self._verdicts)
                  for name in ("supported", "uncertain", "flagged", "unscored")}
        p_true = [v.p_true for v in self._verdicts if v.p_true is not None]
        return GuardSummary(
            decision=response_decision(self.options.mode, counts["flagged"], self.stopped),
            mode=self.options.mode, alpha=self.alpha, score=min(p_true) if p_true else None,
            abstained=self._abstained, sentences=tuple(self._verdicts),
            counts=VerdictCounts(sentences=len(self._verdicts), tokens=self._tokens,
                                 tokens_scored=self._tokens_scored, **counts),
        )

    def _check(self, position: int, values: np.ndarray, shape: tuple[int, ...], name: str) -> None:
        if values.shape != shape or not np.all(np.isfinite(values)):
            problem = f"shape {values.shape}" if values.shape != shape else "NaN or infinite values"
            raise AdapterError(f"{name} for position {position} have {problem}; expected finite values of shape "
                               f"{shape} in label order {list(self.rule.labels)}")
        if position in self._probs:
            raise AdapterError(f"position {position} was scored twice; deliver each token's score once")

    def _store(self, position: int, probs: np.ndarray, raw: np.ndarray | None) -> GuardEvent:
        late = self._first_position is not None and position < self._forget_from
        if self.stopped or self._finished or late:
            return GuardEvent()  # prompt tokens, or a sentence already decided without it
        self._probs[position] = probs
        if raw is not None:
            self._raw[position] = raw
        self._tokens_scored += 1
        self._advance_unscored()
        return self._step()

    def _advance_unscored(self) -> None:
        if self._first_position is not None:
            while self._next_unscored in self._probs:
                self._next_unscored += 1

    def _step(self) -> GuardEvent:
        """Decide every closed sentence whose tokens are all scored (all, once finished), in order."""
        while self._closed and not self.stopped and (self._finished or self._closed[0].last < self._next_unscored):
            self._decide(self._closed.popleft())
        self._release_scores()
        return self._flush()

    def _decide(self, sentence: Sentence) -> None:
        scored = [p for p in range(sentence.first, sentence.last + 1) if p in self._probs]
        pooled = None
        if scored:
            pooled = (self.rule.pool_max([self._raw[p] for p in scored]) if self.rule.pooling == "max"
                      else self._probs[scored[-1]])
        verdict = self.rule.judge(sentence, pooled, len(scored), self.alpha)
        self._verdicts.append(verdict)
        self._out_sentences.append(verdict)
        if self.options.mode != "abstain":
            return
        if verdict.verdict == "flagged":
            self._abstain(AbstainReason(kind="sentence", alpha=self.alpha, sentence=sentence.index,
                                        p_true=verdict.p_true))
        else:
            self._emit(sentence.text)

    def _emit(self, text: str) -> None:
        self._out_text.append(text)
        self._emitted += len(text)

    def _abstain(self, reason: AbstainReason) -> None:
        self._abstained = self._out_abstained = reason
        self._out_text.append(self.options.message)
        self._closed.clear()

    def _release_scores(self) -> None:
        """Release scores of tokens whose text has begun to be emitted, in position order; forget old ones."""
        while self._unreleased and not self.stopped:
            position, offset, length = self._unreleased[0]
            begun = offset < self._emitted or (length == 0 and offset <= self._emitted)
            if not begun or (position not in self._probs and not self._finished):
                break  # in order: a later score waits for an earlier one until the stream ends
            self._unreleased.popleft()
            if position in self._probs:
                self._out_scores.append(TokenScore(position, tuple(self._probs[position].tolist())))
        if self._verdicts and self._first_position is not None:
            keep = min(self._verdicts[-1].last, self._unreleased[0][0] if self._unreleased else self._next_unscored)
            for position in range(self._forget_from, keep):
                self._drop(position)
            self._forget_from = max(self._forget_from, keep)

    def _drop(self, position: int) -> None:
        self._probs.pop(position, None)
        self._raw.pop(position, None)

    def _flush(self) -> GuardEvent:
        event = GuardEvent("".join(self._out_text), tuple(self._out_scores), tuple(self._out_sentences),
                           self._out_abstained)
        self._out_text, self._out_scores, self._out_sentences, self._out_abstained = [], [], [], None
        return event
