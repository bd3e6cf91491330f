"""Whole numbers from 0 to 9999 written as English words, so statements can say numbers both ways."""

from __future__ import annotations

__all__ = ["number_words"]

_SMALL = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """``n`` in English words, hyphenating tens and units and leaving out "and".

    Raises:
        ValueError: ``n`` is not a whole number from 0 to 9999.

    Example:
        >>> number_words(42), number_words(1969)
        ('forty-two', 'one thousand nine hundred sixty-nine')
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 9999:
        raise ValueError(f"number_words takes a whole number from 0 to 9999, got {n!r}")
    if n < 20:
        return _SMALL[n]
    if n < 100:
        tens, units = divmod(n, 10)
        return _TENS[tens] + (f"-{_SMALL[units]}" if units else "")
    big, rest = divmod(n, 1000) if n >= 1000 else divmod(n, 100)
    said = f"{_SMALL[big]} {'thousand' if n >= 1000 else 'hundred'}"
    return f"{said} {number_words(rest)}" if rest else said
