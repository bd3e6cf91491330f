"""Whether sampled answers say what the answer says, for any question: no vocabulary, no judge model.

Asking the model again is the strongest sign of whether its answer is right that this project has measured
(calibration/results/README.md): a model that knows the answer says it again; one that guesses says something
else each time. Counting agreement needs to know when two answers *say the same thing*. With a relation's
answer vocabulary that is easy (the first entity named); for any question it is not. This module judges it
from the words alone:

* :func:`answer_words` — what an answer says in answer to its question, read from the first sentence of its
  first line, normalised (case folded, accents and punctuation dropped, letters of any script kept, number
  words as digits), without
  function words and without the words of the question itself: its **names and numbers** (capitalised words,
  digits) when it has some ("The capital of France is Paris." asked "What is the capital of
  France?" says ``("paris",)``), else its other words; an answer in the question's own words ("45 is larger
  than 912") keeps them in order;
* :func:`same_answer` — two answers agree when they share such a word (answers in the question's own words:
  when they put the same word first);
* :func:`agreement` — the share of samples that agree with the answer (the ``agreement`` signal of the
  answer check, :mod:`guard.answer_check`).

On guard's own 2,598 questions (19 relations, the model's greedy answer and five samples each) this agreement
ranks the model's answers at a median left-out-relation AUROC of 0.78, against 0.89 with each relation's
answer vocabulary and 0.67 for the answer's log-probability; it is weakest where answers are common nouns
(animal classes, professions: "mammal" shares no name) and where the answer repeats the question's options.

Pure stdlib; every function is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from guard.words import FUNCTION_WORDS, words

__all__ = ["answer_words", "same_answer", "agreement"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_TOKEN = re.compile(r"[^\W_][\w'-]*")


def _first_sentence(answer: str) -> str:
    """The first sentence of the answer's first non-empty line."""
    stripped = answer.strip()
    line = stripped.split("\n", 1)[0] if stripped else ""
    return _SENTENCE_END.split(line, 1)[0]


def _named(sentence: str, skip: set[str]) -> tuple[str, ...]:
    """Numbers and capitalised words (names), normalised, not in ``skip`` and not function words."""
    out = []
    for token in _TOKEN.findall(sentence):
        if token[0].isdigit() or token[0].isupper():
            out += [w for w in words(token) if w not in skip and w not in FUNCTION_WORDS]
    return tuple(out)


def answer_words(answer: str, question: str = "") -> tuple[str, ...]:
    """What ``answer`` says in answer to ``question``, as words (see the module docstring): the names and numbers
    of its first sentence that the question does not say; else its other content words the question does not
    say; else, marked by a leading ``"="``, its content words in order (an answer in the question's own words,
    such as "45 is larger than 912" to "Which is larger, 45 or 912?", says which of them comes first).

    Example:
        >>> answer_words("The capital of France is Paris.", "What is the capital of France?")
        ('paris',)
        >>> answer_words("Forty-two legs. Really.", "How many legs?")
        ('42',)
        >>> answer_words("45 is larger than 912.", "Which is larger, 45 or 912?")
        ('=', '45', 'larger', '912')
    """
    asked = set(words(question))
    sentence = _first_sentence(answer)
    named = _named(sentence, asked)
    if named:
        return named
    content = [w for w in words(sentence) if w not in FUNCTION_WORDS]
    new = tuple(w for w in content if w not in asked)
    return new if new or not content else ("=", *content)


def same_answer(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two answers' :func:`answer_words` say the same thing: they share a word; answers in the question's
    own words (marked ``"="``) must put the same word first; two answers that say nothing agree."""
    if not a or not b:
        return not a and not b
    if a[0] == "=" or b[0] == "=":
        return a[:2] == b[:2]
    return not set(a).isdisjoint(b)


def agreement(answer: str, samples: Sequence[str], question: str = "") -> float:
    """Share of ``samples`` that say what ``answer`` says (``0.0`` without samples).

    Example:
        >>> agreement("Paris.", ["It is Paris.", "Lyon", "Paris, of course"], "What is the capital of France?")
        0.6666666666666666
    """
    if not samples:
        return 0.0
    mine = answer_words(answer, question)
    return sum(same_answer(mine, answer_words(s, question)) for s in samples) / len(samples)
