"""Grading a short answer: where an accepted answer is said, whether it is said first, and which tokens say it.

Matching is on normalised text (lower case, accents, articles and punctuation dropped) and on whole words,
so "The capital of France is Paris." states "Paris" and "Parisian" does not. An answer is correct when the
first line mentions an accepted answer *before* any distractor (the other option of a "which is larger, X or
Y?" question): "912 is larger than 45" is right, "45 is larger than 912" is wrong.

:func:`answer_span` maps the first accepted mention back to the generated *tokens* — the exact answer
tokens, where a model's error signal concentrates — through the text's character offsets.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from guard.errors import ConfigError

__all__ = ["normalise", "first_line", "first_mention", "first_new_number", "grade", "answer_key", "answer_span"]

_ARTICLES = re.compile(r"\b(the|a|an)\b")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lower-case, strip accents, articles and punctuation, collapse spaces."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = _ARTICLES.sub(" ", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


def _folded(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased, accents dropped, every other non-alphanumeric a space; and, per folded
    character, the index of the original character it came from (so matches map back to offsets)."""
    chars: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode().lower()
        for b in base or " ":
            chars.append(b if b.isalnum() else " ")
            where.append(i)
    return "".join(chars), where


def _pattern(phrase: str) -> re.Pattern[str] | None:
    words = normalise(phrase).split()
    if not words:
        return None
    return re.compile(r"(?<![0-9a-z])" + r"[ ]+".join(map(re.escape, words)) + r"(?![0-9a-z])")


def _matches(text: str, phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` in ``text`` of every whole-word mention of any phrase."""
    folded, where = _folded(text)
    patterns = [p for p in map(_pattern, phrases) if p is not None]
    return [(where[m.start()], where[m.end() - 1] + 1) for p in patterns for m in p.finditer(folded)]


def first_mention(text: str, phrases: Sequence[str]) -> tuple[int, int] | None:
    """Character span ``(start, end)`` in ``text`` of the earliest whole-word mention of any phrase."""
    return min(_matches(text, phrases), key=lambda span: span[0], default=None)


def first_line(answer: str) -> str:
    """An answer's first non-empty line, stripped (what is graded)."""
    stripped = answer.strip()
    return stripped.split("\n", 1)[0] if stripped else ""


def _mentions(text: str, phrases: Sequence[str]) -> int:
    """How many distinct places of ``text`` mention one of ``phrases``."""
    return len({start for start, _ in _matches(text, phrases)})


def grade(answer: str, accepted: Sequence[str], distractors: Sequence[str] = (), question: str = "") -> bool:
    """Whether the answer's first line states an accepted answer, before any distractor.

    Two more rules keep a grader honest about short answers: when the question lists three or more options,
    an answer that repeats two of them is a list, not an answer; and, given the question, when the answer is a
    number, a different number of as many digits or more that the question does not say, said before it, makes
    the answer wrong ("The answer is 20. It has two pairs of legs").

    Raises:
        ConfigError: no accepted answer is given.
    """
    if not [a for a in accepted if normalise(a)]:
        raise ConfigError(f"grading needs at least one accepted answer; the QA item has {list(accepted)!r}")
    line = first_line(answer)
    right = first_mention(line, accepted)
    if right is None:
        return False
    wrong = first_mention(line, distractors) if distractors else None
    if wrong is not None and wrong[0] < right[0]:
        return False
    options = (*accepted, *distractors)
    if question and _mentions(question, options) >= 3 and _mentions(line, options) >= 2:
        return False
    digits = normalise(accepted[0])
    # a day before a year ("July 14, 1863") is not a competing answer: shorter numbers pass
    if question and digits.isdigit():
        number = _new_number(line, question)
        if (number is not None and number.start() < right[0] and number.group() != digits
                and len(number.group()) >= len(digits)):
            return False
    return True


def answer_key(answer: str, vocabulary: Mapping[str, Sequence[str]]) -> str:
    """What an answer says, as one key: the vocabulary entry it mentions first, else its normalised first line.

    Two answers with the same key say the same thing (the semantic classes of
    :func:`calibration.semantic.semantic_entropy`). ``vocabulary`` maps a key to its spellings.
    """
    line = first_line(answer)
    best: tuple[int, str] | None = None
    for key, spellings in vocabulary.items():
        span = first_mention(line, spellings)
        if span is not None and (best is None or span[0] < best[0]):
            best = (span[0], key)
    return best[1] if best else f"text:{normalise(line)}"


_NUMBER = re.compile(r"(?<![0-9a-z])[0-9]+(?![0-9a-z])")


def _new_number(text: str, question: str) -> re.Match[str] | None:
    said = set(_NUMBER.findall(normalise(question)))
    return next((m for m in _NUMBER.finditer(text) if m.group() not in said), None)


def first_new_number(text: str, question: str = "") -> str | None:
    """The first number written in digits in ``text`` that the question does not say ("12" in "18 minus 6
    equals 12" for "What is 18 minus 6?")."""
    match = _new_number(text, question)
    return match.group() if match else None


def answer_span(token_texts: Sequence[str], candidates: Sequence[str], question: str = "") -> tuple[int, int] | None:
    """The generated tokens ``[first, last)`` that carry the answer: the first line's earliest mention of a
    candidate (pass every answer the question could get, right or wrong, so the span does not depend on the
    grade), else its first number the question does not say.

    Args:
        token_texts: the answer's text after each generated token (``texts[i]`` = decode of tokens ``0..i``),
            so offsets are right for tokens that split a character.

    Returns:
        The token range covering the answer, or ``None`` when the first line names none.
    """
    if not token_texts:
        return None
    text = token_texts[-1]
    newline = text.find("\n", len(text) - len(text.lstrip()))
    line = text[:newline] if newline >= 0 else text
    span = first_mention(line, candidates)
    if span is None:
        number = _new_number(line, question)
        if number is None:
            return None
        span = number.span()
    ends = [len(t) for t in token_texts]
    first = next(i for i, end in enumerate(ends) if end > span[0])
    last = next(i for i, end in enumerate(ends) if end >= span[1])
    return first, last + 1
