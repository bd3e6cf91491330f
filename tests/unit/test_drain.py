"""Requests cut by the shutdown deadline end with an answer (adapters/http/drain.py), over a raw ASGI channel: uvicorn
cancels the request's task, which is what these tests do."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters.http.drain import Drain

_SCOPE = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}


async def _never_answers(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.Event().wait()


async def _streams_one_event(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
    await asyncio.Event().wait()


def _cut(app: Any, stopping: bool) -> list[dict[str, Any]]:
    """What ``Drain(app)`` sends when its request is cancelled once it has started (after ``stop()`` or not)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def main() -> None:
        drain = Drain(app)
        served = asyncio.create_task(drain(_SCOPE, receive, send))
        await asyncio.sleep(0)  # let it start and block
        if stopping:
            drain.stop()
        served.cancel()
        await served
        assert drain.aborted == 1

    asyncio.run(main())
    return sent


def test_a_request_cut_before_its_answer_gets_503_server_shutting_down_in_openai_shape():
    start, body = _cut(_never_answers, stopping=True)
    assert start["status"] == 503
    assert json.loads(body["body"])["error"]["code"] == "server_shutting_down"
    assert body.get("more_body", False) is False


def test_a_stream_cut_by_the_deadline_ends_with_an_error_event_and_done():
    *_, tail = _cut(_streams_one_event, stopping=True)
    events = [block.removeprefix("data: ") for block in tail["body"].decode().split("\n\n") if block]
    assert json.loads(events[0])["error"]["code"] == "server_shutting_down"
    assert events[1:] == ["[DONE]"]
    assert tail.get("more_body", False) is False


def test_a_cancellation_before_the_shutdown_began_is_not_taken_for_the_deadline():
    with pytest.raises(asyncio.CancelledError):
        _cut(_never_answers, stopping=False)


def test_readiness_turns_503_once_the_shutdown_began_while_liveness_and_other_routes_still_answer():
    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def status(drain: Drain, path: str) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        asyncio.run(drain({**_SCOPE, "method": "GET", "path": path}, receive, send))
        return int(sent[0]["status"])

    drain = Drain(ok)
    assert [status(drain, p) for p in ("/readyz", "/livez", "/healthz")] == [200, 200, 200]
    drain.stop()
    assert [status(drain, p) for p in ("/readyz", "/livez", "/healthz")] == [503, 200, 200]
