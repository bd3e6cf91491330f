"""A relation: facts (subject slots -> answer), the templates that word its claim, and how to pick a wrong answer.

A template's format strings name slots: the fact's own (``s``, ``a``, ``unit`` ...), ``o`` for the answer, and
what a relation's ``extra`` adds. Each slot also comes with an indefinite article (``s_a``: "an eagle") and
with its first letter capitalised (``S``, ``O_a``). Numbers are written as digits, or as words in a template
with ``words=True``. Templates begin with a literal or a lower-case slot: the sentence's capital is added when
it is said, so the same claim can also sit mid-sentence (the second half of a compound).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from calibration.number_words import number_words

__all__ = ["Value", "Template", "Fact", "Relation", "WrongPicker", "other_answer", "nearby_number", "the_other_slot",
           "sentence_case", "fill"]

#: a slot or answer: a name, or a number (said as digits or words)
Value = str | int
#: picks a plausible wrong answer for a fact, given the relation's distinct answers
WrongPicker = Callable[[random.Random, "Fact", Sequence[Value]], Value]


@dataclass(frozen=True)
class Template:
    """One wording of a relation's claim: an affirmative and a negated format string (the negation flips it).

    Example:
        >>> Template("The capital of {s} is {o}.", "The capital of {s} is not {o}.")
    """

    affirmative: str
    negated: str
    qa: bool = False  # a question-answer exchange (its negated form asks yes/no and answers "No")
    words: bool = False  # numbers written as words rather than digits


@dataclass(frozen=True)
class Fact:
    """One fact of a relation: a key unique within the relation, its subject slots and the true answer."""

    key: str
    slots: Mapping[str, Value]
    answer: Value


def sentence_case(text: str) -> str:
    """``text`` with its first letter capitalised and the rest untouched ("the Louvre" -> "The Louvre")."""
    return text[:1].upper() + text[1:]


def _article(text: str) -> str:
    return f"{'an' if text[:1].lower() in 'aeiou' else 'a'} {text}"


def fill(pattern: str, values: Mapping[str, Value], words: bool = False) -> str:
    """``pattern`` with its slots filled: each value as is, with an article (``s_a``) and capitalised (``S``);
    numbers as digits, or as words with ``words``."""
    said: dict[str, str] = {}
    for key, value in values.items():
        text = number_words(value) if words and isinstance(value, int) else str(value)
        upper = key[:1].upper() + key[1:]
        said |= {key: text, f"{key}_a": _article(text), upper: sentence_case(text),
                 f"{upper}_a": sentence_case(_article(text))}
    return pattern.format(**said)


def other_answer(rng: random.Random, fact: Fact, answers: Sequence[Value]) -> Value:
    """Another answer of the same relation, uniformly ("Rome" for the capital of France)."""
    return rng.choice([a for a in answers if a != fact.answer])


def nearby_number(low: int, high: int, lowest: int = 0, highest: int = 9999) -> WrongPicker:
    """A picker of numbers ``low``..``high`` away from the true one, kept within ``lowest``..``highest``."""

    def pick(rng: random.Random, fact: Fact, answers: Sequence[Value]) -> Value:
        true = int(fact.answer)
        near = [true + d for d in range(-high, high + 1) if abs(d) >= low and lowest <= true + d <= highest]
        return rng.choice(near)

    return pick


def the_other_slot(first: str, second: str) -> WrongPicker:
    """A picker that answers with whichever of two slots is not the true answer (the smaller number)."""

    def pick(rng: random.Random, fact: Fact, answers: Sequence[Value]) -> Value:
        return fact.slots[second] if fact.answer == fact.slots[first] else fact.slots[first]

    return pick


@dataclass(frozen=True)
class Relation:
    """A relation's facts and templates, wrong-answer picker and made-up stand-ins.

    ``fake_slots`` maps subject slots to patterns over made-up names (``{n0}``: "Zorvath", ``{l0}``:
    "zorvath"); ``fake_answers`` are answer patterns, one chosen at random (none: a real answer).
    """

    name: str
    facts: tuple[Fact, ...]
    templates: tuple[Template, ...]
    fake_slots: Mapping[str, str]
    fake_answers: tuple[str, ...] = ()
    wrong: WrongPicker = other_answer
    extra: Callable[[Mapping[str, Value], Value], dict[str, Value]] | None = None

    @property
    def answers(self) -> tuple[Value, ...]:
        """The relation's distinct true answers, in a fixed order."""
        return tuple(sorted({f.answer for f in self.facts}, key=str))

    def fact_id(self, fact: Fact) -> str:
        """The group id of every statement about ``fact`` ("capital:France")."""
        return f"{self.name}:{fact.key}"

    def template_id(self, index: int) -> str:
        """The wording id of template ``index`` ("capital/0")."""
        return f"{self.name}/{index}"

    def render(self, index: int, slots: Mapping[str, Value], answer: Value, negated: bool = False) -> str:
        """The claim that ``answer`` is the answer for ``slots``, in template ``index``, written mid-sentence."""
        template = self.templates[index]
        pattern = template.negated if negated else template.affirmative
        values: dict[str, Value] = {**slots, "o": answer, **(self.extra(slots, answer) if self.extra else {})}
        out = fill(pattern, values, template.words)
        return out if pattern.startswith("{") else out[:1].lower() + out[1:]

    def say(self, index: int, slots: Mapping[str, Value], answer: Value, negated: bool = False) -> str:
        """:meth:`render` as a sentence of its own.

        Example:
            >>> capital.say(0, {"s": "France"}, "Paris", negated=True)  # a relation whose template 0 is above
            'The capital of France is not Paris.'
        """
        return sentence_case(self.render(index, slots, answer, negated))

    def fake(self, rng: random.Random, names: Iterator[str]) -> tuple[dict[str, Value], Value]:
        """Slots and an answer about made-up entities, over three fresh ``names`` (a real fact's other slots)."""
        drawn = [next(names) for _ in range(3)]
        fill = {f"n{i}": n for i, n in enumerate(drawn)} | {f"l{i}": n.lower() for i, n in enumerate(drawn)}
        slots: dict[str, Value] = dict(rng.choice(self.facts).slots)
        slots |= {key: pattern.format(**fill) for key, pattern in self.fake_slots.items()}
        answer = rng.choice(self.fake_answers).format(**fill) if self.fake_answers else rng.choice(self.answers)
        return slots, answer
