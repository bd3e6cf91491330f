"""What the fake vLLM servers of the unit tests share (:mod:`tests.unit.fake_upstream`, :mod:`tests.unit.fake_proxy`).

A fake answers through an ``httpx.MockTransport``; while ``down`` every request fails to connect,
and ``GET /health`` answers 200. Scores reach the server the engine's way: log-probabilities
published into a :class:`ScoreFeed` as :class:`ScoreSegment` rows, which the probe's softmax turns
back into the scripted probabilities.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from adapters.http.score_feed import ScoreFeed
from guard.scores import ScoreSegment

__all__ = ["FakeEngine", "publish_probs", "sse_event"]


class FakeEngine:
    """Base of a fake vLLM OpenAI server: subclasses set ``down`` and answer everything else in ``_answer``."""

    down: bool

    def transport(self) -> httpx.MockTransport:
        """The transport to give an ``httpx.AsyncClient``."""
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        return await self._answer(request)

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError


def publish_probs(feed: ScoreFeed, key: str, start: int, probs: list[tuple[float, ...]]) -> None:
    """Publish rows of class probabilities for positions ``start ..`` of request ``key`` (none: nothing)."""
    if probs:
        scores = np.log(np.array(probs, np.float32))[:, None, :]  # (n, 1 layer, classes): softmax gives probs back
        feed.publish([ScoreSegment(key, start, scores)])


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload)}\n\n".encode()
