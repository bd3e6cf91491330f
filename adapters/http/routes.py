"""The route wiring that guard serve's app (:mod:`adapters.http.serve.router`) and guard proxy's
(:mod:`adapters.http.proxy.router`) share.

:func:`build_app` makes either FastAPI app: docs off, ``POST /v1/chat/completions`` and ``POST
/v1/completions`` answered by the app's relay, the app's own routes, ``GET /metrics``, framework
errors in OpenAI's shape, the clients it created closed on shutdown. A client that leaves is
noticed: its stream is closed at once, or the JSON answer still being computed for it is cancelled
(either way the upstream request is closed, so vLLM stops generating), and the client's exit is
counted (``guard_client_disconnects_total``) and logged as status 499; an internal error in a
stream ends it with an OpenAI-shaped error event, and one in a JSON answer is a 500 in OpenAI's
shape, both logged without request content. The rest are the pieces of the
GET routes both apps answer alike: ``/v1/models`` passed through from the upstream
(:func:`forward_models`) and the parts of ``/healthz`` (:func:`engine_health`,
:func:`scores_health`, :func:`probe_health`). Each app keeps
its state on ``app.state.guard``; ``settings`` and ``metrics`` there are what both rely on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import PurePath
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from adapters.http.content_log import ContentLog
from adapters.http.errors import (
    APIError,
    UpstreamError,
    error_body,
    from_upstream,
    upstream_failure,
)
from adapters.http.forwarding import JSONReply, StreamReply
from adapters.http.protocol import ENDPOINT_PATHS, Endpoint
from adapters.http.request_log import RequestLog
from adapters.http.score_feed import ScoreFeed
from adapters.http.tracing import instrument
from guard import __version__
from guard.metrics import GuardMetrics
from guard.probe import Probe
from guard.splitters import splitter_names

__all__ = ["Answer", "build_app", "engine_health", "error_response", "forward_models", "http_client", "probe_health",
           "read_body", "scores_health"]

_shared = APIRouter()
_log = logging.getLogger("guard.server")
#: what a client gets for an internal error: no detail (the log has the traceback, without request content)
_INTERNAL = error_body("internal error in guard; the request was not completed, retry it, and report the server "
                       "log's traceback if it persists", "server_error", None, "internal_error")
#: replies to a completions POST: ``answer(request, endpoint, read_body)``
Answer = Callable[[Request, Endpoint, Callable[[], Awaitable[bytes]]], Awaitable[JSONReply | StreamReply]]
_T = TypeVar("_T")


def http_client(given: httpx.AsyncClient | None, base_url: str, timeout: float,
                    owned: list[httpx.AsyncClient]) -> httpx.AsyncClient:
    """``given``, or else a new client for ``base_url``, added to ``owned`` (the clients the app closes).

    The new client has no connection limit and waits ``timeout`` seconds for an answer, 10 to connect.
    """
    if given is not None:
        return given
    client = httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(max_connections=None),
                               timeout=httpx.Timeout(timeout, connect=10.0))
    owned.append(client)
    return client


def build_app(title: str, state: Any, answer: Answer, router: APIRouter, owned: list[httpx.AsyncClient],
              upstreams: Sequence[httpx.AsyncClient] = ()) -> FastAPI:
    """A FastAPI app serving the completions POSTs, ``router`` and ``GET /metrics``.

    Args:
        title: the app's title.
        state: kept on ``app.state.guard``; has ``settings`` (``max_request_bytes``), ``metrics`` and ``probe``
            (``guard_build_info`` names them).
        answer: ``answer(request, endpoint, read_body)`` replies to a completions POST (the relay's ``handle``).
        router: the app's own routes.
        owned: the clients the app created, closed when it shuts down.
        upstreams: the clients the app calls its upstreams with (traced with ``settings.otel``).

    Raises:
        ConfigError: an installed splitter plugin fails to load (at start-up, not at a request).

    Example:
        >>> app = build_app("guard", state, lambda r, e, read: relay.handle(e, read), router, [])  # doctest: +SKIP
    """
    splitter_names()  # plugins load now: a broken one stops the server before it listens

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for client in owned:
            await client.aclose()

    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.guard = state
    probe = state.settings.probe
    state.metrics.describe(__version__, state.settings.served_name, PurePath(probe).name if probe else "none",
                           not state.probe.is_stand_in)
    content = ContentLog(state.settings.log_content)
    for endpoint, path in ENDPOINT_PATHS.items():
        app.add_api_route(path, _completions_route(endpoint, answer, content), methods=["POST"])
    app.include_router(router)
    app.include_router(_shared)
    app.add_middleware(RequestLog, access_log=state.settings.access_log)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    if state.settings.otel:
        instrument(app, upstreams)
    return app


def _completions_route(endpoint: Endpoint, answer: Answer,
                       content: ContentLog) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        state = request.app.state.guard

        body_read = asyncio.Event()

        async def read() -> bytes:
            raw = await read_body(request, state.settings.max_request_bytes)
            content.request(endpoint, raw)
            body_read.set()
            return raw

        reply = await _unless_client_leaves(answer(request, endpoint, read), request.receive, body_read)
        if reply is None:
            state.metrics.record_disconnect(endpoint)
            _log.info("499: the client closed its %s request before the answer", endpoint)
            return Response(status_code=499)  # nobody reads it
        if isinstance(reply, JSONReply):
            content.answer(endpoint, reply.status, reply.body)
            return JSONResponse(reply.body, reply.status)
        return _EventStream(content.stream(endpoint, reply.events), endpoint, state.metrics)

    route.__doc__ = f"The guarded {endpoint.replace('_', ' ')} (OpenAI's API plus the ``guard`` extension)."
    return route


async def _unless_client_leaves(work: Awaitable[_T], receive: Receive, body_read: asyncio.Event) -> _T | None:
    """``work``'s result, or ``None`` when the client disconnects first.

    The ASGI channel is watched from the moment the body has been read (``body_read``; before, the
    body's reader notices a disconnect). On a disconnect ``work`` is cancelled and awaited: the
    relay's clean-up runs (session closed, in-flight gauge decremented) and its upstream request is
    closed, which makes vLLM abort the generation. A stream's own watch takes over once ``work``
    returns it.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive, body_read))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this route is cancelled (the shutdown deadline passed): nothing is left running
        watcher.cancel()
        task.cancel()  # a no-op once it is done
        await asyncio.wait((task, watcher))
    return None if task.cancelled() else task.result()


async def _disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Return once the client has disconnected (after the body was read; the next message says so)."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body.

    Raises:
        APIError: 413 ``request_too_large``: it declares or sends more than ``limit`` bytes.
    """
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


async def forward_models(client: httpx.AsyncClient, path: str, who: str, metrics: GuardMetrics,
                         headers: Mapping[str, str] | None = None, public: bool = False) -> Response:
    """The upstream's model list (``GET path``), or its failure in OpenAI's shape (a transport failure counted).

    ``public``: the upstream is this server's own engine, whose model cards name local folders
    (``root``): each card's ``root`` becomes its ``id``, so no local path reaches a client.
    """
    try:
        answer = await client.get(path, headers=headers)
    except httpx.HTTPError as exc:
        failure = upstream_failure(exc, who)
        metrics.record_upstream_error(failure.kind)
        return error_response(failure)
    if answer.status_code != 200:
        return error_response(from_upstream(answer.status_code, answer.content, who))
    if not public:
        return Response(answer.content, media_type="application/json")
    try:
        listing = json.loads(answer.content)
        cards = listing["data"]
        for card in cards:
            card["root"] = card["id"]
    except (ValueError, KeyError, TypeError) as exc:
        failure = UpstreamError("protocol", f"{who} answered GET {path} with no list of model cards ({exc})")
        metrics.record_upstream_error(failure.kind)
        return error_response(failure)
    return JSONResponse(listing)


async def engine_health(client: httpx.AsyncClient, name: str) -> tuple[bool, str]:
    """Whether a vLLM server (the ``name``: upstream or reader) answers ``GET /health``, and a detail."""
    try:
        healthy = (await client.get("/health", timeout=5.0)).status_code == 200
    except httpx.HTTPError as exc:
        return False, f"unreachable ({type(exc).__name__})"
    return healthy, "ok" if healthy else f"the {name}'s /health is failing"


def scores_health(collector: Any, feed: ScoreFeed) -> dict[str, Any]:
    """``/healthz``'s ``scores``: the score channel's endpoint and counters."""
    endpoint = getattr(collector, "endpoint", None)
    return {"channel": None if endpoint is None else str(endpoint).split("://", 1)[0],  # a scheme: no local path
            "malformed_batches": getattr(collector, "malformed_batches", 0),
            "open_keys": feed.open_keys, "dropped_keys": feed.dropped_keys, "late_segments": feed.late_segments}


def probe_health(probe: Probe) -> dict[str, Any]:
    """``/healthz``'s ``probe``: its kind, labels and calibration (``calibrated: false`` for a random stand-in,
    whose verdicts are all ``uncertain``)."""
    conformal = probe.manifest.conformal
    return {"kind": probe.manifest.kind, "calibrated": not probe.is_stand_in, "labels": list(probe.labels),
            "alpha": conformal.alpha if conformal else None,
            "any_alpha": bool(conformal and conformal.scores is not None)}


def error_response(exc: APIError) -> JSONResponse:
    """An error answer in OpenAI's shape."""
    return JSONResponse(exc.body(), exc.status)


@_shared.get("/livez")
async def _livez() -> JSONResponse:
    """Liveness (a Kubernetes liveness probe): 200 while the server's event loop answers, whatever the engine's state
    (an engine that dies stops the server; /readyz says whether to send work)."""
    return JSONResponse({"status": "alive"})


@_shared.get("/metrics")
async def _metrics(request: Request) -> Response:
    """The guard's metrics in Prometheus text format (built off the event loop: a collector may read a child's page)."""
    page = await asyncio.to_thread(generate_latest, request.app.state.guard.metrics.registry)
    return Response(page, media_type=CONTENT_TYPE_LATEST)


class _EventStream(StreamingResponse):
    """Server-sent events that notice the client leaving (uvicorn cancels the stream, or a send fails), and end
    with one error event and ``[DONE]`` when producing them fails (a bug, not a request's fault: logged without
    content).

    The client's exit is counted and logged as status 499, and the events are closed at once,
    shielded from the cancellation, so the guarded stream releases its request and closes the
    upstream's stream (which makes vLLM abort the generation).
    """

    def __init__(self, events: AsyncGenerator[bytes, None], endpoint: Endpoint, metrics: GuardMetrics) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.events, self.endpoint, self.metrics = events, endpoint, metrics

    async def stream_response(self, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await _relay(self.events, send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, asyncio.CancelledError):
            self.metrics.record_disconnect(self.endpoint)
            _log.info("499: the client closed its %s stream before the end", self.endpoint)
            raise
        finally:  # in a task of its own: the cancellation that ends this stream is re-delivered at every await here
            await asyncio.shield(self.events.aclose())


async def _relay(events: AsyncGenerator[bytes, None], send: Any) -> None:
    """Send each event as it comes (the per-chunk path: no generator in between); an internal error producing
    them ends the stream with one error event and ``[DONE]``. A failed send (the client left) is not caught."""
    following = events.__anext__
    while True:
        try:
            event = await following()
        except StopAsyncIteration:
            return
        except Exception as exc:  # a bug, not a request's fault: logged (no content), the client told
            _log.error("internal error in a stream: %s\n%s", type(exc).__name__,
                       "".join(traceback.format_tb(exc.__traceback__)))
            body = b"data: " + json.dumps(_INTERNAL).encode() + b"\n\ndata: [DONE]\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
            return
        await send({"type": "http.response.body", "body": event, "more_body": True})


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """An unexpected error answering a request: 500 in OpenAI's shape, logged without request content.

    A client that left (its body unread, or its stream closed under ASGI 2.4) is 499, counted elsewhere.
    """
    if isinstance(exc, ClientDisconnect):
        return JSONResponse(error_body("the client closed the connection", "invalid_request_error", None,
                                       "client_closed"), 499)
    _log.error("internal error: %s\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
    return JSONResponse(_INTERNAL, 500)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Framework errors (unknown route, wrong method) in OpenAI's shape."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    code = "not_found" if status == 404 else None
    return JSONResponse(error_body(f"{detail}", "invalid_request_error", None, code), status)
