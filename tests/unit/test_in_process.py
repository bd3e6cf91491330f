"""guard serve's engine in its own process: the in-process transport, the route split, one metrics page and the
vLLM names it builds on (the tether: test_tether.py; the engine itself: e2e tier)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest

from adapters.http.in_process import PASSED_THROUGH, EngineRoutes, InProcessTransport, VllmMetrics
from adapters.http.settings import ProxySettings, ServeSettings
from guard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _streaming_app(step: asyncio.Event, left: asyncio.Event) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()

        async def events() -> AsyncIterator[bytes]:
            try:
                for i in range(body["n"]):
                    yield f"data: {i}\n\n".encode()
                    await step.wait()  # the next chunk only once the test has read this one
                    step.clear()
                yield b"data: [DONE]\n\n"
            except asyncio.CancelledError:
                left.set()
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_in_process_transport_streams_each_chunk_as_the_app_sends_it() -> None:
    async def main() -> list[str]:
        step, left = asyncio.Event(), asyncio.Event()
        client = httpx.AsyncClient(transport=InProcessTransport(_streaming_app(step, left)), base_url="http://x")
        seen = []
        async with client.stream("POST", "/v1/completions", json={"n": 3}) as answer:
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
            async for line in answer.aiter_lines():
                if line:
                    seen.append(line)
                    step.set()  # the app can only have sent what was read so far: no buffering of the whole body
        return seen

    assert asyncio.run(main()) == ["data: 0", "data: 1", "data: 2", "data: [DONE]"]


def test_closing_an_in_process_response_early_tells_the_app_its_client_left() -> None:
    async def main() -> bool:
        step, left = asyncio.Event(), asyncio.Event()
        client = httpx.AsyncClient(transport=InProcessTransport(_streaming_app(step, left)), base_url="http://x")
        async with client.stream("POST", "/v1/completions", json={"n": 100}) as answer:
            async for line in answer.aiter_lines():
                if line:
                    break  # the guard's client leaves after the first chunk
        await asyncio.wait_for(left.wait(), 5)  # the app's stream was cancelled: vLLM would abort the request
        return left.is_set()

    assert asyncio.run(main())


def test_engine_routes_pass_vllms_operational_routes_refuse_its_generation_routes_and_send_the_rest_to_the_guard():
    engine, guard = FastAPI(), FastAPI()
    for path in (*PASSED_THROUGH, "/v1/responses", "/v1/chat/completions", "/v1/models"):
        engine.add_api_route(path, lambda: {"from": "vllm"}, methods=["GET", "POST"])
    for path in ("/v1/chat/completions", "/v1/models", "/healthz", "/metrics"):
        guard.add_api_route(path, lambda: {"from": "guard"}, methods=["GET", "POST"])
    app = EngineRoutes(guard, engine, {"/v1/chat/completions", "/v1/models", "/healthz", "/metrics"})

    async def main() -> dict[str, httpx.Response]:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
        paths = ("/health", "/version", "/tokenize", "/v1/responses", "/v1/chat/completions", "/v1/models",
                 "/healthz", "/nowhere")
        return {path: await client.post(path) for path in paths}

    answers = asyncio.run(main())
    for path in ("/health", "/version", "/tokenize"):
        assert answers[path].json() == {"from": "vllm"}, path
    for path in ("/v1/chat/completions", "/v1/models", "/healthz"):
        assert answers[path].json() == {"from": "guard"}, path
    refused = answers["/v1/responses"]
    assert refused.status_code == 404
    assert "/v1/responses is not served by guard serve" in refused.json()["error"]["message"]
    assert answers["/nowhere"].status_code == 404  # the guard's own 404


def test_vllm_metrics_join_the_guards_registry_and_nothing_else_of_the_default_registry_does():
    vllm_counter = Counter("vllm:unit_test_tokens", "a vLLM-named metric on the default registry")
    other = Counter("unit_test_not_vllm", "another metric on the default registry")
    try:
        vllm_counter.inc(7)
        other.inc()
        registry = CollectorRegistry()
        registry.register(VllmMetrics())
        text = generate_latest(registry).decode()
        assert "vllm:unit_test_tokens_total 7.0" in text
        assert "unit_test_not_vllm" not in text and "process_cpu" not in text
    finally:
        from prometheus_client import REGISTRY

        REGISTRY.unregister(vllm_counter)
        REGISTRY.unregister(other)


def test_engine_port_is_a_guard_serve_setting_and_guard_proxy_refuses_it():
    assert ServeSettings.build(engine_port=9123).engine_port == 9123
    with pytest.raises(ConfigError, match="engine_port"):
        ProxySettings.build(upstream="http://127.0.0.1:9000", engine_port=9123)


def test_the_vllm_server_names_guard_serve_builds_on_exist_in_this_vllm():
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import validate_api_server_args
    from vllm.entrypoints.serve.utils.api_utils import log_non_default_args
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.utils import CoreEngineProcManager

    assert list(inspect.signature(build_async_engine_client).parameters)[0] == "args"
    assert list(inspect.signature(build_app).parameters)[:3] == ["args", "supported_tasks", "model_config"]
    assert list(inspect.signature(init_app_state).parameters)[:4] == ["engine_client", "state", "args",
                                                                      "supported_tasks"]
    assert callable(validate_api_server_args) and callable(log_non_default_args)
    assert isinstance(AsyncLLM.errored, property) and isinstance(AsyncLLM.is_running, property)
    assert "self.processes" in inspect.getsource(CoreEngineProcManager.__init__)  # engine_processes() reads it
