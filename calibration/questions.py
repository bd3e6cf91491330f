"""Closed-book questions from every relation of the catalogue, in several wordings, for on-policy answer data.

Each relation is asked in three wordings (``capital/q0`` .. ``capital/q2``); with the facts of
:data:`calibration.templates.CATALOGUE` that is about 2,600 questions, each with its accepted spellings
(:func:`calibration.aliases.accepted_answers`) and, where the question names the options, distractors. The
model answers them itself (:mod:`calibration.onpolicy`), so a probe learns whether *this model's* answer is
right. Splits hold out whole relations and one wording per relation (:func:`question_splits`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from calibration.aliases import accepted_answers
from calibration.grading import normalise
from calibration.relation import Fact, Relation, fill
from calibration.statements import QAItem
from calibration.templates import CATALOGUE

__all__ = ["QUESTIONS", "generate_questions", "answer_vocabulary", "question_splits"]

#: three wordings per relation, over the relation's own slots (numbers in digits)
QUESTIONS: dict[str, tuple[str, ...]] = {
    "capital": ("What is the capital of {s}?", "Which city is the capital of {s}?",
                "Name the capital city of {s}."),
    "continent": ("On which continent is {s}?", "Which continent is {s} part of?",
                  "{S} is located on which continent?"),
    "currency": ("What is the currency of {s}?", "Which currency is used in {s}?",
                 "What money do people pay with in {s}?"),
    "language": ("What language do most people in {s} speak?", "What is the main language of {s}?",
                 "Which language is most widely spoken in {s}?"),
    "city_country": ("In which country is the city of {s}?", "Which country is {s} in?",
                     "The city of {s} belongs to which country?"),
    "element_symbol": ("What is the chemical symbol of {s}?", "Which symbol stands for {s} in the periodic table?",
                       "How is {s} written as a chemical symbol?"),
    "atomic_number": ("What is the atomic number of {s}?", "How many protons does an atom of {s} have?",
                      "Which atomic number does {s} have?"),
    "date": ("In which year did {s} happen?", "When did {s} take place? Give the year.",
             "What year was {s}?"),
    "unit": ("How many {other} are in one {unit}?", "One {unit} equals how many {other}?",
             "How many {other} make up a {unit}?"),
    "arithmetic": ("What is {a} {op} {b}?", "Calculate {a} {op} {b}.", "How much is {a} {op} {b}?"),
    "comparison": ("Which is larger, {x} or {y}?", "Which number is bigger: {x} or {y}?",
                   "Of {x} and {y}, which is the greater number?"),
    "animal_class": ("What class of animal is the {s}?", "Is the {s} a mammal, bird, reptile, fish, amphibian "
                     "or insect?", "To which group of animals does the {s} belong?"),
    "legs": ("How many legs does {s_a} have?", "How many legs has the {s} got?",
             "What is the number of legs of {s_a}?"),
    "author": ("Who wrote {s}?", "Who is the author of {s}?", "{S} was written by whom?"),
    "landmark_city": ("In which city is {s}?", "Which city is home to {s}?", "Where is {s}? Name the city."),
    "profession": ("What is {s} best known as?", "What was the profession of {s}?",
                   "What is {s} famous for being?"),
    "antonym": ("What is the opposite of {s}?", "What word means the opposite of {s}?",
                "Give the antonym of {s}."),
    "translation": ("How do you say {s} in French?", "What is the French word for {s}?",
                    "Translate {s} into French."),
    "color": ("What colour is {s}?", "What is the usual colour of {s}?", "Which colour does {s} usually have?"),
}


def _distractors(relation: Relation, fact: Fact) -> tuple[str, ...]:
    """The answers a wrong reply would give first: the other option of a comparison, and for relations
    answered with names (continents, currencies, capitals ...) every other answer of the relation; numbers
    elsewhere are not distractors (a reply restates the question's own numbers: "18 minus 6 equals 12")."""
    if relation.name == "comparison":
        other = fact.slots["y"] if fact.answer == fact.slots["x"] else fact.slots["x"]
        return accepted_answers(other)
    if isinstance(fact.answer, int):
        return ()
    mine = {normalise(a) for a in accepted_answers(fact.answer)}
    return tuple(a for value in relation.answers if value != fact.answer
                 for a in accepted_answers(value) if normalise(a) not in mine)


def _question(relation: Relation, index: int, fact: Fact) -> QAItem:
    text = fill(QUESTIONS[relation.name][index], dict(fact.slots))
    return QAItem(text[:1].upper() + text[1:], accepted_answers(fact.answer), relation.name,
                  fact=relation.fact_id(fact), template=f"{relation.name}/q{index}",
                  distractors=_distractors(relation, fact))


def generate_questions(seed: int = 0, relations: Sequence[str] | None = None,
                       wordings: int | None = None) -> list[QAItem]:
    """Every fact of every relation asked in each wording (or the first ``wordings``), shuffled by ``seed``."""
    chosen = [r for r in CATALOGUE if relations is None or r.name in relations]
    items = [_question(r, i, fact) for r in chosen for fact in r.facts
             for i in range(len(QUESTIONS[r.name]) if wordings is None else wordings)]
    random.Random(seed).shuffle(items)
    return items


def answer_vocabulary(domain: str) -> dict[str, tuple[str, ...]]:
    """The relation's possible answers, each with its accepted spellings (keys of semantic clustering)."""
    relation = next((r for r in CATALOGUE if r.name == domain), None)
    if relation is None:
        return {}
    return {str(a): accepted_answers(a) for a in relation.answers}


def question_splits(items: Sequence[QAItem], held_wording: int = 2, seed: int = 0,
                    fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, np.ndarray]:
    """Boolean masks ``train``, ``cal``, ``test`` by fact (every wording of a fact on one side) and
    ``held_wording`` (wording ``held_wording`` of every relation: never in train or cal)."""
    facts = sorted({it.fact for it in items})
    order = np.random.default_rng(seed).permutation(len(facts))
    cut1, cut2 = int(fractions[0] * len(facts)), int((fractions[0] + fractions[1]) * len(facts))
    side = {facts[j]: (0 if rank < cut1 else 1 if rank < cut2 else 2) for rank, j in enumerate(order)}
    where = np.array([side[it.fact] for it in items])
    held = np.array([it.template.endswith(f"/q{held_wording}") for it in items])
    return {"train": (where == 0) & ~held, "cal": (where == 1) & ~held, "test": where == 2, "held_wording": held}
