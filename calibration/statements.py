"""Labelled statements (true / false / neither) and closed-book QA items generated from our facts.

Every fact yields a true statement, a false one (a plausible wrong object from the same domain)
and negated forms; *neither* statements talk about made-up entities the model cannot know.
Generation is deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from calibration.facts import COUNTRIES, ELEMENTS, EVENTS, UNITS

__all__ = ["LABELS", "Statement", "QAItem", "generate_statements", "generate_qa", "made_up_names"]

LABELS = ("true", "false", "neither")


@dataclass(frozen=True)
class Statement:
    """One labelled statement."""

    text: str
    label: str  # one of LABELS
    domain: str
    #: statements about the same fact share it (true, false and negated forms): splits keep them together
    fact: str = ""
    negated: bool = False


@dataclass(frozen=True)
class QAItem:
    """A closed-book question with its accepted answers."""

    question: str
    answers: tuple[str, ...]
    domain: str


def _pair(rng: random.Random, domain: str, true_text: str, false_text: str, neg_true: str,
          neg_false: str) -> list[Statement]:
    """True and false affirmatives, plus one negated form (chosen at random to keep classes balanced)."""
    out = [Statement(true_text, "true", domain, true_text), Statement(false_text, "false", domain, true_text)]
    if rng.random() < 0.5:
        out.append(Statement(neg_true, "true", domain, true_text, negated=True))
    else:
        out.append(Statement(neg_false, "false", domain, true_text, negated=True))
    return out


def _other(rng: random.Random, options: list[str], not_this: str) -> str:
    return rng.choice([o for o in options if o != not_this])


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


def _world(rng: random.Random) -> list[Statement]:
    out: list[Statement] = []
    capitals = [c for c, _, _ in COUNTRIES.values()]
    continents = sorted({k for _, k, _ in COUNTRIES.values()})
    currencies = sorted({m for _, _, m in COUNTRIES.values()})
    for country, (capital, continent, currency) in COUNTRIES.items():
        wrong = _other(rng, capitals, capital)
        out += _pair(rng, "capital", f"The capital of {country} is {capital}.", f"The capital of {country} is {wrong}.",
                     f"The capital of {country} is not {wrong}.", f"The capital of {country} is not {capital}.")
        wrong = _other(rng, continents, continent)
        out += _pair(rng, "continent", f"{country} is in {continent}.", f"{country} is in {wrong}.",
                     f"{country} is not in {wrong}.", f"{country} is not in {continent}.")
        wrong = _other(rng, currencies, currency)
        out += _pair(rng, "currency", f"The currency of {country} is the {currency}.",
                     f"The currency of {country} is the {wrong}.",
                     f"The currency of {country} is not the {wrong}.",
                     f"The currency of {country} is not the {currency}.")
    symbols = list(ELEMENTS.values())
    for element, symbol in ELEMENTS.items():
        wrong = _other(rng, symbols, symbol)
        out += _pair(rng, "element", f"The chemical symbol of {element} is {symbol}.",
                     f"The chemical symbol of {element} is {wrong}.",
                     f"The chemical symbol of {element} is not {wrong}.",
                     f"The chemical symbol of {element} is not {symbol}.")
    for event, year in EVENTS.items():
        wrong_year = year + rng.choice([-1, 1]) * rng.randint(3, 40)
        said = f"{event[0].upper()}{event[1:]}"
        out += _pair(rng, "date", f"{said} happened in {year}.", f"{said} happened in {wrong_year}.",
                     f"{said} did not happen in {wrong_year}.", f"{said} did not happen in {year}.")
    for qty, unit, value, other in UNITS:
        wrong_value = value + rng.choice([-1, 1]) * rng.randint(1, max(2, value // 2))
        amount = f"{qty.capitalize()} {unit}"
        out += _pair(rng, "unit", f"{amount} is {value} {other}.", f"{amount} is {wrong_value} {other}.",
                     f"{amount} is not {wrong_value} {other}.", f"{amount} is not {value} {other}.")
    return out


def _numbers(rng: random.Random, n: int) -> list[Statement]:
    out: list[Statement] = []
    for _ in range(n):
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        wrong = a + b + rng.choice([-1, 1]) * rng.randint(1, 9)
        out += _pair(rng, "arithmetic", f"{a} plus {b} equals {a + b}.", f"{a} plus {b} equals {wrong}.",
                     f"{a} plus {b} does not equal {wrong}.", f"{a} plus {b} does not equal {a + b}.")
        x, y = rng.sample(range(1, 1000), 2)
        big, small = max(x, y), min(x, y)
        out += _pair(rng, "comparison", f"{big} is larger than {small}.", f"{small} is larger than {big}.",
                     f"{small} is not larger than {big}.", f"{big} is not larger than {small}.")
    return out


def _neither(rng: random.Random, n: int) -> list[Statement]:
    names = made_up_names(rng, 3 * n)
    templates = [
        "The capital of {0} is {1}.",
        "{0} is the currency used in {1}.",
        "The chemical symbol of {0}ium is {2}.",
        "{0} was founded in {3}.",
        "The river {0} flows through {1}.",
        "{0} invented the {1} engine.",
    ]
    out = []
    for i in range(n):
        a, b = names[3 * i], names[3 * i + 1]
        text = templates[i % len(templates)].format(a, b, a[:2], rng.randint(1200, 1990))
        out.append(Statement(text, "neither", "fictional", text))
    return out


def generate_statements(seed: int = 0, numeric: int = 40, neither: int = 150) -> list[Statement]:
    """All generated statements, shuffled deterministically."""
    rng = random.Random(seed)
    out = _world(rng) + _numbers(rng, numeric) + _neither(rng, neither)
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
