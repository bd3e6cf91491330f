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
import unicodedata
from collections.abc import Sequence

__all__ = ["answer_words", "same_answer", "agreement"]

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}

#: words that carry no answer: articles, pronouns, auxiliaries, prepositions, conjunctions and answer fillers
_FUNCTION_WORDS = frozenset("""
a an the this that these those it its it's there here they them their he she his her him we our you your i my me
is are was were be been being am do does did done has have had having will would shall should can could may might
must of in on at to for from by with about as into onto over under between through during after before than then
and or but nor so if because while also too very much many more most some any each every all no not
what which who whom whose when where why how answer answers correct correctly called named known located situated
yes well actually approximately about around roughly exactly just only s t
""".split())

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_TOKEN = re.compile(r"[^\W_][\w'-]*")
_NON_WORD = re.compile(r"[\W_]+")


def _words(text: str) -> list[str]:
    """Normalised words of ``text``: case folded, accents dropped (letters of every script kept), punctuation as
    spaces, number words as digits."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
    words = _NON_WORD.sub(" ", folded).split()
    out: list[str] = []
    for word in words:
        value = _NUMBER_WORDS.get(word)
        if value is not None and out and out[-1].isdigit() and int(out[-1]) % 10 == 0 and 20 <= int(out[-1]) < 100 \
                and value < 10:
            out[-1] = str(int(out[-1]) + value)  # "forty two" -> 42
        else:
            out.append(str(value) if value is not None else word)
    return out


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
            out += [w for w in _words(token) if w not in skip and w not in _FUNCTION_WORDS]
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
    asked = set(_words(question))
    sentence = _first_sentence(answer)
    named = _named(sentence, asked)
    if named:
        return named
    content = [w for w in _words(sentence) if w not in _FUNCTION_WORDS]
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
