"""The HTTP application: thin routes over :class:`server.relay.Relay`, built by a factory.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (guarded), ``GET /v1/models``
(from the upstream), ``GET /healthz`` (upstream and score-channel state; 503 when the upstream is
down), ``GET /metrics`` (Prometheus text format). Every error answer has OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from guard.gating import GateRule
from guard.metrics import GuardMetrics
from guard.probe import Probe
from guard.verdicts import VerdictRule
from server.errors import APIError, error_body, from_upstream, upstream_failure
from server.protocol import Endpoint
from server.relay import JSONReply, Relay
from server.score_feed import ScoreFeed
from server.settings import ServeSettings
from server.tokens import TokenTexts

__all__ = ["create_app"]

_router = APIRouter()


@dataclass
class _State:
    settings: ServeSettings
    upstream_url: str
    relay: Relay
    metrics: GuardMetrics
    probe: Probe
    feed: ScoreFeed
    collector: Any


def create_app(settings: ServeSettings, upstream_url: str, feed: ScoreFeed, probe: Probe, texts: TokenTexts, *,
               metrics: GuardMetrics | None = None, client: httpx.AsyncClient | None = None,
               collector: Any = None, gate: GateRule | None = None) -> FastAPI:
    """Build the guarded OpenAI-compatible app.

    Args:
        settings: server settings.
        upstream_url: base URL of vLLM's OpenAI server, e.g. ``http://127.0.0.1:41234``.
        feed: where the engine's scores arrive (a :class:`ScoreCollector`'s store).
        probe: the calibrated probe the engine scores with.
        texts: splits non-streamed answers into per-token texts.
        metrics: metrics to record into (a fresh registry by default).
        client: HTTP client for the upstream (tests pass one with a mock transport); the app closes
            only a client it created.
        collector: the :class:`adapters.score_channel.ScoreCollector`, reported by ``/healthz``.
        gate: the pre-generation gate whose columns follow the probe's in the engine's score rows.

    Raises:
        ArtifactError: the probe has no conformal calibration or no "true" label.

    Example:
        >>> app = create_app(ServeSettings.build(), "http://127.0.0.1:8001", ScoreFeed(), probe, texts)  # doctest: +SKIP
    """
    rule = VerdictRule.from_probe(probe)
    owned = client is None
    if client is None:
        client = httpx.AsyncClient(base_url=upstream_url, limits=httpx.Limits(max_connections=None),
                                   timeout=httpx.Timeout(settings.upstream_timeout, connect=10.0))
    metrics = metrics or GuardMetrics()
    relay = Relay(settings, client, rule, feed, texts, metrics, gate)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await client.aclose()

    app = FastAPI(title="guard", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.guard = _State(settings, upstream_url, relay, metrics, probe, feed, collector)
    app.include_router(_router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


def _state(request: Request) -> _State:
    return request.app.state.guard


@_router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """Guarded chat completion (OpenAI's API plus the ``guard`` extension)."""
    return await _serve(request, "chat_completions")


@_router.post("/v1/completions")
async def completions(request: Request) -> Response:
    """Guarded text completion (OpenAI's API plus the ``guard`` extension)."""
    return await _serve(request, "completions")


async def _serve(request: Request, endpoint: Endpoint) -> Response:
    state = _state(request)
    reply = await state.relay.handle(endpoint, lambda: _read_body(request, state.settings.max_request_bytes))
    if isinstance(reply, JSONReply):
        return JSONResponse(reply.body, reply.status)
    return StreamingResponse(reply.events, media_type="text/event-stream")


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = APIError(413, f"the request body is larger than {limit} bytes; send a shorter request or raise "
                              "max_request_bytes (GUARD_MAX_REQUEST_BYTES)", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large
        parts.append(part)
    return b"".join(parts)


@_router.get("/v1/models")
async def models(request: Request) -> Response:
    """The upstream's model list."""
    state = _state(request)
    try:
        answer = await state.relay.client.get("/v1/models")
    except httpx.HTTPError as exc:
        failure = upstream_failure(exc)
        state.metrics.record_upstream_error(failure.kind)
        return _error(failure)
    if answer.status_code != 200:
        return _error(from_upstream(answer.status_code, answer.content))
    return Response(answer.content, media_type="application/json")


@_router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Upstream and score-channel state; 503 while the upstream is not healthy."""
    state = _state(request)
    try:
        healthy = (await state.relay.client.get("/health", timeout=5.0)).status_code == 200
        detail = "ok" if healthy else "the upstream's /health is failing"
    except httpx.HTTPError as exc:
        healthy, detail = False, f"unreachable ({type(exc).__name__})"
    conformal = state.probe.manifest.conformal
    body = {
        "status": "ok" if healthy else "unavailable",
        "model": state.settings.served_name,
        "upstream": {"url": state.upstream_url, "healthy": healthy, "detail": detail},
        "scores": {"endpoint": getattr(state.collector, "endpoint", None),
                   "malformed_batches": getattr(state.collector, "malformed_batches", 0),
                   "open_keys": state.feed.open_keys, "dropped_keys": state.feed.dropped_keys,
                   "late_segments": state.feed.late_segments},
        "probe": {"kind": state.probe.manifest.kind, "labels": list(state.probe.labels),
                  "alpha": conformal.alpha if conformal else None,
                  "any_alpha": bool(conformal and conformal.scores is not None)},
    }
    return JSONResponse(body, 200 if healthy else 503)


@_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """The guard's metrics in Prometheus text format."""
    return Response(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Framework errors (unknown route, wrong method) in OpenAI's shape."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    code = "not_found" if status == 404 else None
    return JSONResponse(error_body(f"{detail}", "invalid_request_error", None, code), status)
