"""Guard failures: the upstream produced an answer, but the guard could not judge it.

Three kinds (:data:`guard.metrics.GUARD_FAILURES`): ``scores_missing`` — guard serve's engine scores
(or guard proxy's reader scores) did not arrive within ``score_timeout``, e.g. the score channel is
down; ``reader`` — guard proxy's reader engine failed, timed out or could not take the answer;
``answer_check`` — a request in mode ``abstain`` asked for the answer check and its inputs (the prompt's
last row, the tokens' log-probabilities) did not all come, so the whole answer could not be judged. The
``on_guard_failure`` setting decides what the client gets:

* ``fail_open`` (default): the upstream's answer, unchanged, decided with whatever scores arrived
  (``pass`` when none did), its ``guard`` marked ``verified: false`` with ``error: {kind, message}``.
* ``fail_closed``: the guard abstains (``guard.abstained.kind: "guard_failure"``): the abstain
  message replaces the answer, as for a flagged sentence. A request in mode ``pass`` (score only) is
  never changed; it is marked unverified.

Every guard summary carries ``verified`` (and ``error``, ``null`` when verified). An upstream that
fails itself produced no answer: that is a 502/504 (:mod:`adapters.http.errors`) under either policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from guard.metrics import GuardMetrics
from guard.policy import GuardEvent, StreamGuard

__all__ = ["FailurePolicy", "GuardFailure", "scores_missing", "reader_failed", "answer_unjudged", "fail", "mark",
           "record"]

FailurePolicy = Literal["fail_open", "fail_closed"]


@dataclass(frozen=True)
class GuardFailure:
    """Why the guard could not judge one answer.

    Attributes:
        kind: ``scores_missing``, ``reader`` or ``answer_check`` (a metric label).
        message: what happened and what to check; names no request text.

    Example:
        >>> GuardFailure("reader", "the reader is unreachable").payload()
        {'kind': 'reader', 'message': 'the reader is unreachable'}
    """

    kind: Literal["scores_missing", "reader", "answer_check"]
    message: str

    def payload(self) -> dict[str, str]:
        """The ``guard.error`` object."""
        return {"kind": self.kind, "message": self.message}


def scores_missing(arrived: int, expected: int, timeout: float, source: str = "engine") -> GuardFailure:
    """The ``scores_missing`` failure: ``arrived`` of ``expected`` token scores came within ``timeout`` s."""
    return GuardFailure("scores_missing", f"only {arrived} of {expected} token scores from the {source} arrived within "
                                          f"score_timeout={timeout:g} s; check the score channel in GET /healthz, "
                                          "or raise score_timeout (GUARD_SCORE_TIMEOUT)")


def reader_failed(message: str) -> GuardFailure:
    """The ``reader`` failure, with the reader's error message."""
    return GuardFailure("reader", message)


def answer_unjudged(what: str) -> GuardFailure:
    """The ``answer_check`` failure: ``what`` did not come, so the whole answer could not be judged."""
    return GuardFailure("answer_check", f"the answer check could not judge the answer: {what}; check the upstream "
                                        "(a vLLM OpenAI server returns both) and the score channel in GET /healthz")


def fail(guard: StreamGuard, failure: GuardFailure, policy: FailurePolicy) -> GuardEvent:
    """Apply ``policy`` to a guard that could not judge its answer (call before ``guard.finish()``).

    ``fail_closed`` abstains (kind ``guard_failure``, in every mode but ``pass``); ``fail_open``
    changes nothing.
    """
    if policy == "fail_closed":
        return guard.fail_closed(f"{failure.kind}: {failure.message}")
    return GuardEvent()


def mark(payload: dict[str, Any], failure: GuardFailure | None) -> dict[str, Any]:
    """Add ``verified`` and ``error`` to a choice's ``guard`` field (in place; returned for chaining)."""
    payload["verified"] = failure is None
    payload["error"] = None if failure is None else failure.payload()
    return payload


def record(metrics: GuardMetrics, failure: GuardFailure | None, policy: FailurePolicy) -> None:
    """Count a failure (if any) in ``guard_failures_total`` and ``guard_upstream_errors_total``."""
    if failure is not None:
        metrics.record_guard_failure(failure.kind, policy)
        metrics.record_upstream_error(failure.kind)
