"""Hostile values in every field, against both apps (guard serve, guard proxy; fake upstreams): NaN, ±Infinity,
1e308, negative zero, huge integers, huge strings and deep nesting always get a 2xx or an OpenAI-shaped 4xx,
never a 5xx, and the app keeps answering."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http.proxy.router import create_proxy_app
from adapters.http.score_feed import ScoreFeed
from adapters.http.settings import ProxySettings
from tests.unit.fake_proxy import READER, UPSTREAM, FakeForeign, FakeReader, WordPrompts
from tests.unit.fake_upstream import MODEL, make_probe
from tests.unit.test_fuzz_app import _Harness

DEEP = "__DEEP__"
HOSTILE = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 2**64, -(2**63), 10**400, 0, -1,
                           "x" * 3000, "", "\u0000", True, None, [], {}, DEEP])
FIELDS = ["temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "n", "seed", "presence_penalty",
          "frequency_penalty", "logit_bias", "stop", "logprobs", "top_logprobs", "user", "model", "stream_options",
          "messages.0.content", "messages.0.role", "guard.alpha", "guard.steer_alpha", "guard.mode", "guard.gate_alpha",
          "guard.abstain_message", "vllm_xargs.x", "logit_bias.42", "stream_options.include_usage"]
OVERRIDES = st.dictionaries(st.sampled_from(FIELDS), HOSTILE, min_size=1, max_size=3)


def _raw(prompt: str, model: str, overrides: dict[str, Any], stream: bool, depth: int) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4,
                            "stream": stream}
    for path, value in overrides.items():
        holder: Any = body
        *parents, last = path.split(".")
        for part in parents:
            holder = holder[int(part)] if isinstance(holder, list) else holder.setdefault(part, {})
            if not isinstance(holder, (dict, list)):
                break
        else:
            if isinstance(holder, list):
                holder[int(last)] = value
            else:
                holder[last] = value
    text = json.dumps(body)  # NaN / Infinity written as Python's parser reads them
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


class _UnfussyForeign(FakeForeign):
    """A foreign API that refuses (400) what a real one would, instead of choking on it."""

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/models":
            body = json.loads(request.content)
            n = body.get("n")
            messages = body.get("messages")
            if (n is not None and not (isinstance(n, int) and 1 <= n <= 4)) or not isinstance(messages, list):
                return httpx.Response(400, json={"error": {"message": "bad request", "type": "invalid_request_error",
                                                           "param": None, "code": None}})
        return await super()._handle(request)


class _ProxyHarness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        feed, prompts = ScoreFeed(), WordPrompts()
        self.upstream = httpx.AsyncClient(transport=_UnfussyForeign().transport(), base_url=UPSTREAM)
        self.reader = httpx.AsyncClient(transport=FakeReader(feed, prompts).transport(), base_url="http://reader")
        self.app = create_proxy_app(ProxySettings.build(upstream=UPSTREAM, served_model_name=READER,
                                                        max_request_bytes=4096, score_timeout=0.2),
                                    "http://reader", feed, make_probe(), prompts, upstream_client=self.upstream,
                                    reader_client=self.reader)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://guard")

    def close(self) -> None:
        for client in (self.client, self.upstream, self.reader):
            self.loop.run_until_complete(client.aclose())
        self.loop.close()


async def _check(client: httpx.AsyncClient, raw: bytes, prompt: str, model: str) -> None:
    answer = await client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code < 500, answer.text
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
        assert '"code":"internal_error"' not in answer.text.replace(" ", ""), answer.text
    elif answer.status_code >= 400:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    ok = await client.post("/v1/chat/completions",
                           json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4})
    assert ok.status_code == 200, ok.text


def _run(harness: Any, prompt: str, model: str) -> None:
    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(overrides=OVERRIDES, stream=st.booleans(), depth=st.sampled_from([3, 64, 65, 2000]))
    def check(overrides: dict[str, Any], stream: bool, depth: int) -> None:
        harness.loop.run_until_complete(_check(harness.client, _raw(prompt, model, overrides, stream, depth), prompt,
                                               model))

    try:
        check()
        assert harness.app.state.guard.metrics.registry.get_sample_value("guard_requests_in_flight") == 0
    finally:
        harness.close()


def test_guard_serve_answers_hostile_values_in_any_field_with_2xx_or_an_openai_4xx():
    _run(_Harness(), "clean", MODEL)


def test_guard_proxy_answers_hostile_values_in_any_field_with_2xx_or_an_openai_4xx():
    _run(_ProxyHarness(), "capital", "foreign-model")
