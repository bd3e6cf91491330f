"""Sentence segmentation of generated text, fed one token at a time.

:class:`SentenceSplitter` receives each generated token as ``(position, text)`` and returns the
sentences that token closed. The sentence texts partition the text exactly: joined, they give back
every character fed, whitespace included, whatever the tokenisation (the splitter decides per
character, so only the text matters).

Where a sentence ends: after a run of ``.``, ``!``, ``?`` or ``…`` (optionally followed by closing
quotes or brackets) and then whitespace, or at whitespace holding a newline. The whitespace belongs
to the sentence it follows, so the decision is taken at the next non-whitespace character, which
also vetoes the end when it is a lowercase letter (an ellipsis mid-sentence, "approx. five"). A single
``.`` never ends a sentence after a common abbreviation ("e.g.", "i.e.", "Dr.", "Mr."), dotted
initials ("U.S.", "p.m."), a capital initial ("J. Smith") or a list number that opens the sentence
("1. First"); a ``.`` followed by a digit ("3.14") is never followed by whitespace, so never ends one.
Scripts written without spaces between sentences end them with terminators of their own: after a run of
:data:`HARD_TERMINATORS` (Chinese and Japanese ``。！？``, the Devanagari danda ``।``, Arabic ``؟``, ``۔``,
Armenian ``։``, Ethiopic ``።``; optionally followed by closing quotes or brackets such as ``」``) the next
non-whitespace character starts a new sentence, whitespace or not. :meth:`SentenceSplitter.finish` closes
whatever remains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guard.errors import AdapterError

__all__ = ["Sentence", "SentenceSplitter", "LineSplitter", "ABBREVIATIONS", "HARD_TERMINATORS"]

#: lowercased words that a single ``.`` follows without ending the sentence
ABBREVIATIONS = frozenset({"e.g", "i.e", "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "vs", "approx", "cf",
                           "fig", "al", "ca", "resp", "dept", "gen", "col", "lt", "sgt", "rev", "mt"})
_TERMINATORS = ".!?…"
#: sentence terminators that end a sentence with or without whitespace after them
HARD_TERMINATORS = "。！？｡‼⁇⁈⁉।॥؟۔։።፧"
_CLOSERS = "\"')]}”’»」』）】〕〉》〗〙〛"
_OPENERS = "\"'([{“‘«「『（【〔〈《"
_SINGLES = re.escape(HARD_TERMINATORS + _CLOSERS)
# runs of whitespace (str.isspace), single hard terminators and closers, and runs of other characters
_RUNS = re.compile(rf"\s+|[{_SINGLES}]|[^\s{_SINGLES}]+")
_CLOSERS_OR_HARD = frozenset(HARD_TERMINATORS + _CLOSERS)
_DOTTED = re.compile(r"^(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}$")  # U.S, e.g, a.m, Ph.D


@dataclass(frozen=True)
class Sentence:
    """One closed sentence.

    Attributes:
        index: 0-based order in the text.
        text: the sentence with the whitespace that follows it.
        start / end: character offsets of ``text`` in the whole generated text (end exclusive).
        first / last: positions of the tokens holding its first and last non-whitespace characters
            (for a whitespace-only text: its first and last characters); a token may end one
            sentence and begin the next, so neighbours can share a position.
    """

    index: int
    text: str
    start: int
    end: int
    first: int
    last: int


class SentenceSplitter:
    """Incremental splitter: :meth:`feed` each generated token in order, then :meth:`finish`.

    Example:
        >>> s = SentenceSplitter()
        >>> [x.text for x in s.feed(5, "It is 3.14. ")] + [x.text for x in s.feed(6, "Yes") + s.finish()]
        ['It is 3.14. ', 'Yes']
    """

    #: whether terminators end sentences (``False``: only whitespace holding a newline does)
    terminators = True

    def __init__(self) -> None:
        self._index = 0
        self._last_position: int | None = None
        self._finished = False
        self._new_sentence(0)
        self._in_space = False

    def _new_sentence(self, start: int) -> None:
        self._chars: list[str] = []
        self._start = start
        self._word: list[str] = []
        self._words = 0
        self._first: int | None = None  # token of the first non-whitespace character
        self._last: int | None = None
        self._first_any: int | None = None
        self._last_any: int | None = None
        self._newline = False
        self._candidate = False  # the text before the current whitespace ends like a sentence
        self._hard = False  # the text so far ends with a hard terminator (closers and whitespace may follow)

    def feed(self, position: int, text: str) -> list[Sentence]:
        """Add one token; returns the sentences it closed (usually none or one).

        Raises:
            AdapterError: positions are not strictly increasing, or the splitter has finished.
        """
        if self._finished:
            raise AdapterError(f"token at position {position} fed after finish(); start a new SentenceSplitter")
        if self._last_position is not None and position <= self._last_position:
            raise AdapterError(f"token position {position} is not after the previous one ({self._last_position}); "
                               "feed generated tokens in order, each once")
        self._last_position = position
        closed = []
        for run in _RUNS.findall(text):
            sentence = self._push(run, position)
            if sentence is not None:
                closed.append(sentence)
        return closed

    def finish(self) -> list[Sentence]:
        """Close the remaining text as the last sentence (nothing when no text remains); idempotent."""
        self._finished = True
        return [self._close()] if self._chars else []

    def _push(self, run: str, position: int) -> Sentence | None:
        """One run of whitespace or of other characters: every decision falls on a run's first
        character (the rest of a run only extends it), so runs give what characters one by one would."""
        closed = None
        if run[0].isspace():
            if not self._in_space and self._words:
                self._candidate = self.terminators and _ends_sentence("".join(self._word), self._words == 1)
            self._in_space = True
            self._newline = self._newline or "\n" in run
        else:
            if self._hard and run[0] in _CLOSERS_OR_HARD:
                pass  # a closing quote or another terminator still belongs to the ending sentence
            elif self._hard or (self._in_space and self._words and
                                (self._newline or (self._candidate and not run[0].islower()))):
                closed = self._close()
            if self._in_space or not self._word:
                self._word, self._words = [], self._words + 1
                self._newline = self._candidate = False
            self._in_space = False
            self._word.append(run)
            self._hard = self._hard or (self.terminators and run[-1] in HARD_TERMINATORS)
            self._first = position if self._first is None else self._first
            self._last = position
        self._chars.append(run)
        self._first_any = position if self._first_any is None else self._first_any
        self._last_any = position
        return closed

    def _close(self) -> Sentence:
        """Close the current sentence; the character being pushed (if any) starts the next one."""
        text = "".join(self._chars)
        first = self._first if self._first is not None else self._first_any
        last = self._last if self._last is not None else self._last_any
        assert first is not None and last is not None  # a sentence closes only once a token pushed text into it
        sentence = Sentence(self._index, text, self._start, self._start + len(text), first, last)
        self._index += 1
        self._new_sentence(sentence.end)
        return sentence


class LineSplitter(SentenceSplitter):
    """Cuts at line breaks only: each line (or paragraph) is one unit, whatever its punctuation.

    For answers whose lines are the units a reader checks (lists, tables, code, one claim per line), and
    for text whose full stops are not sentence ends. The same contract as :class:`SentenceSplitter`.

    Example:
        >>> s = LineSplitter()
        >>> [x.text for x in s.feed(0, "1. Paris. Yes\n2. Rome") + s.finish()]
        ['1. Paris. Yes\n', '2. Rome']
    """

    terminators = False


def _ends_sentence(word: str, first_word: bool) -> bool:
    """Whether a sentence may end after ``word`` (the last non-whitespace run before whitespace)."""
    core = word.rstrip(_CLOSERS)
    stem = core.rstrip(_TERMINATORS)
    run = core[len(stem):]
    if not run:
        return False
    if run != ".":
        return True  # ! ? ?! ... …: an ellipsis mid-sentence is vetoed by the lowercase look-ahead
    stem = stem.lstrip(_OPENERS)
    abbreviation = (stem.lower() in ABBREVIATIONS or _DOTTED.match(stem) is not None
                    or (len(stem) == 1 and stem.isupper()) or (first_word and stem.isdigit()))
    return not abbreviation
