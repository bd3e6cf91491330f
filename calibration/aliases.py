"""Other names of an answer that a grader must accept ("USA" for the United States, "forty-two" for 42).

The table is the project's own, kept small and explicit: each entry names a canonical answer as the fact
tables spell it and the spellings a correct short answer may use instead. Numbers are accepted in digits and
in words; every word answer also in its plural ("mammals" for "mammal").
"""

from __future__ import annotations

from calibration.number_words import number_words

__all__ = ["ALIASES", "accepted_answers"]

#: canonical answer (as the fact tables write it, without a leading "the") -> other accepted spellings
ALIASES: dict[str, tuple[str, ...]] = {
    "United States": ("USA", "US", "U.S.", "U.S.A.", "America", "United States of America"),
    "United Kingdom": ("UK", "U.K.", "Britain", "Great Britain"),
    "Netherlands": ("Holland",),
    "United Arab Emirates": ("UAE", "U.A.E.", "Emirates"),
    "South Korea": ("Korea", "Republic of Korea"),
    "Czech Republic": ("Czechia",),
    "New York": ("New York City", "NYC"),
    "Washington": ("Washington D.C.", "Washington DC"),
    "Chinese": ("Mandarin", "Mandarin Chinese"),
    "grey": ("gray",),
    "aluminium": ("aluminum",),
    "sulfur": ("sulphur",),
    "caesium": ("cesium",),
    "dollar": ("dollars",),
    "footballer": ("soccer player", "football player"),
    "Kyiv": ("Kiev",),
    "North America": ("Central America",),  # the region of the continent most of its questions ask about
    "poor": ("indigent", "impoverished"),
    "enemy": ("foe",),
}


def _plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "es" if word.endswith(("s", "sh", "ch", "x")) else word + "s"


def accepted_answers(value: str | int) -> tuple[str, ...]:
    """Every spelling of ``value`` a correct answer may use: itself, its aliases, digits and words, plural.

    Example:
        >>> accepted_answers(42)
        ('42', 'forty-two', 'forty two')
        >>> accepted_answers("the United Kingdom")[:3]
        ('the United Kingdom', 'UK', 'U.K.')
    """
    if isinstance(value, int) and not isinstance(value, bool):
        words = number_words(value) if 0 <= value <= 9999 else ""
        spoken = (words, words.replace("-", " ")) if words else ()
        return tuple(dict.fromkeys((str(value), *spoken)))
    text = str(value)
    bare = text[4:] if text.startswith("the ") else text
    out = [text, *ALIASES.get(bare, ())]
    if " " not in bare and bare.isalpha() and bare.islower():
        out.append(_plural(bare))
    return tuple(dict.fromkeys(out))
