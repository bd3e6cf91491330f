"""Faulty peers for the hardening tests, and guard serve's / guard proxy's apps over them.

:class:`FaultyUpstream` is :class:`tests.unit.fake_upstream.FakeUpstream` (vLLM's API) with more
ways to fail, picked by the prompt: ``GARBAGE`` (200 that is not JSON), ``BADEVENT`` (a stream event
that is not JSON), ``DROP`` (the connection breaks mid-stream), ``TRUNCATED`` (the stream ends
before the choice finished); with ``silent`` no score is ever published (the score channel is down).
:class:`FaultyForeign` adds ``DROP`` and ``BADEVENT`` streams to guard proxy's foreign API, and
:class:`SlowReader` a reader that times out. :func:`serve` and :func:`proxy` run a test against
either app in process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.http.score_feed import ScoreFeed
from tests.unit.fake_engine import sse_event
from tests.unit.fake_proxy import FakeForeign, FakeReader, Proxy
from tests.unit.fake_upstream import BAD, GOOD, MODEL, FakeUpstream, Script, run_app

SCRIPTS = {
    "clean": Script([("Paris", GOOD), (" is", GOOD), (" in", GOOD), (" France", GOOD), (".", GOOD)]),
    "mixed": Script([("Good", GOOD), (" one", GOOD), (".", GOOD), (" Bad", BAD), (" claim", BAD), (".", BAD),
                     (" More", GOOD), (" text", GOOD), (".", GOOD)], n_prompt=11),
}


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: AsyncIterator[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._parts:
            yield part


async def _broken(request: httpx.Request, events: list[bytes], end: str) -> AsyncIterator[bytes]:
    for event in events:
        yield event
        await asyncio.sleep(0)
    if end == "drop":
        raise httpx.ReadError("connection reset by peer", request=request)
    if end == "peer_closed":  # what httpx raises when a real upstream dies mid-body (h11's wording)
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body "
                                        "(incomplete chunked read)", request=request)


def _chunk(text: str, chat: bool, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": None, "logprobs": None, **extra}
    choice.update({"delta": {"content": text}} if chat else {"text": text})
    return sse_event({"id": "x", "object": "chat.completion.chunk" if chat else "text_completion", "created": 1,
                      "model": MODEL, "choices": [choice]})


@dataclass
class FaultyUpstream(FakeUpstream):
    """vLLM's server with more failures (see the module docstring)."""

    silent: bool = False

    def _publish(self, key: str, start: int, probs: list[tuple[float, ...]]) -> None:
        if not self.silent:
            super()._publish(key, start, probs)

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return await super()._answer(request)
        body = json.loads(request.content)
        chat = request.url.path == "/v1/chat/completions"
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        stream = body.get("stream") is True
        if prompt == "GARBAGE" and not stream:
            return httpx.Response(200, content=b"<html>502 bad gateway</html>")
        first = _chunk("Paris", chat, token_ids=[101], **({} if chat else {"prompt_token_ids": [0, 1, 2]}))
        if chat:
            first = first.replace(b'"choices"', b'"prompt_token_ids": [0, 1, 2], "choices"', 1)
        if prompt == "BADEVENT":
            events = [first, b"data: {not json\n\n"]
        elif prompt in ("DROP", "PEERCLOSED", "TRUNCATED"):
            events = [first, _chunk(" is", chat, token_ids=[102])]
        else:
            return await super()._answer(request)
        self.requests.append(body)
        end = {"DROP": "drop", "PEERCLOSED": "peer_closed"}.get(prompt, "end")
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=_Body(_broken(request, events, end)))


def serve(run: Any, *, silent: bool = False, **settings: Any) -> FaultyUpstream:
    """guard serve's app over a :class:`FaultyUpstream`; runs ``run(client, fake, app)`` in an event loop."""
    return run_app(FaultyUpstream(ScoreFeed(), dict(SCRIPTS), silent=silent), run, **settings)


@dataclass
class FaultyForeign(FakeForeign):
    """guard proxy's foreign API with ``DROP`` and ``BADEVENT`` streams."""

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        question = (body.get("messages") or [{}])[-1].get("content") if "messages" in body else body.get("prompt")
        if body.get("stream") and question in ("DROP", "BADEVENT"):
            chat = "messages" in body
            events = [_chunk("The", chat), b"data: {not json\n\n"] if question == "BADEVENT" else [_chunk("The", chat)]
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_Body(_broken(request, events, "drop" if question == "DROP" else "end")))
        return await super()._handle(request)


@dataclass
class SlowReader(FakeReader):
    """A reader that never answers in time."""

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)


def proxy(*, slow_reader: bool = False, **settings: Any) -> Proxy:
    """guard proxy's app over a :class:`FaultyForeign` (and a :class:`SlowReader` when asked); call ``.serve(run)``."""
    made = Proxy(**settings)
    made.foreign = FaultyForeign()
    if slow_reader:
        made.reader = SlowReader(made.feed, made.prompts)
    return made


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    """A chat request body for either app (guard proxy forwards any model name)."""
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}


def sample(app: Any, name: str, **labels: str) -> float:
    """One metric sample of the app's registry (0 when never observed)."""
    return app.state.guard.metrics.registry.get_sample_value(name, labels) or 0.0
