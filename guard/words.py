"""Words of a text, normalised the same way wherever guard compares texts by their words.

Case folded, accents dropped (letters of every script kept), punctuation as spaces, number words as digits
("forty two" and "42" are one word). :data:`FUNCTION_WORDS` are the words that carry no content (articles,
pronouns, auxiliaries, prepositions, question words, answer fillers). Used by :mod:`guard.agreement` (do two
answers say the same thing) and :mod:`guard.scope` (is a question worded as a calibrated one). Pure stdlib.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FUNCTION_WORDS", "words"]

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}

#: words that carry no content: articles, pronouns, auxiliaries, prepositions, conjunctions and answer fillers
FUNCTION_WORDS = frozenset("""
a an the this that these those it its it's there here they them their he she his her him we our you your i my me
is are was were be been being am do does did done has have had having will would shall should can could may might
must of in on at to for from by with about as into onto over under between through during after before than then
and or but nor so if because while also too very much many more most some any each every all no not
what which who whom whose when where why how answer answers correct correctly called named known located situated
yes well actually approximately about around roughly exactly just only s t
""".split())

_NON_WORD = re.compile(r"[\W_]+")


def words(text: str) -> list[str]:
    """Normalised words of ``text``: case folded, accents dropped (letters of every script kept), punctuation as
    spaces, number words as digits."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
    tokens = _NON_WORD.sub(" ", folded).split()
    out: list[str] = []
    for word in tokens:
        value = _NUMBER_WORDS.get(word)
        if value is not None and out and out[-1].isdigit() and int(out[-1]) % 10 == 0 and 20 <= int(out[-1]) < 100 \
                and value < 10:
            out[-1] = str(int(out[-1]) + value)  # "forty two" -> 42
        else:
            out.append(str(value) if value is not None else word)
    return out
