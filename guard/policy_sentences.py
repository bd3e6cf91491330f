"""One choice's sentence/verdict policy: sentences, their scores, their verdicts and what may be sent.

:class:`SentencePolicy` keeps everything a choice has received (token texts, class probabilities,
raw scores for ``max`` pooling), splits the text into sentences, decides each closed sentence in
order once all its tokens are scored (or at the end), and releases token scores in position order
once their text has begun to be emitted. What a token's text and a decided sentence do (emit it at
once, hold it, abstain, ask to steer) is the mode's (:mod:`guard.policy_modes`,
:mod:`guard.policy_steer`), picked once per choice. The contract is :mod:`guard.policy`'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from guard.errors import AdapterError
from guard.outbox import NOTHING, Outbox
from guard.sentences import Sentence, SentenceSplitter
from guard.splitters import SplitterFactory
from guard.verdicts import (
    AbstainReason,
    GuardEvent,
    SentenceVerdict,
    SteerPoint,
    TokenScore,
    VerdictRule,
)

__all__ = ["ModeRules", "SentencePolicy"]


class ModeRules(Protocol):
    """What a mode is to the policy it acts on (:class:`guard.policy_modes.Mode` is one): the policy holds its
    mode and calls it back; the modes import this module, never the other way round."""

    #: where a choice steered from its first token was steered
    steered_from_start: SteerPoint | None
    #: whether the pre-generation gate's no matters at all
    uses_gate: bool

    def add_texts(self, policy: SentencePolicy, positions: Sequence[int], texts: Sequence[str]) -> None:
        """Take tokens in order."""

    def decided(self, policy: SentencePolicy, sentence: Sentence, verdict: SentenceVerdict, cut: int) -> None:
        """``sentence`` got ``verdict``."""

    def gate(self, policy: SentencePolicy, reason: str) -> None:
        """The pre-generation gate said no."""

    def fail_closed(self, policy: SentencePolicy, reason: str) -> None:
        """The guard cannot judge the answer."""

    def finish(self, policy: SentencePolicy) -> None:
        """The stream ended."""

    def tokens_before(self, position: int) -> list[tuple[int, str]]:
        """The tokens a resumed choice keeps."""

    def resumed(self) -> ModeRules:
        """The mode once steering has started."""


class SentencePolicy:
    """The state of one choice and the rules every mode shares; its mode acts on it.

    A mode feeds each token with :meth:`take` (then :meth:`advance` when it returns ``True``, and once
    after a batch), scores go through :meth:`store`; :meth:`advance` hands each decided sentence's
    verdict to ``mode.decided``. Work per token is O(1) except at sentence decisions.

    Args:
        rule: the probe's verdict rule.
        alpha: the request's conformal alpha (checked by the caller).
        message: the text that replaces the answer when the choice abstains.
        mode: what this choice does with text and decided sentences (a choice steered from its first
            token starts steered: ``mode.steered_from_start``).
        new_splitter: makes the splitter that cuts the text into sentences (:mod:`guard.splitters`).

    Attributes:
        mode: the current mode (:func:`guard.policy_resume.resume` replaces it once steering starts).
        verdicts: decided sentences of the text the client gets, in order.
        tokens / tokens_scored: tokens received and scored.
        abstained / steered: why the choice abstained, where and how it was (asked to be) steered.
        stopped: it abstained, or waits for the steering to start; every feed is then ignored.
        finished: the stream ended (:meth:`finish`).
        out: what the current call releases.

    Example:
        >>> from guard.conformal import MondrianConformal
        >>> from guard.policy_modes import Flag
        >>> rule = VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, [[0.5]] * 2))
        >>> policy = SentencePolicy(rule, 0.5, "No.", Flag())
        >>> policy.mode.add_texts(policy, [7, 8], ["Hi.", " Yo"])  # mode "flag": sent at once
        >>> policy.out.take().text
        'Hi. Yo'
        >>> [v.verdict for v in policy.store([7], [(0.9, 0.1)], None).sentences]  # "Hi. " once 7 is scored
        ['supported']
    """

    def __init__(self, rule: VerdictRule, alpha: float, message: str, mode: ModeRules,
                 new_splitter: SplitterFactory = SentenceSplitter) -> None:
        self.rule, self.alpha, self.message, self.mode = rule, alpha, message, mode
        self._max = rule.pooling == "max"
        self.new_splitter = new_splitter
        self.splitter = new_splitter()
        self.closed: deque[tuple[Sentence, int]] = deque()  # closed, not yet decided; (sentence, emit-up-to chars)
        self.probs: dict[int, tuple[float, ...]] = {}  # position -> k class probabilities
        self.raw: dict[int, np.ndarray] = {}  # position -> (L, k), max pooling only
        self.shifts: dict[int, np.ndarray] = {}  # position -> (L, d) shift columns (probes with a shift head)
        self.unreleased: deque[tuple[int, int, int]] = deque()  # (position, char offset, length)
        self.first_position: int | None = None
        self.next_unscored = 0  # every text position below it is scored
        self.forget_from = 0  # scores below it were dropped
        self.ignore_below = -1  # after steering: positions below it belong to the kept (or discarded) text
        self.skip_below = 0  # after steering: sentences below this index were decided before it
        self.received = self.emitted = self.tokens = self.tokens_scored = 0  # characters, tokens
        self.verdicts: list[SentenceVerdict] = []
        self.abstained: AbstainReason | None = None
        self.steered = mode.steered_from_start
        self.stopped = self.finished = False
        self.out = Outbox()

    @property
    def waiting(self) -> bool:
        """Whether the choice asked to be steered and waits for the steering to start."""
        return self.stopped and self.abstained is None

    def take(self, position: int, text: str) -> bool:
        """Take the text of generated token ``position``; returns whether a closed sentence is decidable now.

        Raises:
            AdapterError: positions out of order.
        """
        closed = self.splitter.feed(position, text)
        if self.first_position is None:
            self.first_position = self.next_unscored = self.forget_from = position
            for early in [p for p in self.probs if p < position]:  # prompt positions: not ours
                self.drop(early)
                self.tokens_scored -= 1
            self._advance_unscored()
        self.tokens += 1
        cut = self.received  # a sentence closed by this token ends, for emission, where this token starts
        self.unreleased.append((position, cut, len(text)))
        self.received += len(text)
        if closed:
            self.closed.extend((sentence, cut) for sentence in closed)
        return bool(self.closed) and self.closed[0][0].last < self.next_unscored

    def store(self, positions: Sequence[int], probs: list[tuple[float, ...]], raw: np.ndarray | None,
              shifts: np.ndarray | None = None) -> GuardEvent:
        """Store the probabilities (and, for ``max`` pooling, raw scores; with a shift head, shifts) of
        ``positions``; decide what they allow.

        Raises:
            AdapterError: a position scored twice.
        """
        for position in positions:
            if position in self.probs and position >= self.ignore_below:
                raise AdapterError(f"position {position} was scored twice; deliver each token's score once")
        if self.stopped or self.finished:
            return NOTHING
        floor = max(self.ignore_below, self.forget_from if self.first_position is not None else -1)
        for i, position in enumerate(positions):
            if position < floor:
                continue  # prompt tokens, kept text, or a sentence already decided without it
            self.probs[position] = probs[i]
            if raw is not None:
                self.raw[position] = raw[i]
            if shifts is not None:
                self.shifts[position] = shifts[i]
            self.tokens_scored += 1
        self._advance_unscored()
        self.advance()
        return self.out.take()

    def finish(self) -> None:
        """The stream ended: close the last sentence and decide every closed one with the scores there are."""
        self.finished = True
        self.closed.extend((sentence, self.received) for sentence in self.splitter.finish())
        self.advance()

    def advance(self) -> None:
        """Decide every closed sentence whose tokens are all scored (all, once finished), in order."""
        closed = self.closed
        while closed and not self.stopped and (self.finished or closed[0][0].last < self.next_unscored):
            sentence, cut = closed.popleft()
            if sentence.index >= self.skip_below:  # below: decided before steering, on the same tokens
                self.mode.decided(self, sentence, self._judge(sentence), cut)
        self.release_scores()

    def _judge(self, sentence: Sentence) -> SentenceVerdict:
        scored = [p for p in range(sentence.first, sentence.last + 1) if p in self.probs]
        pooled = None
        if scored:
            pooled = (self.rule.pool_max([self.raw[p] for p in scored]).tolist() if self._max
                      else self.probs[scored[-1]])
        # the shift head was calibrated on statements' last tokens: the last scored token's, whatever the pooling
        columns = self.shifts.get(scored[-1]) if scored else None
        shift = None if columns is None else self.rule.shift_of(columns)
        return self.rule.judge(sentence, pooled, len(scored), self.alpha, shift)

    def record(self, verdict: SentenceVerdict) -> None:
        """Count a decided sentence and send its verdict."""
        self.verdicts.append(verdict)
        self.out.sentences.append(verdict)

    def emit(self, text: str) -> None:
        """Send ``text`` (what follows what was sent)."""
        self.out.text.append(text)
        self.emitted += len(text)

    def abstain(self, reason: AbstainReason) -> None:
        """Stop for good: send the abstain message instead of anything not yet sent."""
        self.abstained = self.out.abstained = reason
        self.out.text.append(self.message)
        self.stopped = True
        self.closed.clear()

    def ask_to_steer(self, point: SteerPoint) -> None:
        """Stop and ask for steering; :func:`guard.policy_resume.resume` goes on once it has started."""
        self.steered = self.out.steer = point
        self.stopped = True
        self.closed.clear()

    def release_scores(self) -> None:
        """Release scores of tokens whose text has begun to be emitted, in position order; forget old ones."""
        while self.unreleased and not self.stopped:
            position, offset, length = self.unreleased[0]
            # an empty token has begun once text after it has (or the stream ended): whether its score goes out
            # must not depend on how tokens were batched
            begun = offset < self.emitted or (length == 0 and offset <= self.emitted and self.finished)
            if not begun or (position not in self.probs and not self.finished):
                break  # in order: a later score waits for an earlier one until the stream ends
            self.unreleased.popleft()
            if position in self.probs:
                self.out.scores.append(TokenScore(position, self.probs[position]))
        if self.verdicts and self.first_position is not None:
            keep = min(self.verdicts[-1].last, self.unreleased[0][0] if self.unreleased else self.next_unscored)
            for position in range(self.forget_from, keep):
                self.drop(position)
            self.forget_from = max(self.forget_from, keep)

    def rewind(self, cut: int) -> None:
        """Forget every score from position ``cut`` on, and ignore scores below it from now on (steering)."""
        for p in [p for p in self.probs if p >= cut]:
            self.drop(p)
        self.ignore_below = cut
        self.next_unscored = min(self.next_unscored, cut)
        self.forget_from = min(self.forget_from, cut)

    def drop(self, position: int) -> None:
        """Forget ``position``'s scores."""
        self.probs.pop(position, None)
        self.raw.pop(position, None)
        self.shifts.pop(position, None)

    def _advance_unscored(self) -> None:
        if self.first_position is not None:
            while self.next_unscored in self.probs:
                self.next_unscored += 1
