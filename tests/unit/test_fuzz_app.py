"""Fuzzing guard serve's app in process (fake upstream): random JSON bodies, guard objects and headers never
get a 500, every 4xx is in OpenAI's shape, every stream ends with [DONE], and the app keeps answering."""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.router import create_app
from adapters.http.settings import ServeSettings
from tests.unit.fake_faults import SCRIPTS, FaultyUpstream, chat
from tests.unit.fake_upstream import MODEL, make_probe

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=10)
PROMPTS = st.sampled_from(["clean", "mixed", "CRASH", "unknown"]) | JSON
GUARD = JSON | st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["pass", "flag", "abstain", "steer"]) | JSON, "alpha": st.floats() | JSON,
    "abstain_message": st.text(max_size=8) | JSON, "gate": JSON, "gate_alpha": JSON, "extra": JSON})
MESSAGES = JSON | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]) | JSON},
                                                 optional={"content": PROMPTS}), max_size=3)
BODY = st.fixed_dictionaries({}, optional={
    "model": st.just(MODEL) | JSON, "messages": MESSAGES, "prompt": PROMPTS, "stream": st.booleans() | JSON,
    "n": st.integers(-1, 3) | JSON, "max_tokens": st.integers(-1, 5) | JSON, "guard": GUARD, "vllm_xargs": JSON,
    "echo": JSON, "stream_options": JSON, "return_token_ids": JSON})
RAW = BODY.map(lambda b: json.dumps(b).encode()) | st.binary(max_size=40)
HEADERS = st.dictionaries(st.sampled_from(["authorization", "x-anything", "openai-organization", "content-type"]),
                          st.text(alphabet=string.ascii_letters + string.digits + " -/;=", max_size=20), max_size=3)


class _UnfussyUpstream(FaultyUpstream):
    """vLLM refuses what it cannot use with a 400; so does this fake (it never crashes on odd input)."""

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        chat_path = request.url.path == "/v1/chat/completions"
        try:
            prompt = body["messages"][-1]["content"] if chat_path else body["prompt"]
        except (KeyError, IndexError, TypeError):
            prompt = None
        if not isinstance(prompt, str) or (prompt not in self.scripts and prompt != "CRASH"):
            return httpx.Response(400, json={"error": {"message": "bad request", "type": "BadRequestError",
                                                       "param": None, "code": 400}})
        return await super()._answer(request)


class _Harness:
    """One app, one event loop, for every example: the app must keep answering after each."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        feed = ScoreFeed()
        self.fake = _UnfussyUpstream(feed, dict(SCRIPTS))
        self.upstream = httpx.AsyncClient(transport=self.fake.transport(), base_url="http://upstream")
        app = create_app(ServeSettings.build(served_model_name=MODEL, score_timeout=0.2, max_request_bytes=4096),
                         "http://upstream", feed, make_probe(), self.fake, client=self.upstream)
        self.app = app
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard")

    async def check(self, path: str, raw: bytes, headers: dict[str, str]) -> None:
        answer = await self.client.post(path, content=raw, headers=headers)
        assert answer.status_code != 500, answer.text
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
        else:
            body: Any = answer.json()
            if answer.status_code >= 400:
                assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
                assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        ok = await self.client.post("/v1/chat/completions", json=chat("clean"))
        assert ok.status_code == 200 and ok.json()["choices"][0]["guard"]["verified"] is True

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.upstream.aclose())
        self.loop.close()


def test_random_requests_never_get_a_500_and_the_app_keeps_answering():
    harness = _Harness()

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]), raw=RAW, headers=HEADERS)
    def check(path: str, raw: bytes, headers: dict[str, str]) -> None:
        harness.loop.run_until_complete(harness.check(path, raw, headers))

    try:
        check()
        registry = harness.app.state.guard.metrics.registry
        assert registry.get_sample_value("guard_requests_in_flight") == 0
        assert harness.app.state.guard.feed.open_keys == 0
    finally:
        harness.close()
