"""A client that leaves a non-streamed request cancels it: the app's real routes, driven over a raw ASGI channel
(the only way to hang up at a chosen moment), in front of a stand-in vLLM server that never finishes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.router import create_app
from adapters.http.settings import ServeSettings
from tests.unit.fake_upstream import MODEL, FakeUpstream, make_probe


@dataclass
class _Endless(FakeUpstream):
    """Starts every completion and never ends it, like a long generation; says when it was abandoned."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:  # cancelled: the relay closed its request
            self.abandoned.set()
        raise AssertionError("unreachable")


def _scope(body: bytes) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}


def test_a_client_leaving_a_non_streamed_request_cancels_the_upstream_request_and_leaks_nothing():
    async def main() -> tuple[_Endless, Any, list[dict[str, Any]]]:
        fake = _Endless(ScoreFeed(), {})
        upstream = httpx.AsyncClient(transport=fake.transport(), base_url="http://upstream")
        app = create_app(ServeSettings.build(served_model_name=MODEL), "http://upstream", fake.feed, make_probe(), fake,
                         client=upstream)
        body = json.dumps({"model": MODEL, "prompt": "Tell me everything.", "max_tokens": 1000}).encode()
        hung_up = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await hung_up.wait()
            return {"type": "http.disconnect"}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        served = asyncio.create_task(app(_scope(body), receive, send))
        await asyncio.wait_for(fake.started.wait(), 10)
        hung_up.set()
        await asyncio.wait_for(served, 10)
        await asyncio.wait_for(fake.abandoned.wait(), 10)
        await upstream.aclose()
        return fake, app, sent

    fake, app, sent = asyncio.run(main())
    metrics = app.state.guard.metrics
    assert fake.abandoned.is_set()
    assert metrics.client_disconnects.labels("completions")._value.get() == 1
    assert metrics.in_flight._value.get() == 0
    assert fake.feed.open_keys == 0  # the request's guard session was closed
    assert sent[0]["status"] == 499


def test_an_answer_that_arrives_is_not_taken_for_a_disconnect():
    from tests.unit.fake_upstream import GOOD, Script, run_app

    async def run(client: httpx.AsyncClient, fake: FakeUpstream, app: Any) -> None:
        answer = await client.post("/v1/completions", json={"model": MODEL, "prompt": "Paris?", "max_tokens": 4})
        assert answer.status_code == 200 and answer.json()["choices"][0]["text"] == "Paris."
        assert app.state.guard.metrics.client_disconnects.labels("completions")._value.get() == 0

    run_app(FakeUpstream(ScoreFeed(), {"Paris?": Script([("Paris.", GOOD)])}), run)
