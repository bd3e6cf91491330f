"""What one streamed answer from ``guard serve`` carried, and how it compares with a reference answer.

The load test sends the same few prompts many times at once and checks each answer against the
same prompt answered alone: its text, its per-token guard scores (``guard.tokens`` of the chunks:
positions and class probabilities) and its sentence verdicts (the summary chunk). Scores are
compared token by token (the i-th scored token of one answer with the i-th of the other), as the
largest absolute difference of any class probability: the *distance* between two answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.event_stream import EventStream, is_summary

__all__ = ["StreamedAnswer", "answer_of", "distance", "check"]


@dataclass
class StreamedAnswer:
    """One streamed answer, reduced to what the load test checks.

    Attributes:
        text: the answer's text, every chunk's content (chat) or text (completions) joined.
        positions: sequence positions of the token scores the chunks carried, in arrival order.
        probs: their class probabilities, ``(tokens, labels)`` in the order of ``labels``.
        verdicts: the summary's sentence verdicts, in order.
        decision: the summary's decision (``None``: no summary chunk arrived).
        finish_reason: the last ``finish_reason`` seen on a relayed chunk.
        done: the stream ended with ``[DONE]``.
        error: an error event's message, or the client-side failure (timeout, refused request).
        ttfc_ms / total_ms: first chunk and whole stream, from sending the request (client clock).
    """

    text: str = ""
    positions: list[int] = field(default_factory=list)
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    labels: tuple[str, ...] = ()
    verdicts: list[str] = field(default_factory=list)
    decision: str | None = None
    verified: bool | None = None
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None
    ttfc_ms: float | None = None
    total_ms: float | None = None

    @property
    def complete(self) -> bool:
        """Ended with the summary chunk and ``[DONE]``, a ``finish_reason`` seen and no error."""
        return self.done and self.decision is not None and self.finish_reason is not None and self.error is None

    def reference(self) -> dict[str, Any]:
        """The JSON form of this answer as a reference (text, scored positions, verdicts)."""
        return {"text": self.text, "decision": self.decision, "verdicts": self.verdicts, "positions": self.positions,
                "labels": list(self.labels), "probs": np.round(self.probs, 6).tolist()}


def _add_tokens(tokens: list[dict[str, Any]], positions: list[int], rows: list[list[float]],
                labels: list[str]) -> None:
    for token in tokens:
        if not labels:
            labels.extend(token["p"])
        positions.append(int(token["position"]))
        rows.append([float(token["p"][label]) for label in labels])


def answer_of(stream: EventStream) -> StreamedAnswer:
    """Reduce a stream from guard serve (chat or completions, one choice) to a :class:`StreamedAnswer`.

    Example:
        >>> answer_of(EventStream(start=0.0)).complete
        False
    """
    answer = StreamedAnswer(done=stream.done, error=stream.error, total_ms=(stream.end - stream.start) * 1e3)
    if stream.stamps:
        answer.ttfc_ms = (stream.stamps[0] - stream.start) * 1e3
    positions: list[int] = []
    rows: list[list[float]] = []
    labels: list[str] = []
    for chunk in stream.chunks:
        for choice in chunk.get("choices") or []:
            guard = choice.get("guard") or {}
            if is_summary(chunk):
                answer.decision, answer.verified = guard["decision"], guard.get("verified")
                answer.verdicts = [s["verdict"] for s in guard.get("sentences", [])]
                continue
            answer.text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
            answer.finish_reason = choice.get("finish_reason") or answer.finish_reason
            _add_tokens(guard.get("tokens", []), positions, rows, labels)
    answer.positions, answer.labels = positions, tuple(labels)
    answer.probs = np.asarray(rows, dtype=float).reshape(len(rows), len(labels))
    return answer


def distance(a: StreamedAnswer, b: StreamedAnswer) -> float:
    """Largest absolute difference of a class probability between the two answers' i-th scored tokens.

    Compared over the tokens both have; ``inf`` when either has none or their labels differ.

    Example:
        >>> one = StreamedAnswer(probs=np.array([[0.9, 0.1]]), labels=("true", "false"))
        >>> distance(one, StreamedAnswer(probs=np.array([[0.7, 0.3]]), labels=("true", "false")))
        0.2...
    """
    n = min(len(a.probs), len(b.probs))
    if n == 0 or a.labels != b.labels:
        return float("inf")
    return float(np.abs(a.probs[:n] - b.probs[:n]).max())


def check(answer: StreamedAnswer, own: int, references: list[StreamedAnswer], tolerance: float) -> dict[str, Any]:
    """Check ``answer`` to prompt ``own`` against every prompt's reference answer.

    Failures (any of them fails the answer): ``incomplete`` (no summary, ``[DONE]`` or
    ``finish_reason``, or an error), ``text`` (differs from its reference's), ``positions`` (scored
    positions differ), ``scores`` (distance to its reference above ``tolerance``), ``attribution``
    (its scores are not strictly closer to its own prompt's reference than to every other's),
    ``verdicts`` (sentence verdicts differ).

    Returns:
        ``{"prompt", "ttfc_ms", "total_ms", "deviation", "nearest_other", "failures", "error"}``:
        ``deviation`` is the distance to its own reference, ``nearest_other`` to the closest other one.
    """
    ref = references[own]
    own_d = distance(answer, ref)
    others = [distance(answer, r) for i, r in enumerate(references) if i != own]
    nearest = min(others, default=float("inf"))
    failures = [name for name, failed in (
        ("incomplete", not answer.complete),
        ("text", answer.text != ref.text),
        ("positions", answer.positions != ref.positions),
        ("scores", not own_d <= tolerance),
        ("attribution", not own_d < nearest),
        ("verdicts", answer.verdicts != ref.verdicts),
    ) if failed]
    return {"prompt": own, "ttfc_ms": answer.ttfc_ms, "total_ms": answer.total_ms, "deviation": own_d,
            "nearest_other": nearest, "failures": failures, "error": answer.error}
