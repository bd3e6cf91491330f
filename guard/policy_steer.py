"""Mode "steer" of :mod:`guard.policy`, in its three ways, as strategies of :mod:`guard.policy_modes`.

``continue`` and ``regenerate`` (:class:`SteerContinue`, :class:`SteerRegenerate`) hold text per
token and ask to steer at the gate or at the first flagged sentence; once the steered generation
has started (:func:`guard.policy_resume.resume`) the choice goes on as :class:`Steered`, like mode
"flag". ``always`` (:class:`Always`) is steered from the first token and reports like mode "flag".
The contract is :mod:`guard.policy`'s.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

from guard.policy_modes import Flag, Mode
from guard.policy_sentences import SentencePolicy
from guard.sentences import Sentence
from guard.verdicts import SentenceVerdict, SteerPoint

__all__ = ["Always", "Steer", "SteerContinue", "SteerRegenerate", "Steered"]


class Always(Flag):
    """Mode "steer" with ``always``: steered from the first token, reported as "flag"; the gate is moot.

    Args:
        point: where and how it is steered.
    """

    def __init__(self, point: SteerPoint) -> None:
        self.steered_from_start = point

    def gate(self, policy: SentencePolicy, reason: str) -> None:
        """Ignored: every token is steered anyway."""


class Steered(Flag):
    """Mode "steer" once the steering has started: as "flag", but the gate would ask to steer again.

    Args:
        how: ``continue`` or ``regenerate``.
        strength: the steering strength.
    """

    def __init__(self, how: Literal["continue", "regenerate"], strength: float) -> None:
        self.how, self.strength = how, strength

    def gate(self, policy: SentencePolicy, reason: str) -> None:
        """Ask to steer from the first generated token."""
        _ask(policy, self.how, self.strength, "gate", None, 0, None)


class Steer(Mode):
    """Mode "steer" before steering: text is held per token; the gate or the first flagged sentence asks to
    steer (as :attr:`how` says), and once the steering has started the choice goes on as :class:`Steered`.

    Args:
        strength: the steering strength.
    """

    how: Literal["continue", "regenerate"]

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self._log: list[tuple[int, str]] = []  # every token, to resume from
        self._pending = ""  # received text not yet emitted

    def add_texts(self, policy: SentencePolicy, positions: Sequence[int], texts: Sequence[str]) -> None:
        """Take and hold tokens in order, deciding each sentence as soon as it can be."""
        for position, text in zip(positions, texts, strict=True):
            if policy.stopped:
                break
            decidable = policy.take(position, text)
            self._log.append((position, text))
            self._pending += text
            if decidable:
                policy.advance()
        policy.advance()

    def decided(self, policy: SentencePolicy, sentence: Sentence, verdict: SentenceVerdict, cut: int) -> None:
        """Ask to steer at a flagged sentence; else report it and emit what it allows."""
        if verdict.verdict == "flagged":
            position = self._steer_from(verdict)
            kept = sum(len(t) for p, t in self._log if p < position) if position is not None else 0
            _ask(policy, self.how, self.strength, "sentence", position, kept, verdict)
            return
        policy.record(verdict)
        self._release(policy, cut)

    def gate(self, policy: SentencePolicy, reason: str) -> None:
        """Ask to steer from the first generated token."""
        _ask(policy, self.how, self.strength, "gate", None, 0, None)

    def finish(self, policy: SentencePolicy) -> None:
        """Decide the rest; send what is still held when nothing was flagged."""
        policy.finish()
        if not policy.stopped and self._pending:
            policy.emit(self._pending)
            self._pending = ""
            policy.release_scores()

    def tokens_before(self, position: int) -> list[tuple[int, str]]:
        """The tokens received before ``position``."""
        return [(p, t) for p, t in self._log if p < position]

    def resumed(self) -> Mode:
        """:class:`Steered`."""
        return Steered(self.how, self.strength)

    @abstractmethod
    def _steer_from(self, flagged: SentenceVerdict) -> int | None:
        """The first position to generate steered at ``flagged`` (``None``: the first generated one)."""

    @abstractmethod
    def _release(self, policy: SentencePolicy, cut: int) -> None:
        """A sentence was decided and not flagged; ``cut``: where the text before the token closing it ends."""


class SteerContinue(Steer):
    """``continue``: text is emitted up to the first token of the first sentence not yet decided; a flagged
    sentence is replaced by text generated steered from its first token on."""

    how = "continue"

    def _steer_from(self, flagged: SentenceVerdict) -> int | None:
        return flagged.first

    def _release(self, policy: SentencePolicy, cut: int) -> None:
        if cut > policy.emitted:
            n = cut - policy.emitted
            policy.emit(self._pending[:n])
            self._pending = self._pending[n:]


class SteerRegenerate(Steer):
    """``regenerate``: nothing is emitted until the whole answer is decided; at a flagged sentence a fresh
    answer is generated steered."""

    how = "regenerate"

    def _steer_from(self, flagged: SentenceVerdict) -> int | None:
        return None

    def _release(self, policy: SentencePolicy, cut: int) -> None:
        pass  # everything waits for the end


def _ask(policy: SentencePolicy, how: Literal["continue", "regenerate"], strength: float,
         kind: Literal["gate", "sentence"], position: int | None, kept: int, flagged: SentenceVerdict | None) -> None:
    """Stop and ask to steer from ``position`` (``None``: the first generated one), keeping ``kept`` characters."""
    policy.ask_to_steer(SteerPoint(kind=kind, how=how, alpha=policy.alpha, strength=strength, position=position,
                                   kept_chars=kept, flagged=flagged))
