"""The guarded stream's last mile: each event sent as it comes; a failure producing them ends the stream with one
error event and ``[DONE]``; a client that leaves is counted and the events are closed at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from adapters.http.routes import _EventStream
from guard.metrics import GuardMetrics


def _events(closed: list[bool], fail_after: int | None = None) -> AsyncGenerator[bytes, None]:
    async def events() -> AsyncGenerator[bytes, None]:
        try:
            for i in range(3):
                if fail_after is not None and i == fail_after:
                    raise RuntimeError("a bug")
                yield f"data: {i}\n\n".encode()
            yield b"data: [DONE]\n\n"
        finally:
            closed.append(True)

    return events()


def _run(events: AsyncGenerator[bytes, None], fail_send: bool = False,
         metrics: GuardMetrics | None = None) -> tuple[list[dict[str, Any]], GuardMetrics]:
    sent: list[dict[str, Any]] = []
    metrics = metrics or GuardMetrics()

    async def send(message: dict[str, Any]) -> None:
        if fail_send and message["type"] == "http.response.body" and len(sent) >= 2:
            raise OSError("the client left")
        sent.append(message)

    asyncio.run(_EventStream(events, "chat_completions", metrics).stream_response(send))
    return sent, metrics


def test_each_event_goes_out_as_one_body_part_and_the_stream_ends_with_an_empty_last_part() -> None:
    closed: list[bool] = []
    sent, _ = _run(_events(closed))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert [m["body"] for m in sent[1:]] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n", b""]
    assert [m["more_body"] for m in sent[1:]] == [True] * 4 + [False] and closed == [True]


def test_a_failure_producing_the_events_ends_the_stream_with_an_internal_error_event_and_done() -> None:
    closed: list[bool] = []
    sent, _ = _run(_events(closed, fail_after=1))
    bodies = b"".join(m["body"] for m in sent[1:]).decode()
    events = [e.removeprefix("data: ") for e in bodies.split("\n\n") if e]
    assert events[0] == "0" and json.loads(events[1])["error"]["code"] == "internal_error"
    assert events[2:] == ["[DONE]"] and sent[-1]["more_body"] is False and closed == [True]


def test_a_client_that_leaves_mid_stream_is_counted_and_the_events_are_closed() -> None:
    closed: list[bool] = []
    metrics = GuardMetrics()
    with pytest.raises(OSError):
        _run(_events(closed), fail_send=True, metrics=metrics)
    counted = metrics.client_disconnects.labels("chat_completions")._value.get()
    assert closed == [True] and counted == 1
