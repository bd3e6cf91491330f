"""Labelled statements (true / false / neither) and closed-book QA items generated from our facts.

Every relation of :data:`calibration.templates.CATALOGUE` words each of its facts in ``templates_per_fact``
of its templates, four ways: the true claim, a false one (a plausible wrong answer), and the negation of
each (which flips the label). *Neither* statements say the same things about made-up entities;
compounds join two affirmatives of one relation and template with "and" / "or" (labelled by the truth
tables). Generation is deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from calibration.facts import COUNTRIES, ELEMENTS, EVENTS, UNITS
from calibration.number_words import number_words
from calibration.relation import Fact, Relation, sentence_case
from calibration.templates import CATALOGUE

__all__ = ["LABELS", "FORMS", "RELATIONS", "Statement", "QAItem", "generate_statements", "generate_qa",
           "made_up_names", "number_words"]

LABELS = ("true", "false", "neither")
#: how a statement is worded: an affirmative (plain or question-answer), a negation, or a compound
FORMS = ("plain", "negated", "qa", "conjunction", "disjunction")
#: the domain of every generated statement: one per relation
RELATIONS: tuple[str, ...] = tuple(r.name for r in CATALOGUE)
#: the share of each relation's statements about made-up entities, and of compounds
NEITHER_SHARE, COMPOUND_SHARE = 0.17, 0.05
#: made-up names that are real words (places, animals, food) a name of six letters or more could spell
_REAL_WORDS = frozenset("""
banana tomato potato salami bikini tornado gorilla vanilla panama nevada canada toronto manila verona savona
madonna pamela sonata kimono domino tobago palermo salerno modena torino milano kosovo moldova dakota tarzan
gelato tamale falafel sesame sardine gerbil marten mantis termite bonobo salmon sultan garden pardon tendon
gallon marina sabina kerala sonoma belize lisbon parasol bolero lasagne tarantula serenade sirena pelikan
""".split())


@dataclass(frozen=True)
class Statement:
    """One labelled statement.

    Example:
        >>> Statement("The capital of France is not Rome.", "true", "capital", "capital:France", True,
        ...           "capital/0", "negated")
    """

    text: str
    label: str  # one of LABELS
    domain: str  # the relation, e.g. "capital"
    #: statements about the same fact share it (true, false, negated and compound forms): splits keep them together
    fact: str = ""
    negated: bool = False
    #: the wording, "<domain>/<k>" for the relation's template k
    template: str = ""
    form: str = "plain"  # one of FORMS


@dataclass(frozen=True)
class QAItem:
    """A closed-book question with its accepted answers."""

    question: str
    answers: tuple[str, ...]
    domain: str
    #: the fact asked about (``"capital:France"``) and the question's wording (``"capital/q1"``), when known
    fact: str = ""
    template: str = ""
    #: other options the question names; an answer that says one of them first is wrong
    distractors: tuple[str, ...] = ()


def made_up_names(rng: random.Random, n: int) -> list[str]:
    """Pronounceable names that are not in any of our fact tables."""
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "n", "r", "s", "th", "l"]
    known = {w.lower() for w in [*COUNTRIES, *ELEMENTS, *(c for c, _, _ in COUNTRIES.values())]}
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(2, 3)))
        if name not in known and name.capitalize() not in names:
            names.append(name.capitalize())
    return names


def _fresh_names(rng: random.Random) -> Iterator[str]:
    """Made-up names of six letters or more that spell no word of any fact and no word we know to be real."""
    said = " ".join(f"{f.key} {' '.join(map(str, f.slots.values()))} {f.answer}" for r in CATALOGUE for f in r.facts)
    taken = {w.lower() for w in re.findall(r"[A-Za-z]+", said)} | _REAL_WORDS
    seen: set[str] = set()
    while True:
        for name in made_up_names(rng, 100):
            if len(name) >= 6 and name.lower() not in taken and name not in seen:
                seen.add(name)
                yield name


def _form(relation: Relation, index: int, negated: bool) -> str:
    return "negated" if negated else "qa" if relation.templates[index].qa else "plain"


def _claims(rng: random.Random, relation: Relation, fact: Fact, index: int) -> list[tuple[Statement, str]]:
    """The true and false affirmatives of ``fact`` in template ``index`` and their negations, each with its
    mid-sentence wording."""
    wrong = relation.wrong(rng, fact, relation.answers)
    out = []
    for answer, negated in ((fact.answer, False), (wrong, False), (wrong, True), (fact.answer, True)):
        said = relation.render(index, fact.slots, answer, negated)
        label = "true" if (answer == fact.answer) != negated else "false"
        out.append((Statement(sentence_case(said), label, relation.name, relation.fact_id(fact), negated,
                              relation.template_id(index), _form(relation, index, negated)), said))
    return out


def _fictional(rng: random.Random, relation: Relation, per_fact: int, n: int, names: Iterator[str]) -> list[Statement]:
    """``n`` made-up facts, each said (affirmed and negated) in ``per_fact`` templates: all *neither*."""
    out = []
    for i in range(n):
        slots, answer = relation.fake(rng, names)
        for index in sorted(rng.sample(range(len(relation.templates)), per_fact)):
            out += [Statement(relation.say(index, slots, answer, negated), "neither", relation.name,
                              f"fictional:{relation.name}:{i}", negated, relation.template_id(index),
                              _form(relation, index, negated)) for negated in (False, True)]
    return out


def _compounds(rng: random.Random, relation: Relation, claims: list[tuple[Statement, str]], n: int) -> list[Statement]:
    """``n`` conjunctions and disjunctions (in turn) of two plain affirmatives of one template, half of each true."""
    pools: dict[str, list[tuple[Statement, str]]] = {}
    for claim in claims:
        if claim[0].form == "plain":
            pools.setdefault(claim[0].template, []).append(claim)
    usable = sorted(t for t, pool in pools.items() if len({c[0].fact for c in pool}) > 1)
    out: list[Statement] = []
    texts: set[str] = set()
    for _attempt in range(100 * n if usable else 0):
        if len(out) == n:
            break
        kind = ("conjunction", "disjunction")[len(out) % 2]
        truth = rng.random() < 0.5
        # the one way a conjunction is true (a disjunction false), or one of the three others
        both = (truth, truth) if (kind == "conjunction") == truth else rng.choice(
            [(True, False), (False, True), (truth, truth)])
        pool = pools[rng.choice(usable)]
        firsts = [c for c in pool if (c[0].label == "true") == both[0]]
        first = rng.choice(firsts)
        seconds = [c for c in pool if (c[0].label == "true") == both[1] and c[0].fact != first[0].fact]
        text = f"{first[0].text[:-1]} {'and' if kind == 'conjunction' else 'or'} {rng.choice(seconds)[1]}"
        if text not in texts:
            texts.add(text)
            out.append(Statement(text, "true" if truth else "false", relation.name, first[0].fact, False,
                                 first[0].template, kind))
    return out


def _relation_statements(rng: random.Random, relation: Relation, per_fact: int,
                         names: Iterator[str]) -> list[Statement]:
    claims: list[tuple[Statement, str]] = []
    for fact in relation.facts:
        for index in sorted(rng.sample(range(len(relation.templates)), per_fact)):
            claims += _claims(rng, relation, fact, index)
    rest = len(claims) / (1 - NEITHER_SHARE - COMPOUND_SHARE)
    fictional = _fictional(rng, relation, per_fact, max(1, round(rest * NEITHER_SHARE / (2 * per_fact))), names)
    return [s for s, _ in claims] + fictional + _compounds(rng, relation, claims, round(rest * COMPOUND_SHARE))


def generate_statements(seed: int = 0, templates_per_fact: int = 2) -> list[Statement]:
    """Every relation's statements (see the module docstring), shuffled deterministically for ``seed``.

    Args:
        templates_per_fact: how many of a relation's templates word each fact (capped at the relation's count).

    Raises:
        ValueError: ``templates_per_fact`` is below 1.

    Example:
        >>> sorted({s.label for s in generate_statements(0)})
        ['false', 'neither', 'true']
    """
    if templates_per_fact < 1:
        raise ValueError(f"templates_per_fact must be at least 1, got {templates_per_fact}")
    rng = random.Random(seed)
    names = _fresh_names(rng)
    out: list[Statement] = []
    for relation in CATALOGUE:
        out += _relation_statements(rng, relation, min(templates_per_fact, len(relation.templates)), names)
    rng.shuffle(out)
    return out


def generate_qa(seed: int = 0, arithmetic: int = 60) -> list[QAItem]:
    """Closed-book QA items with accepted answers (countries, elements, dates, units, arithmetic), shuffled."""
    rng = random.Random(seed)
    items = [QAItem(f"What is the capital of {c}?", (cap,), "capital") for c, (cap, _, _) in COUNTRIES.items()]
    items += [QAItem(f"On which continent is {c}?", (k,), "continent") for c, (_, k, _) in COUNTRIES.items()]
    items += [QAItem(f"What is the currency of {c}?", (cur,), "currency") for c, (_, _, cur) in COUNTRIES.items()]
    items += [QAItem(f"What is the chemical symbol of {e}?", (s,), "element") for e, s in ELEMENTS.items()]
    items += [QAItem(f"Which chemical element has the symbol {s}?", (e,) + (("aluminum",) if e == "aluminium" else ()),
                     "element") for e, s in ELEMENTS.items()]
    items += [QAItem(f"In which year did {e} happen?", (str(y),), "date") for e, y in EVENTS.items()]
    items += [QAItem(f"How many {other} are in {qty} {unit}?", (str(value),), "unit")
              for qty, unit, value, other in UNITS]
    sums: set[str] = set()
    while len(sums) < arithmetic:
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        if len(sums) % 2:
            item = QAItem(f"What is {a} plus {b}?", (str(a + b),), "arithmetic")
        else:
            a, b = max(a, b) + 1, min(a, b)
            item = QAItem(f"What is {a} minus {b}?", (str(a - b),), "arithmetic")
        if item.question not in sums:
            sums.add(item.question)
            items.append(item)
    rng.shuffle(items)
    return items
