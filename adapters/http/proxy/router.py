"""guard proxy's HTTP application: thin routes over :class:`adapters.http.proxy.serving.ProxyRelay`, built by a factory.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (forwarded to the foreign API,
answers read by the reader), ``GET /v1/models`` (the foreign API's, with the client's credentials),
``GET /healthz`` (the foreign API's reachability and the reader's health; 503 when either fails),
``GET /metrics`` (Prometheus text format). Every error answer has OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from adapters.http.errors import APIError
from adapters.http.protocol import parse_body
from adapters.http.proxy.check import CHECK_PATH, check
from adapters.http.proxy.protocol import FORWARDED_HEADERS
from adapters.http.proxy.reader import Reader
from adapters.http.proxy.reader_prompt import ReaderPrompts
from adapters.http.proxy.serving import ProxyRelay
from adapters.http.routes import (
    build_app,
    engine_health,
    error_response,
    forward_models,
    http_client,
    probe_health,
    read_body,
    scores_health,
)
from adapters.http.score_feed import ScoreFeed
from adapters.http.settings import ProxySettings
from guard.metrics import GuardMetrics
from guard.probe import Probe
from guard.verdicts import VerdictRule

__all__ = ["create_proxy_app", "upstream_headers"]

_router = APIRouter()


@dataclass
class _State:
    settings: ProxySettings
    reader_url: str
    relay: ProxyRelay
    reader_client: httpx.AsyncClient
    metrics: GuardMetrics
    probe: Probe
    feed: ScoreFeed
    collector: Any


def create_proxy_app(settings: ProxySettings, reader_url: str, feed: ScoreFeed, probe: Probe, prompts: ReaderPrompts,
                     *, metrics: GuardMetrics | None = None, upstream_client: httpx.AsyncClient | None = None,
                     reader_client: httpx.AsyncClient | None = None, collector: Any = None) -> FastAPI:
    """Build guard proxy's OpenAI-compatible app.

    Args:
        settings: proxy settings (``upstream`` is the foreign API's base URL).
        reader_url: base URL of the reader's vLLM OpenAI server, e.g. ``http://127.0.0.1:41234``.
        feed: where the reader engine's scores arrive.
        probe: the calibrated probe the reader engine scores with.
        prompts: builds the reader's token ids (the reader model's tokenizer and chat template).
        metrics: metrics to record into (a fresh registry by default).
        upstream_client / reader_client: HTTP clients (tests pass ones with mock transports); the
            app closes only clients it created.
        collector: the reader's :class:`adapters.score_channel.ScoreCollector`, reported by ``/healthz``.

    Raises:
        ArtifactError: the probe has no conformal calibration or no "true" label.

    Example:
        >>> app = create_proxy_app(ProxySettings.build(upstream="https://api.example.com/v1"),  # doctest: +SKIP
        ...                        "http://127.0.0.1:8001", ScoreFeed(), probe, prompts)
    """
    rule = VerdictRule.from_probe(probe)
    owned: list[httpx.AsyncClient] = []
    upstream_client = http_client(upstream_client, settings.upstream, settings.upstream_timeout, owned)
    reader_client = http_client(reader_client, reader_url, settings.upstream_timeout, owned)
    metrics = metrics or GuardMetrics()
    reader = Reader(reader_client, settings.served_name, prompts, feed, rule, settings.score_timeout,
                    settings.max_model_len, settings.on_guard_failure)
    relay = ProxyRelay(settings, upstream_client, reader, rule, metrics)
    state = _State(settings, reader_url, relay, reader_client, metrics, probe, feed, collector)
    return build_app("guard proxy", state,
                     lambda request, endpoint, read_body: relay.handle(endpoint, read_body,
                                                                       upstream_headers(request.headers, settings)),
                     _router, owned, [upstream_client, reader_client])


def upstream_headers(headers: Mapping[str, str], settings: ProxySettings) -> dict[str, str]:
    """The client's headers the foreign API gets (:data:`FORWARDED_HEADERS`), with the credentials swapped when
    the proxy has an API key of its own (the client's key is then the guard's: it never leaves the proxy)."""
    forwarded = {k.lower(): v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
    if settings.api_key is not None:
        forwarded.pop("authorization", None)
        if settings.upstream_api_key is not None:
            forwarded["authorization"] = f"Bearer {settings.upstream_api_key.get_secret_value()}"
    return forwarded


def _state(request: Request) -> _State:
    state: _State = request.app.state.guard
    return state


@_router.post(CHECK_PATH)
async def _check(request: Request) -> JSONResponse:
    """The judge endpoint (:mod:`adapters.http.proxy.check`): a question and an answer in, the verdicts out."""
    state = _state(request)
    try:
        body = parse_body(await read_body(request, state.settings.max_request_bytes))
        return JSONResponse(await check(state.relay, body))
    except APIError as exc:
        return error_response(exc)


@_router.get("/v1/models")
async def _models(request: Request) -> Response:
    """The foreign API's model list (the client's credentials passed on)."""
    state = _state(request)
    headers = upstream_headers(request.headers, state.settings)
    return await forward_models(state.relay.upstream, "models", state.relay.who, state.metrics, headers)


@_router.get("/readyz")
@_router.get("/healthz")
async def _healthz(request: Request) -> JSONResponse:
    """The foreign API's reachability and the reader's health; 503 while either fails. Also ``/readyz``."""
    state = _state(request)
    upstream = await _upstream_health(state.relay.upstream)
    reader_ok, reader_detail = await engine_health(state.reader_client, "reader")
    if state.relay.engine_broken is not None:  # the reader answers, but its hidden states are not finite
        reader_ok, reader_detail = False, "the reader produced non-finite hidden states; restart guard proxy"
    healthy = upstream["healthy"] and reader_ok
    body = {
        "status": "ok" if healthy else "unavailable",
        "upstream": {"url": state.settings.upstream, **upstream},
        "reader": {"url": state.reader_url, "model": state.relay.reader.model, "healthy": reader_ok,
                   "detail": reader_detail},
        "scores": scores_health(state.collector, state.feed),
        "probe": probe_health(state.probe),
    }
    return JSONResponse(body, 200 if healthy else 503)


async def _upstream_health(client: httpx.AsyncClient) -> dict[str, Any]:
    """Whether the foreign API answers ``GET models`` at all: without credentials a 401 still proves it is up."""
    try:
        status = (await client.get("models", timeout=5.0)).status_code
    except httpx.HTTPError as exc:
        return {"healthy": False, "status_code": None, "detail": f"unreachable ({type(exc).__name__})"}
    healthy = status < 500
    return {"healthy": healthy, "status_code": status,
            "detail": "reachable" if healthy else f"answers GET models with HTTP {status}"}
