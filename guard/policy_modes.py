"""The modes of :mod:`guard.policy`: one small strategy each, picked once per choice by :class:`StreamGuard`.

A mode says what happens to a token's text as it arrives, to a decided sentence, at the gate, on a
guard failure and at the end; :class:`~guard.policy_sentences.SentencePolicy` does the rest, the same
for every mode. Here: the base :class:`Mode`, ``pass`` and ``flag`` (text emitted at once) and
``abstain`` (text held until its sentence is decided; the first flagged one abstains) and, with the answer
check, ``abstain`` on the whole answer (text held until the answer is judged). Mode ``steer``
is :mod:`guard.policy_steer`'s. The contract is :mod:`guard.policy`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from guard.policy_sentences import SentencePolicy
from guard.sentences import Sentence
from guard.verdicts import AbstainReason, SentenceVerdict, SteerPoint

__all__ = ["Mode", "Flag", "Pass", "Abstain", "AbstainWhole"]


class Mode(ABC):
    """A mode's behaviour; this base holds text (only :meth:`decided` emits it) and abstains on the gate's no
    and on a guard failure."""

    #: where a choice steered from its first token was steered
    steered_from_start: SteerPoint | None = None
    #: whether the pre-generation gate's no matters at all (:meth:`gate`)
    uses_gate = True

    def add_texts(self, policy: SentencePolicy, positions: Sequence[int], texts: Sequence[str]) -> None:
        """Take tokens in order, deciding each sentence as soon as it can be (before the next token is taken)."""
        for position, text in zip(positions, texts, strict=True):
            if policy.stopped:
                break
            if policy.take(position, text):
                policy.advance()
        policy.advance()

    @abstractmethod
    def decided(self, policy: SentencePolicy, sentence: Sentence, verdict: SentenceVerdict, cut: int) -> None:
        """``sentence`` got ``verdict``; ``cut``: where the text before the token that closed it ends."""

    def gate(self, policy: SentencePolicy, reason: str) -> None:
        """The pre-generation gate said no."""
        policy.abstain(AbstainReason(kind="gate", alpha=policy.alpha, detail=reason))

    def fail_closed(self, policy: SentencePolicy, reason: str) -> None:
        """The guard cannot judge the answer."""
        policy.abstain(AbstainReason(kind="guard_failure", alpha=policy.alpha, detail=reason))

    def finish(self, policy: SentencePolicy) -> None:
        """The stream ended."""
        policy.finish()

    def tokens_before(self, position: int) -> list[tuple[int, str]]:
        """The tokens received before ``position`` and not yet replaced by steering (those a resumed choice keeps)."""
        return []

    def resumed(self) -> Mode:
        """The mode once steering has started."""
        return self


class Flag(Mode):
    """Mode "flag": text is emitted as it arrives; every verdict is reported."""

    def add_texts(self, policy: SentencePolicy, positions: Sequence[int], texts: Sequence[str]) -> None:
        """Take and emit tokens in order, deciding each sentence as soon as it can be."""
        for position, text in zip(positions, texts, strict=True):
            if policy.stopped:
                break
            decidable = policy.take(position, text)
            policy.emit(text)
            if decidable:
                policy.advance()
        policy.advance()

    def decided(self, policy: SentencePolicy, sentence: Sentence, verdict: SentenceVerdict, cut: int) -> None:
        """Report the verdict."""
        policy.record(verdict)


class Pass(Flag):
    """Mode "pass": as "flag", and neither the gate nor a guard failure stops the choice."""

    uses_gate = False

    def gate(self, policy: SentencePolicy, reason: str) -> None:
        """Ignored."""

    def fail_closed(self, policy: SentencePolicy, reason: str) -> None:
        """Ignored."""


class Abstain(Mode):
    """Mode "abstain": a sentence's text is emitted once it is decided and not flagged; the first flagged
    sentence stops the choice with the abstain message."""

    def decided(self, policy: SentencePolicy, sentence: Sentence, verdict: SentenceVerdict, cut: int) -> None:
        """Emit the sentence, or abstain."""
        policy.record(verdict)
        if verdict.verdict != "flagged":
            self.verified(policy, sentence.text)
            return
        policy.abstain(AbstainReason(kind="sentence", alpha=policy.alpha, sentence=sentence.index,
                                     p_true=verdict.p_true))

    def verified(self, policy: SentencePolicy, text: str) -> None:
        """A verified sentence's text: sent."""
        policy.emit(text)


class AbstainWhole(Abstain):
    """Mode "abstain" with the answer check (:mod:`guard.answer_check`): as "abstain", but even verified
    sentences are held until the whole answer is judged (:meth:`answer`); at the end, the answer is sent
    whole, or the abstain message alone."""

    def __init__(self) -> None:
        self.pending: list[str] = []  # sent at finish only if nothing abstained

    def verified(self, policy: SentencePolicy, text: str) -> None:
        """A verified sentence's text: held until the whole answer is judged."""
        self.pending.append(text)

    def answer(self, policy: SentencePolicy, answer: bool, reason: str, alpha: float) -> None:
        """The answer check's decision on the complete answer (``alpha``: the check's)."""
        if not answer:
            policy.abstain(AbstainReason(kind="answer", alpha=alpha, detail=reason))

    def finish(self, policy: SentencePolicy) -> None:
        """Decide the last sentences, then send the answer whole (the check answered, or could not judge)."""
        policy.finish()
        if not policy.stopped:
            for text in self.pending:
                policy.emit(text)
            policy.release_scores()
