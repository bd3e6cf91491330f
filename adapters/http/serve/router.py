"""The HTTP application: thin routes over :class:`adapters.http.serve.serving.Relay`, built by a factory.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (guarded), ``GET /v1/models``
(from the upstream), ``GET /healthz`` and ``GET /readyz`` (upstream and score-channel state; 503 when the
upstream is down), ``GET /livez`` (200 while the server answers), ``GET /metrics`` (Prometheus text format).
Every error answer has OpenAI's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from adapters.http.protocol import DEFAULT_MODE_HEADER
from adapters.http.routes import (
    build_app,
    engine_health,
    forward_models,
    http_client,
    probe_health,
    scores_health,
)
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.serving import Relay
from adapters.http.serve.steer import Steering
from adapters.http.settings import ServeSettings
from adapters.http.tokens import TokenTexts
from guard.gating import GateRule
from guard.metrics import GuardMetrics
from guard.probe import Probe
from guard.verdicts import VerdictRule

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
               collector: Any = None, gate: GateRule | None = None, steering: Steering | None = None) -> FastAPI:
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
        steering: the engine's steering vector (``None``: requests in mode "steer" are refused).

    Raises:
        ArtifactError: the probe has no conformal calibration or no "true" label.

    Example:
        >>> settings = ServeSettings.build()  # doctest: +SKIP
        >>> app = create_app(settings, "http://127.0.0.1:8001", ScoreFeed(), probe, texts)  # doctest: +SKIP
    """
    rule = VerdictRule.from_probe(probe)
    owned: list[httpx.AsyncClient] = []
    client = http_client(client, upstream_url, settings.upstream_timeout, owned)
    metrics = metrics or GuardMetrics()
    relay = Relay(settings, client, rule, feed, texts, metrics, gate, steering)
    state = _State(settings, upstream_url, relay, metrics, probe, feed, collector)
    app = build_app("guard", state, lambda _, endpoint, read_body: relay.handle(endpoint, read_body), _router, owned,
                    [client])
    app.add_middleware(_DefaultModeHeader, mode=settings.mode)
    return app


class _DefaultModeHeader:
    """ASGI middleware adding :data:`DEFAULT_MODE_HEADER` to every response (one header, no body work)."""

    def __init__(self, app: Any, mode: str) -> None:
        self.app, self.header = app, (DEFAULT_MODE_HEADER.encode(), mode.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_marked)


def _state(request: Request) -> _State:
    state: _State = request.app.state.guard
    return state


@_router.get("/v1/models")
async def _models(request: Request) -> Response:
    """The upstream's model list."""
    state = _state(request)
    return await forward_models(state.relay.client, "/v1/models", state.relay.who, state.metrics, public=True)


@_router.get("/readyz")
@_router.get("/healthz")
async def _healthz(request: Request) -> JSONResponse:
    """Upstream and score-channel state; 503 while the upstream is not healthy or its outputs are not finite.
    Also ``/readyz`` (a Kubernetes readiness probe; 503 once a shutdown began, :class:`adapters.http.drain.Drain`)."""
    state = _state(request)
    healthy, detail = await engine_health(state.relay.client, "upstream")
    if state.relay.engine_broken is not None:  # the engine answers, but its hidden states are not finite
        healthy = False
        detail = "the engine produced non-finite hidden states for a request that did not steer; restart"
    body = {
        "status": "ok" if healthy else "unavailable",
        "model": state.settings.served_name,
        "upstream": {"url": state.upstream_url, "healthy": healthy, "detail": detail},
        "scores": scores_health(state.collector, state.feed),
        "probe": probe_health(state.probe),
    }
    return JSONResponse(body, 200 if healthy else 503)
