"""Semantic entropy of a model's sampled answers: how many different things it says when asked again.

Answers are put in one class when they say the same thing (:func:`calibration.grading.answer_key`: the
same entity of the relation's vocabulary first, else the same new number, else the same normalised first
line), and the entropy of the class frequencies is the model's uncertainty about the *meaning* of its
answer rather than its wording. A semantic-entropy probe (:mod:`calibration.answer_probe`) learns to
predict it from a single greedy generation's hidden states, so serving needs no sampling.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from calibration.grading import answer_key, first_line, first_new_number

__all__ = ["semantic_classes", "semantic_entropy", "class_entropy"]


def semantic_classes(answers: Sequence[str], vocabulary: Mapping[str, Sequence[str]], question: str = "") -> list[str]:
    """One class key per answer; equal keys mean the answers say the same thing."""
    out = []
    for answer in answers:
        key = answer_key(answer, vocabulary)
        if key.startswith("text:"):
            number = first_new_number(first_line(answer), question)
            key = f"number:{number}" if number is not None else key
        out.append(key)
    return out


def semantic_entropy(answers: Sequence[str], vocabulary: Mapping[str, Sequence[str]], question: str = "") -> float:
    """Entropy (nats) of the semantic classes of ``answers``; 0 when they all say the same thing.

    Example:
        >>> semantic_entropy(["Paris.", "It is Paris", "Rome"], {"Paris": ("Paris",), "Rome": ("Rome",)})
        0.6365141682948128
    """
    return class_entropy(semantic_classes(answers, vocabulary, question))


def class_entropy(keys: Sequence[str]) -> float:
    """Entropy (nats) of the frequencies of class ``keys`` (0 for none)."""
    counts = Counter(keys)
    n = sum(counts.values())
    return float(-sum(c / n * math.log(c / n) for c in counts.values()))
