"""Where the pre-generation gate applies: questions worded as the ones it was calibrated on.

The gate reads the prompt's last row before anything is generated and guesses whether the model will answer
right. On the model this project ships, that guess carries over to new facts of the relations it was calibrated
on, but not to new kinds of question: left out of calibration, a relation's questions are ranked below chance on
4 of 19 relations (calibration/results/README.md), and neither the gate's rows nor the probe's shift score tell a
new relation from a known one. What does tell them apart is the wording. :class:`QuestionScope` keeps, for each
calibrated question template, its **frame**: the words all of that template's questions begin with and end with
(normalised by :func:`guard.words.words`), when they include a content word — "what is the capital of" for
"What is the capital of France?", "the city of" … "belongs to which country" for "The city of Rotterdam belongs
to which country?". A question is in scope when its words hold one frame with at least one word between its two
ends (the facts' own words: an entity, a number); anything else — another relation, another wording — is out,
and the gate lets it through undecided (:class:`guard.gating.GateRule`), saying so.

A frame is searched for anywhere in the text, so a rendered chat prompt, or a question with a sentence before
it, is matched as its bare question is. Pure stdlib and pydantic; plain data in the gate's manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from guard.words import FUNCTION_WORDS, words

__all__ = ["Frame", "QuestionScope"]


class Frame(BaseModel):
    """One calibrated template's constant words: those its questions start with and those they end with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    head: tuple[str, ...]
    tail: tuple[str, ...]

    def found_in(self, text: Sequence[str], at: Mapping[str, Sequence[int]] | None = None) -> bool:
        """Whether the words ``text`` hold ``head``, then at least one word, then ``tail``.

        ``at``: where each word of ``text`` stands, in order (:func:`_positions`; computed when not given), so a
        long text is searched only where the head and the tail can begin.
        """
        h, t, n = len(self.head), len(self.tail), len(text)
        where = _positions(text) if at is None else at
        first = 0
        if h:  # the earliest end of the head leaves the most room for the rest
            first = next((i + h for i in where.get(self.head[0], ()) if tuple(text[i : i + h]) == self.head), -1)
            if first < 0:
                return False
        if not t:
            return first < n
        return any(first + 1 <= j <= n - t and tuple(text[j : j + t]) == self.tail
                   for j in where.get(self.tail[0], ()))


def _positions(text: Sequence[str]) -> dict[str, list[int]]:
    """Where each word of ``text`` stands, in ascending order."""
    at: dict[str, list[int]] = {}
    for i, word in enumerate(text):
        at.setdefault(word, []).append(i)
    return at


def _frame(template: str, questions: Sequence[str]) -> Frame | None:
    """The template's frame, or ``None`` when its constant words carry no content (or it has one question)."""
    seqs = [words(q) for q in questions]
    if len(seqs) < 2:
        return None
    head = os.path.commonprefix(seqs)
    tail = os.path.commonprefix([s[::-1] for s in seqs])[::-1]
    shortest = min(len(s) for s in seqs)
    if len(head) + len(tail) >= shortest:  # no word left between them in the shortest: shorten the tail
        tail = tail[len(head) + len(tail) - shortest + 1 :]
    if not any(w.isalpha() and w not in FUNCTION_WORDS for w in (*head, *tail)):
        return None
    return Frame(template=template, head=tuple(head), tail=tuple(tail))


class QuestionScope(BaseModel):
    """The frames of the question templates a gate was calibrated on (see the module)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frames: tuple[Frame, ...]

    @classmethod
    def fit(cls, questions: Mapping[str, Sequence[str]]) -> QuestionScope:
        """The scope of calibration ``questions`` grouped by template (templates without a frame are left out)."""
        frames = (_frame(template, qs) for template, qs in sorted(questions.items()))
        return cls(frames=tuple(f for f in frames if f is not None))

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> QuestionScope:
        """:meth:`fit` over ``(template, question)`` pairs."""
        grouped: dict[str, list[str]] = {}
        for template, question in pairs:
            grouped.setdefault(template, []).append(question)
        return cls.fit(grouped)

    def match(self, text: str) -> Frame | None:
        """The first frame ``text`` is worded in, or ``None`` (out of scope)."""
        said = words(text)
        at = _positions(said)  # once for every frame
        return next((f for f in self.frames if f.found_in(said, at)), None)

    def covers(self, text: str) -> bool:
        """Whether ``text`` holds a question worded as a calibrated one."""
        return self.match(text) is not None
