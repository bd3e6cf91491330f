"""``guard serve``'s engine: vLLM's OpenAI app in this process, called without a socket.

The guarded app (:mod:`adapters.http.serve.router`) talks to its upstream through an ``httpx`` client; here that
client's transport is :class:`InProcessTransport`, which calls vLLM's app directly (no second HTTP server, no
loopback hop), so the guard pays only for its own work per request and per streamed chunk
(``benchmarks/in_server.py``). The app that listens is :class:`EngineRoutes`: the guard's routes, vLLM's
operational routes (``/health``, ``/ping``, ``/version``, ``/tokenize``, ``/detokenize``) as they are, and a
clear 404 for vLLM's other generation routes (they would answer unguarded). ``/metrics`` carries vLLM's
``vllm:*`` metrics next to the guard's (:class:`VllmMetrics`).

Lifecycle: :meth:`InProcessEngine.running` starts the engine (vLLM's engine core in processes of its own,
tethered to this one, so they end even when this process is SIGKILLed), yields, and stops it. An engine core
that dies while serving is noticed within :data:`WATCH_S` seconds (:meth:`InProcessEngine.watch`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from adapters.http.errors import error_body, send_json
from adapters.http.score_feed import ScoreFeed
from adapters.http.settings import ServeSettings
from adapters.http.upstream import engine_obituary, guarded_server_argv
from adapters.score_channel import ScoreCollector
from adapters.vllm.api_server import engine_dead, engine_processes, vllm_app
from guard.errors import AdapterError

__all__ = ["InProcessEngine", "InProcessTransport", "EngineRoutes", "VllmMetrics", "ENGINE_URL", "WATCH_S",
           "PASSED_THROUGH"]

#: the base URL the guard's upstream client uses; nothing listens there, the transport calls the app
ENGINE_URL = "http://vllm.in-process"
#: seconds between two checks that the engine still runs
WATCH_S = 0.25
#: vLLM's routes served as they are (nothing in them generates text)
PASSED_THROUGH = frozenset({"/health", "/ping", "/version", "/tokenize", "/detokenize"})


class _Body(httpx.AsyncByteStream):
    def __init__(self, queue: asyncio.Queue[dict[str, Any]], disconnected: asyncio.Event,
                 task: asyncio.Future[None]) -> None:
        self.queue, self.disconnected, self.task = queue, disconnected, task
        self.complete = False  #: the app sent the body's last part

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.queue.get()
            if message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    self.complete = True
                    return
            elif message["type"] == "app.done":
                if message["error"] is not None:
                    raise httpx.ReadError(f"the engine's app failed: {message['error']!r}")
                return

    async def aclose(self) -> None:
        self.disconnected.set()  # the app sees http.disconnect, and fails its next send
        if not self.complete:
            self.task.cancel()  # at once, mid-generation: vLLM aborts the request


class InProcessTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport calling an ASGI app in this process; the body streams as the app sends it, and
    closing the response tells the app its client left (vLLM then aborts the generation).

    Example:
        >>> client = httpx.AsyncClient(transport=InProcessTransport(app), base_url=ENGINE_URL)  # doctest: +SKIP
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        path = request.url.path
        # ASGI 2.4: a response streams in the app's own task (no second task per request to watch for the
        # client leaving); the transport cancels the app when its response is closed before the end
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
                 "method": request.method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": request.url.query,
                 "headers": [(k.lower(), v) for k, v in request.headers.raw], "server": ("in-process", 80),
                 "client": ("127.0.0.1", 0), "state": {}}
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        disconnected = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if disconnected.is_set() and message["type"] == "http.response.body":
                raise OSError("the guard closed this response")  # ASGI 2.4: sending after a disconnect fails
            queue.put_nowait(message)

        task = asyncio.ensure_future(self.app(scope, receive, send))
        task.add_done_callback(lambda t: queue.put_nowait(
            {"type": "app.done", "error": None if t.cancelled() else t.exception()}))
        try:
            start = await queue.get()
        except asyncio.CancelledError:
            disconnected.set()
            raise
        if start["type"] != "http.response.start":
            raise httpx.ConnectError(f"the engine's app answered no response: {start.get('error')!r}")
        return httpx.Response(start["status"], headers=start.get("headers", []),
                              stream=_Body(queue, disconnected, task))


class VllmMetrics:
    """A Prometheus collector re-exposing vLLM's ``vllm:*`` metrics (on the process's default registry) on the
    guard's registry, so one ``/metrics`` page carries both."""

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name.startswith("vllm:"):
                yield family


class EngineRoutes:
    """The ASGI app ``guard serve`` listens with: vLLM's :data:`PASSED_THROUGH` routes go to vLLM's app, vLLM's
    other routes get a 404 naming the guarded ones, everything else goes to the guard's app.

    Args:
        guard: the guarded app.
        engine: vLLM's app.
        guarded: the paths the guard answers itself (they win over vLLM's).
    """

    def __init__(self, guard: Any, engine: Any, guarded: Iterable[str]) -> None:
        self.guard, self.engine = guard, engine
        own = set(guarded)
        self.refused = frozenset(path for route in getattr(engine, "routes", ())
                                 if (path := getattr(route, "path", None)) and path not in own
                                 and path not in PASSED_THROUGH)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in PASSED_THROUGH:
            await self.engine(scope, receive, send)
        elif path in self.refused:
            await _refuse(path, send)
        else:
            await self.guard(scope, receive, send)


async def _refuse(path: str, send: Any) -> None:
    body = json.dumps(error_body(f"{path} is not served by guard serve: its answers would not be guarded; use "
                                 "/v1/chat/completions or /v1/completions", "invalid_request_error", None,
                                 "not_found")).encode()
    await send_json(send, 404, body)


class InProcessEngine:
    """vLLM's engine and OpenAI app for ``guard serve``, in this process.

    Args:
        settings: model, engine limits, served name, passed-through ``vllm_args``.
        probe: the probe artefact the engine scores with.

    Example:
        >>> engine = InProcessEngine(settings, "probe.safetensors")  # doctest: +SKIP
        >>> async with engine.running():  # doctest: +SKIP
        ...     app = create_app(settings, ENGINE_URL, engine.feed, probe, texts, client=engine.client)
    """

    def __init__(self, settings: ServeSettings, probe: str) -> None:
        self.settings, self.probe = settings, probe
        #: where vLLM's app answers unguarded (``engine_port``), else :data:`ENGINE_URL` (only this process)
        self.url = ENGINE_URL if settings.engine_port is None else f"http://127.0.0.1:{settings.engine_port}"
        self.model_path = ""
        self.feed = ScoreFeed()
        self.collector: ScoreCollector | None = None
        self.client: httpx.AsyncClient | None = None  #: calls vLLM's app; set while running
        self.app: Any = None  #: vLLM's app; set while running
        self.engine_pids: list[int] = []  #: vLLM's engine core processes, once started
        self.death: str | None = None  #: why the engine ended while serving, once it did
        self._engine: Any = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[InProcessEngine]:
        """Start the engine and vLLM's app; stop both (and the score collector) on exit.

        Raises:
            ConfigError: passed-through vLLM arguments vLLM or the guard refuses (before anything starts).
            AdapterError: the engine did not start.
        """
        s = self.settings
        endpoint, self.model_path, argv = guarded_server_argv(s, self.probe)
        argv = argv[3:]  # vLLM's arguments, without the program: its app runs here
        os.environ.setdefault("VLLM_ENGINE_READY_TIMEOUT_S", str(round(s.startup_timeout)))
        self.collector = ScoreCollector(endpoint, self.feed)
        try:
            async with _started(argv) as engine:
                self._engine, self.app = engine.client, engine.app
                self.engine_pids = list(engine_processes(engine.client))
                self.client = httpx.AsyncClient(transport=InProcessTransport(engine.app), base_url=ENGINE_URL,
                                                timeout=httpx.Timeout(s.upstream_timeout, connect=10.0))
                try:
                    yield self
                finally:
                    await self.client.aclose()
        finally:
            self.collector.close()
            self.collector = None

    async def watch(self, on_death: Callable[[], None]) -> None:
        """Call ``on_death()`` once the engine has died (checked every :data:`WATCH_S` s); :attr:`death` then says
        how and what to do. Runs until cancelled."""
        while self._engine is None or not engine_dead(self._engine):
            await asyncio.sleep(WATCH_S)
        self.death = self._obituary()
        on_death()

    def _obituary(self) -> str:
        return engine_obituary(engine_processes(self._engine))


@asynccontextmanager
async def _started(argv: list[str]) -> AsyncIterator[Any]:
    try:
        context = vllm_app(argv)
        engine = await context.__aenter__()
    except (RuntimeError, OSError, TimeoutError) as exc:  # vLLM: "Engine core initialization failed ..."
        raise AdapterError(f"the vLLM engine did not start ({exc}); its log above says why. Common causes: not "
                           "enough memory for the KV cache (lower max_model_len or GUARD_KV_CACHE_GIB) or a probe "
                           "made for another model") from exc
    try:
        yield engine
    except BaseException as exc:
        if not await context.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await context.__aexit__(None, None, None)

