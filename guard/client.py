"""Reading the guard's verdicts on the client side: typed, lenient views of the ``guard`` fields, for the
``openai`` SDK's objects (or plain JSON dicts).

A non-streamed answer carries its verdict whole in ``choices[i].guard``; a stream spreads it over its chunks
(token scores and sentence verdicts as they are decided, then one summary chunk). :func:`fold` merges a
stream's chunks into the verdict the same request gets non-streamed; :func:`verdict` reads one answer's.
The views accept fields they do not know (a newer server), so a client never breaks on an upgrade.

Example::

    from openai import OpenAI
    from guard.client import fold, verdict

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    answer = client.chat.completions.create(model="default", messages=[...])
    print(verdict(answer).decision)                      # "pass", "flag", "abstain" or "steer"
    chunks = list(client.chat.completions.create(model="default", messages=[...], stream=True))
    result = fold(chunks)
    [s.verdict for s in result.sentences]                # "supported", "flagged", "uncertain", ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["TokenScore", "SentenceView", "GuardView", "verdict", "fold"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TokenScore(_Lenient):
    """One generated token's probe probabilities (``p``: label -> probability)."""

    position: int
    p: dict[str, float] = {}


class SentenceView(_Lenient):
    """One decided sentence: where it is in the text, its verdict and its conformal evidence."""

    index: int
    start: int = 0
    end: int = 0
    verdict: str = "unscored"
    p_true: float | None = None
    prediction_set: list[str] | None = None
    probs: dict[str, float] | None = None


class GuardView(_Lenient):
    """One choice's verdict: the response-level ``decision``, its sentences and token scores, and how it was
    reached (``mode``, ``alpha``, ``calibrated``, ``verified``, ...). Unknown fields are kept (``model_extra``)."""

    decision: str | None = None
    mode: str | None = None
    alpha: float | None = None
    score: float | None = None
    abstained: dict[str, Any] | None = None
    steered: dict[str, Any] | None = None
    sentences: list[SentenceView] = []
    counts: dict[str, int] | None = None
    tokens: list[TokenScore] = []
    calibrated: bool | None = None
    verified: bool | None = None
    source: str | None = None

    @property
    def flagged(self) -> list[SentenceView]:
        """The sentences whose conformal set lacks "true"."""
        return [s for s in self.sentences if s.verdict == "flagged"]


def verdict(answer: Any, index: int = 0) -> GuardView | None:
    """The ``guard`` field of choice ``index`` of a non-streamed answer (``None`` when it has none).

    Args:
        answer: an ``openai`` ``ChatCompletion`` / ``Completion``, or its JSON as a dict.
    """
    for i, choice in enumerate(_field(answer, "choices") or ()):
        if _index(choice, i) == index:
            guard = _guard(choice)
            return GuardView.model_validate(guard) if guard is not None else None
    return None


def fold(chunks: Iterable[Any], index: int = 0) -> GuardView:
    """Merge a stream's ``guard`` increments for choice ``index`` into one verdict.

    The summary chunk gives the response-level fields and the sentences; the increments give the token scores
    (the summary leaves them out). For a complete stream the result equals the non-streamed answer's verdict
    for the same request, except in mode "abstain", where a stream stops generating at the first flagged
    sentence (the same decision, sentences and reason; counts and token scores of what was generated); for a
    stream cut short, it holds what had arrived.

    Args:
        chunks: the stream's chunks, ``openai`` ``ChatCompletionChunk`` / ``Completion`` objects or dicts.
    """
    tokens: list[Any] = []
    sentences: list[Any] = []
    summary: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for chunk in chunks:
        for i, choice in enumerate(_field(chunk, "choices") or ()):
            guard = _guard(choice) if _index(choice, i) == index else None
            if guard is None:
                continue
            tokens.extend(guard.get("tokens") or ())
            if "decision" in guard:  # the summary chunk
                summary = dict(guard)
            else:
                sentences.extend(guard.get("sentences") or ())
                extra.update({k: v for k, v in guard.items() if k not in ("tokens", "sentences")})
    merged = {**extra, "sentences": sentences, **summary, "tokens": tokens}
    return GuardView.model_validate(merged)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _index(choice: Any, position: int) -> int:
    index = _field(choice, "index")
    return index if isinstance(index, int) else position


def _guard(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, Mapping):
        guard = choice.get("guard")
    else:  # an openai SDK object: unknown fields are in model_extra
        guard = (getattr(choice, "model_extra", None) or {}).get("guard")
    return guard if isinstance(guard, dict) else None
