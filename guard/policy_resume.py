"""Steering resume: once a steered generation starts, drop what it replaces and go on with what is kept.

Mode "steer" asks to steer at the gate or at the first flagged sentence (:mod:`guard.policy_modes`)
and stops; the caller starts the steered generation and calls :func:`resume`, which cuts the
choice's state back to the position the steered tokens start from: ``continue`` keeps the tokens
before the flagged sentence's first token (and the verdicts on the sentences they hold), ``regenerate``
and the gate keep nothing. The contract is :mod:`guard.policy`'s.
"""

from __future__ import annotations

from collections import deque

from guard.errors import AdapterError
from guard.policy_sentences import SentencePolicy

__all__ = ["resume"]


def resume(policy: SentencePolicy) -> None:
    """Cut ``policy`` back to where the steered tokens start and switch it to its mode's resumed form.

    Afterwards the steered tokens and scores are fed from :attr:`SteerPoint.position` on (``continue``),
    or from the first generated position (``regenerate``, the gate); scores of earlier positions are
    ignored. Kept text not yet emitted (whitespace at most) goes to ``policy.out``.

    Args:
        policy: a choice that asked to steer (``GuardEvent.steer``) and waits.

    Raises:
        AdapterError: the choice did not ask to steer, or already resumed.
    """
    point = policy.steered
    if not policy.waiting or point is None:
        raise AdapterError("resume() without a pending steering request; call it once after GuardEvent.steer")
    cut = point.position if point.position is not None else (policy.first_position or 0)
    kept = policy.mode.tokens_before(cut) if point.how == "continue" else []
    policy.mode = policy.mode.resumed()
    policy.splitter = policy.new_splitter()
    for p, t in kept:  # sentences closed here were decided before steering
        policy.splitter.feed(p, t)
    policy.closed.clear()
    policy.rewind(cut)
    policy.unreleased = deque(u for u in policy.unreleased if u[0] < cut)
    if point.how == "regenerate":
        policy.verdicts = []
        policy.unreleased.clear()
    policy.skip_below = point.flagged.index if (point.flagged is not None and point.how == "continue") else 0
    policy.tokens = policy.tokens_scored = len(kept)
    policy.received = sum(len(t) for _, t in kept)
    policy.emitted = min(policy.emitted, policy.received)
    policy.stopped = policy.finished = False
    text = "".join(t for _, t in kept)[policy.emitted:]
    if text:
        policy.emit(text)
    policy.release_scores()
