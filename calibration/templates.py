"""The catalogue of relations: each one's facts, its wordings (>= 4, one a question and answer) and wrong answers.

Facts come from the fact tables; arithmetic and comparison facts are drawn once from fixed seeds, so every
seed of :func:`calibration.statements.generate_statements` talks about the same facts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from calibration.facts import COUNTRIES, ELEMENTS, EVENTS, UNITS
from calibration.facts_culture import ANTONYMS, BOOKS, FRENCH, MORE_EVENTS, PROFESSIONS
from calibration.facts_science import ANIMAL_CLASSES, ATOMIC_NUMBERS, COLOURS, LEGS, MORE_UNITS
from calibration.facts_world import CITIES, LANDMARKS, LANGUAGES
from calibration.relation import Fact, Relation, Template, Value, nearby_number, the_other_slot

__all__ = ["CATALOGUE"]

_T = Template
#: countries whose English names take "the"
_WITH_THE = {"United Kingdom", "United States", "Netherlands", "Czech Republic", "Philippines"}
#: left out of a column: Russia, Egypt and Indonesia span two continents, Panama is sometimes put in South
#: America; Croatia changed currency in 2023, Panama and Cuba also use the US dollar
_SKIP = {"continent": {"Russia", "Egypt", "Indonesia", "Panama"}, "currency": {"Croatia", "Panama", "Cuba"}}


def _the(country: str) -> str:
    return f"the {country}" if country in _WITH_THE else country


def _facts(table: Mapping[str, Value]) -> tuple[Fact, ...]:
    return tuple(Fact(key, {"s": key}, value) for key, value in table.items())


def _country_facts(column: int, relation: str) -> tuple[Fact, ...]:
    return tuple(Fact(country, {"s": _the(country)}, row[column]) for country, row in COUNTRIES.items()
                 if country not in _SKIP.get(relation, ()))


def _unit_facts() -> tuple[Fact, ...]:
    return tuple(Fact(f"{unit} in {other}", {"unit": unit, "other": other}, value)
                 for _, unit, value, other in UNITS + MORE_UNITS)


def _arithmetic_facts(n: int = 42) -> tuple[Fact, ...]:
    """Sums and differences of numbers up to 40 and products up to 12 x 9, in turn."""
    rng = random.Random(1)
    facts: dict[str, Fact] = {}
    while len(facts) < n:
        op = ("plus", "minus", "times")[len(facts) % 3]
        a, b = (rng.randint(2, 12), rng.randint(2, 9)) if op == "times" else (rng.randint(2, 40), rng.randint(2, 40))
        if op == "minus":
            a, b = max(a, b), min(a, b)
        result = a + b if op == "plus" else a - b if op == "minus" else a * b
        if result > 0:
            facts.setdefault(f"{a} {op} {b}", Fact(f"{a} {op} {b}", {"a": a, "op": op, "b": b}, result))
    return tuple(facts.values())


def _comparison_facts(n: int = 40) -> tuple[Fact, ...]:
    """Pairs of numbers up to 999, every other one close together; the answer is the larger."""
    rng = random.Random(2)
    facts: dict[frozenset[int], Fact] = {}
    while len(facts) < n:
        x = rng.randint(11, 989)
        y = x + rng.choice((-1, 1)) * (rng.randint(1, 9) if len(facts) % 2 else rng.randint(10, 600))
        if 1 <= y <= 999 and frozenset((x, y)) not in facts:
            facts[frozenset((x, y))] = Fact(f"{x} or {y}", {"x": x, "y": y}, max(x, y))
    return tuple(facts.values())


def _other_number(slots: Mapping[str, Value], answer: Value) -> dict[str, Value]:
    return {"p": slots["y"] if answer == slots["x"] else slots["x"]}


CATALOGUE: tuple[Relation, ...] = (
    Relation("capital", _country_facts(0, "capital"), (
        _T("The capital of {s} is {o}.", "The capital of {s} is not {o}."),
        _T("{o} is the capital of {s}.", "{o} is not the capital of {s}."),
        _T("{o} serves as the capital city of {s}.", "{o} does not serve as the capital city of {s}."),
        _T("Q: What is the capital of {s}? A: {o}.", "Q: Is the capital of {s} {o}? A: No.", qa=True),
    ), {"s": "{n0}"}, ("{n1}",)),
    Relation("continent", _country_facts(1, "continent"), (
        _T("{s} is in {o}.", "{s} is not in {o}."),
        _T("{s} is a country in {o}.", "{s} is not a country in {o}."),
        _T("{s} lies on the continent of {o}.", "{s} does not lie on the continent of {o}."),
        _T("Q: On which continent is {s}? A: {o}.", "Q: Is {s} in {o}? A: No.", qa=True),
    ), {"s": "{n0}"}),
    Relation("currency", _country_facts(2, "currency"), (
        _T("The currency of {s} is the {o}.", "The currency of {s} is not the {o}."),
        _T("The {o} is the currency of {s}.", "The {o} is not the currency of {s}."),
        _T("{s} uses the {o} as its currency.", "{s} does not use the {o} as its currency."),
        _T("Q: What is the currency of {s}? A: The {o}.", "Q: Is the currency of {s} the {o}? A: No.", qa=True),
    ), {"s": "{n0}"}),
    Relation("language", _facts(LANGUAGES), (
        _T("The main language of {s} is {o}.", "The main language of {s} is not {o}."),
        _T("Most people in {s} speak {o} as their first language.",
          "Most people in {s} do not speak {o} as their first language."),
        _T("{o} is the most widely spoken language in {s}.", "{o} is not the most widely spoken language in {s}."),
        _T("Q: What is the first language of most people in {s}? A: {o}.",
          "Q: Is {o} the first language of most people in {s}? A: No.", qa=True),
    ), {"s": "{n0}"}),
    Relation("city_country", _facts(CITIES), (
        _T("{s} is a city in {o}.", "{s} is not a city in {o}."),
        _T("The city of {s} is located in {o}.", "The city of {s} is not located in {o}."),
        _T("{o} is the country where the city of {s} is found.",
          "{o} is not the country where the city of {s} is found."),
        _T("Q: In which country is the city of {s}? A: {O}.", "Q: Is the city of {s} in {o}? A: No.", qa=True),
    ), {"s": "{n0}"}),
    Relation("element_symbol", _facts(ELEMENTS), (
        _T("The chemical symbol of {s} is {o}.", "The chemical symbol of {s} is not {o}."),
        _T("{o} is the chemical symbol for {s}.", "{o} is not the chemical symbol for {s}."),
        _T("In the periodic table, {s} is written as {o}.", "In the periodic table, {s} is not written as {o}."),
        _T("Q: What is the chemical symbol of {s}? A: {o}.", "Q: Is {o} the chemical symbol of {s}? A: No.",
          qa=True),
        _T("Q: Which element has the symbol {o}? A: {S}.", "Q: Does {s} have the chemical symbol {o}? A: No.",
          qa=True),
    ), {"s": "{l0}ium"}),
    Relation("atomic_number", _facts(ATOMIC_NUMBERS), (
        _T("The atomic number of {s} is {o}.", "The atomic number of {s} is not {o}."),
        _T("{s} has the atomic number {o}.", "{s} does not have the atomic number {o}.", words=True),
        _T("The number of protons in an atom of {s} is {o}.", "The number of protons in an atom of {s} is not {o}."),
        _T("Q: What is the atomic number of {s}? A: {o}.", "Q: Is the atomic number of {s} {o}? A: No.", qa=True),
        _T("Q: Which atomic number does {s} have? A: {O}.", "Q: Does {s} have the atomic number {o}? A: No.",
          qa=True, words=True),
    ), {"s": "{l0}ium"}),
    Relation("date", _facts(EVENTS | MORE_EVENTS), (
        _T("{s} happened in {o}.", "{s} did not happen in {o}."),
        _T("{s} took place in the year {o}.", "{s} did not take place in the year {o}."),
        _T("The year of {s} was {o}.", "The year of {s} was not {o}."),
        _T("Q: In which year did {s} happen? A: {o}.", "Q: Did {s} happen in {o}? A: No.", qa=True),
    ), {"s": "the founding of {n0}"}, wrong=nearby_number(3, 30, highest=2023)),
    Relation("unit", _unit_facts(), (
        _T("One {unit} is {o} {other}.", "One {unit} is not {o} {other}."),
        _T("One {unit} equals {o} {other}.", "One {unit} does not equal {o} {other}.", words=True),
        _T("There are {o} {other} in one {unit}.", "There are not {o} {other} in one {unit}."),
        _T("Q: How many {other} are in one {unit}? A: {o}.", "Q: Are there {o} {other} in one {unit}? A: No.",
          qa=True),
        _T("Q: How many {other} make one {unit}? A: {O}.", "Q: Do {o} {other} make one {unit}? A: No.",
          qa=True, words=True),
    ), {"unit": "{l0}", "other": "{l1}s"}),
    Relation("arithmetic", _arithmetic_facts(), (
        _T("{a} {op} {b} equals {o}.", "{a} {op} {b} does not equal {o}."),
        _T("{a} {op} {b} is {o}.", "{a} {op} {b} is not {o}.", words=True),
        _T("The result of {a} {op} {b} is {o}.", "The result of {a} {op} {b} is not {o}."),
        _T("Q: What is {a} {op} {b}? A: {o}.", "Q: Is {a} {op} {b} equal to {o}? A: No.", qa=True),
        _T("Q: What do you get from {a} {op} {b}? A: {O}.", "Q: Do you get {o} from {a} {op} {b}? A: No.",
          qa=True, words=True),
    ), {"a": "{n0}", "b": "{n1}"}, wrong=nearby_number(1, 10)),
    Relation("comparison", _comparison_facts(), (
        _T("{o} is larger than {p}.", "{o} is not larger than {p}."),
        _T("{o} is greater than {p}.", "{o} is not greater than {p}.", words=True),
        _T("The larger of {x} and {y} is {o}.", "The larger of {x} and {y} is not {o}."),
        _T("Q: Which is larger, {x} or {y}? A: {o}.", "Q: Is {o} the larger of {x} and {y}? A: No.", qa=True),
        _T("Q: Which number is bigger, {x} or {y}? A: {O}.", "Q: Is {o} bigger than {p}? A: No.",
          qa=True, words=True),
    ), {"x": "{n0}", "y": "{n1}"}, ("{n0}", "{n1}"), wrong=the_other_slot("x", "y"), extra=_other_number),
    Relation("animal_class", _facts(ANIMAL_CLASSES), (
        _T("{s_a} is {o_a}.", "{s_a} is not {o_a}."),
        _T("The {s} is a kind of {o}.", "The {s} is not a kind of {o}."),
        _T("Biologists classify the {s} as {o_a}.", "Biologists do not classify the {s} as {o_a}."),
        _T("Q: What class of animal is the {s}? A: {O_a}.", "Q: Is the {s} {o_a}? A: No.", qa=True),
    ), {"s": "{l0}"}),
    Relation("legs", _facts(LEGS), (
        _T("{s_a} has {o} legs.", "{s_a} does not have {o} legs."),
        _T("The {s} has {o} legs.", "The {s} does not have {o} legs.", words=True),
        _T("The number of legs of {s_a} is {o}.", "The number of legs of {s_a} is not {o}."),
        _T("Q: How many legs does {s_a} have? A: {o}.", "Q: Does {s_a} have {o} legs? A: No.", qa=True),
        _T("Q: How many legs has the {s} got? A: {O}.", "Q: Has the {s} got {o} legs? A: No.", qa=True, words=True),
    ), {"s": "{l0}"}),
    Relation("author", _facts(BOOKS), (
        _T("{s} was written by {o}.", "{s} was not written by {o}."),
        _T("{o} wrote {s}.", "{o} did not write {s}."),
        _T("The author of {s} is {o}.", "The author of {s} is not {o}."),
        _T("Q: Who wrote {s}? A: {o}.", "Q: Did {o} write {s}? A: No.", qa=True),
    ), {"s": "The Secret of {n0}"}, ("{n1} {n2}",)),
    Relation("landmark_city", _facts(LANDMARKS), (
        _T("{s} is in {o}.", "{s} is not in {o}."),
        _T("{s} is located in the city of {o}.", "{s} is not located in the city of {o}."),
        _T("{o} is the city where you can see {s}.", "{o} is not the city where you can see {s}."),
        _T("Q: In which city is {s}? A: {o}.", "Q: Is {s} in {o}? A: No.", qa=True),
    ), {"s": "the {n0} Tower"}),
    Relation("profession", _facts(PROFESSIONS), (
        _T("{s} is best known as {o_a}.", "{s} is not best known as {o_a}."),
        _T("{s} is famous for being {o_a}.", "{s} is not famous for being {o_a}."),
        _T("{s} made history as {o_a}.", "{s} did not make history as {o_a}."),
        _T("Q: What is {s} best known as? A: {O_a}.", "Q: Is {s} best known as {o_a}? A: No.", qa=True),
    ), {"s": "{n0} {n1}"}),
    Relation("antonym", _facts(ANTONYMS), (
        _T("The opposite of {s} is {o}.", "The opposite of {s} is not {o}."),
        _T("{s} and {o} are opposites.", "{s} and {o} are not opposites."),
        _T("The word {o} means the opposite of {s}.", "The word {o} does not mean the opposite of {s}."),
        _T("Q: What is the opposite of {s}? A: {O}.", "Q: Is {o} the opposite of {s}? A: No.", qa=True),
    ), {"s": "{l0}"}, ("{l1}",)),
    Relation("translation", _facts(FRENCH), (
        _T("The French word for {s} is {o}.", "The French word for {s} is not {o}."),
        _T("In French, '{s}' is '{o}'.", "In French, '{s}' is not '{o}'."),
        _T("{o} is the French word for {s}.", "{o} is not the French word for {s}."),
        _T("The English word {s} translates to {o} in French.",
          "The English word {s} does not translate to {o} in French."),
        _T("Q: How do you say {s} in French? A: {o}.", "Q: Is the French word for {s} {o}? A: No.", qa=True),
    ), {"s": "{l0}"}, ("{l1}",)),
    Relation("color", _facts(COLOURS), (
        _T("The colour of {s} is {o}.", "The colour of {s} is not {o}."),
        _T("{s} is {o}.", "{s} is not {o}."),
        _T("{s} is usually {o} in colour.", "{s} is not usually {o} in colour."),
        _T("Q: What colour is {s}? A: {O}.", "Q: Is {s} {o}? A: No.", qa=True),
    ), {"s": "a {l0}"}),
)
