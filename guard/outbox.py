"""What one choice has to send, gathered until it is taken as one :class:`~guard.verdicts.GuardEvent`.

The stream guard fills one while it handles a call (text released, token scores, sentence
verdicts, an abstention, a request to steer) and hands it over as the call's event; the server's
session gathers those events across a chunk's calls and takes them when it shapes the chunk.
Taking an empty outbox returns one shared empty event: no allocation on the calls (most of them)
that release nothing.
"""

from __future__ import annotations

from guard.verdicts import (
    AbstainReason,
    GuardEvent,
    SentenceVerdict,
    SteerPoint,
    TokenScore,
)

__all__ = ["NOTHING", "Outbox"]

#: the event with nothing to send (frozen, so shared)
NOTHING = GuardEvent()


class Outbox:
    """Accumulates what to send; :meth:`take` returns it as one event and empties the outbox.

    Example:
        >>> box = Outbox()
        >>> box.text.append("Paris. ")
        >>> box.take().text, box.take() is NOTHING
        ('Paris. ', True)
    """

    __slots__ = ("text", "scores", "sentences", "abstained", "steer")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.scores: list[TokenScore] = []
        self.sentences: list[SentenceVerdict] = []
        self.abstained: AbstainReason | None = None
        self.steer: SteerPoint | None = None

    def add(self, event: GuardEvent) -> None:
        """Append an event's contents (an abstention already held is kept; a later steer replaces one)."""
        if event.text:
            self.text.append(event.text)
        self.scores.extend(event.token_scores)
        self.sentences.extend(event.sentences)
        if event.abstained is not None and self.abstained is None:
            self.abstained = event.abstained
        if event.steer is not None:
            self.steer = event.steer

    def take(self) -> GuardEvent:
        """Everything gathered since the last take, as one event (:data:`NOTHING` when empty)."""
        if not (self.text or self.scores or self.sentences or self.abstained is not None or self.steer is not None):
            return NOTHING
        event = GuardEvent("".join(self.text), tuple(self.scores), tuple(self.sentences), self.abstained, self.steer)
        self.text, self.scores, self.sentences, self.abstained, self.steer = [], [], [], None, None
        return event
