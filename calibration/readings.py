"""Where to read a model's answer: the token positions an answer probe can take its features from.

Every reading turns one :class:`calibration.onpolicy.OnPolicyAnswer` into ``(L, H)`` features:

* ``prompt`` — the question's last prompt token, before anything is generated (the pre-generation gate);
* ``last`` — the answer's last generated token that was fed back;
* ``mean`` — the mean over the answer's fed-back tokens;
* ``exact`` — the mean over the exact answer tokens (:func:`calibration.grading.answer_span`), where
  published work finds a model's error signal concentrates;
* ``exact_last`` — the last exact answer token;
* ``before`` — the token right before the exact answer (the state that chose it).

An answer whose span is unknown (it names no candidate) or whose rows are missing falls back to ``last``,
and a one-token answer to ``prompt``; :func:`reading_features` counts the fallbacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calibration.onpolicy import OnPolicyAnswer
from guard.errors import ConfigError

__all__ = ["READINGS", "reading", "reading_features"]

READINGS = ("prompt", "last", "mean", "exact", "exact_last", "before")


def _exact(answer: OnPolicyAnswer) -> tuple[int, int] | None:
    span, fed = answer.span, len(answer.answer_rows)
    if span is None or span[0] >= fed:
        return None
    return span[0], min(span[1], fed)


def reading(answer: OnPolicyAnswer, how: str) -> tuple[np.ndarray, bool]:
    """The ``(L, H)`` features of ``answer`` at reading ``how``, and whether it fell back to another one.

    Raises:
        ConfigError: ``how`` is not one of :data:`READINGS`.
    """
    if how not in READINGS:
        raise ConfigError(f"answer reading {how!r} is unknown; expected one of {', '.join(READINGS)}")
    rows, prompt = answer.answer_rows, answer.prompt_row
    if how == "prompt":
        return prompt.astype(np.float32), False
    if not len(rows):
        return prompt.astype(np.float32), True
    if how == "last":
        return rows[-1].astype(np.float32), False
    if how == "mean":
        return rows.astype(np.float32).mean(axis=0), False
    span = _exact(answer)
    if span is None:
        return rows[-1].astype(np.float32), True
    first, end = span
    if how == "exact":
        return rows[first:end].astype(np.float32).mean(axis=0), False
    if how == "exact_last":
        return rows[end - 1].astype(np.float32), False
    return (rows[first - 1] if first > 0 else prompt).astype(np.float32), False


def reading_features(answers: Sequence[OnPolicyAnswer], how: str) -> tuple[np.ndarray, float]:
    """``(n, L, H)`` features of every answer at reading ``how``, and the share that fell back."""
    if not answers:
        raise ConfigError("no answers to read features from")
    pairs = [reading(a, how) for a in answers]
    return np.stack([f for f, _ in pairs]), float(np.mean([fell for _, fell in pairs]))
