"""``guard serve`` and ``guard proxy``: start the guarded engine, serve the app with uvicorn, stop on exit.

``guard serve`` runs vLLM's OpenAI app in its own process (:mod:`adapters.http.in_process`: no second HTTP
server, measured in ``benchmarks/in_server.py``): load and check the probe (before the engine's slow start) ->
start vLLM's engine (its engine core in processes of its own, tethered to this one) and build vLLM's app with the
capture on and the score collector bound -> load the tokenizer -> serve until SIGINT or SIGTERM -> stop the
engine (always, also when start-up fails or is interrupted). ``guard proxy`` starts the same engine as its
private reader, as a child vLLM server on a leash (:class:`adapters.http.upstream.UpstreamServer`; loopback
only, prefix caching off) and serves :mod:`adapters.http.proxy.router`.

The URL is printed to stderr once the server accepts connections. SIGTERM drains the running requests for at
most ``shutdown_timeout`` seconds, then ends the rest with an error (:mod:`adapters.http.drain`; their
engine requests are closed, so vLLM aborts them) and stops the engine. An engine that dies while serving stops
the server, which then raises :class:`AdapterError` (exit status 2 from the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from adapters.http.api_key import ApiKey
from adapters.http.artefacts import check_fit
from adapters.http.drain import Drain
from adapters.http.in_process import EngineRoutes, InProcessEngine, VllmMetrics
from adapters.http.logs import configure_logging
from adapters.http.proxy.protocol import NO_STEERING
from adapters.http.proxy.reader_prompt import HFReaderPrompts
from adapters.http.proxy.router import create_proxy_app
from adapters.http.self_test import self_test
from adapters.http.serve.router import create_app
from adapters.http.serve.steer import Steering
from adapters.http.settings import ProxySettings, ServeSettings
from adapters.http.starting import StartingPort, bind_port
from adapters.http.tokens import HFTokenTexts
from adapters.http.upstream import ReaderMetrics, UpstreamServer
from adapters.run_folder import use_for_vllm
from guard.errors import AdapterError, ConfigError
from guard.gating import GateRule
from guard.heads import check_gate
from guard.metrics import GuardMetrics
from guard.probe import Probe
from guard.steering import SteeringVector
from guard.verdicts import VerdictRule

__all__ = ["run", "run_proxy"]


class _Server(uvicorn.Server):
    """uvicorn's server, announcing its URL once it accepts connections (``announce(url)`` says what), and
    telling ``drain`` when its shutdown begins."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], str], drain: Drain) -> None:
        super().__init__(config)
        self.announce, self.drain = announce, drain

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"guard: {self.announce(f'http://{self.config.host}:{self.config.port}/v1')}", file=sys.stderr,
                  flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.stop()
        await super().shutdown(sockets)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(settings: ServeSettings) -> None:
    """Serve until interrupted; the upstream is stopped on every exit path.

    Args:
        settings: with ``probe`` set (the CLI fills in the model's shipped probe).

    Raises:
        ConfigError: no probe was given.
        ArtifactError: the probe cannot be loaded or has no conformal calibration with a "true" label.
        AdapterError: the upstream did not start.
    """
    configure_logging(settings.log_level, settings.log_format)
    use_for_vllm()  # vLLM's socket files in this process's run folder, removed at exit
    probe_path, probe = _calibrated_probe(settings.probe, "guard serve needs a probe: pass --probe PATH (or "
                                                          "GUARD_PROBE), or serve a model that ships one")
    gate = None
    if settings.use_gate and settings.gate is not None:
        gate_probe = Probe.load(settings.gate)
        check_gate(probe, gate_probe)
        gate = GateRule(gate_probe, offset=probe.outputs)
    vector = SteeringVector.load(settings.steering) if settings.steering is not None else None
    check_fit(settings.model, probe, gate.gate if gate is not None else None, vector)  # before the engine's slow start
    steering = None
    if vector is not None and settings.steering is not None:
        steering = Steering.of(vector, settings.steering, settings.steer_alpha)

    def app(engine: InProcessEngine) -> Any:
        metrics = GuardMetrics()
        metrics.registry.register(VllmMetrics())  # one /metrics page: the guard's and vLLM's
        guarded = create_app(settings, engine.url, engine.feed, probe, HFTokenTexts(engine.model_path),
                             metrics=metrics, client=engine.client, collector=engine.collector, gate=gate,
                             steering=steering)
        routes = EngineRoutes(guarded, engine.app, {getattr(route, "path", "") for route in guarded.routes})
        return _with_key(routes, settings)

    _serve_in_process(settings, InProcessEngine(settings, probe_path), app,
                      lambda url: f"serving {settings.served_name!r} at {url} (OpenAI API; GET /healthz, /health, "
                                  "/metrics); vLLM's engine in this process")


def run_proxy(settings: ProxySettings) -> None:
    """Serve guard proxy until interrupted; the reader engine is stopped on every exit path.

    Args:
        settings: with ``probe`` set (the CLI fills in the reader model's shipped probe).

    Raises:
        ConfigError: no probe was given.
        ArtifactError: the probe cannot be loaded or has no conformal calibration with a "true" label.
        AdapterError: the reader did not start.
    """
    configure_logging(settings.log_level, settings.log_format)
    use_for_vllm()  # the reader's socket files in this process's run folder, removed at exit
    if settings.mode == "steer" and not settings.upstream_guarded:
        raise ConfigError(f"mode='steer' is not available in guard proxy: {NO_STEERING}; set mode to flag, abstain "
                          "or pass (guard serve steers its own engine; upstream_guarded passes it on to one)")
    probe_path, probe = _calibrated_probe(settings.probe, "guard proxy needs a probe for its reader: pass --probe "
                                                          "PATH (or GUARD_PROBE), or read with a model that ships one")
    check_fit(settings.model, probe)

    def app(reader: UpstreamServer) -> Any:
        prompts = HFReaderPrompts(HFTokenTexts(reader.model_path))
        metrics = GuardMetrics()
        metrics.registry.register(ReaderMetrics(reader.url))  # one /metrics page: the guard's and its reader's
        return _with_key(create_proxy_app(settings, reader.url, reader.feed, probe, prompts, metrics=metrics,
                                          collector=reader.collector), settings)

    # prefix caching off: every prompt token scored
    _serve(settings, lambda: UpstreamServer(settings, probe_path, prefix_caching=False),
           app, lambda url, reader: f"proxying {settings.upstream} at {url} (OpenAI API; GET /healthz, /metrics); "
                                    f"reader {settings.served_name!r} on vLLM at {reader.url}")


def _with_key(app: Any, settings: ServeSettings) -> Any:
    """``app`` behind the API key, when the settings have one."""
    return app if settings.api_key is None else ApiKey(app, settings.api_key.get_secret_value())


def _calibrated_probe(path: str | None, missing: str) -> tuple[str, Probe]:
    """``(path, probe)``: the probe at ``path``, refused (before the engine's slow start) when it cannot give
    verdicts."""
    if path is None:
        raise ConfigError(missing)
    probe = Probe.load(path)
    VerdictRule.from_probe(probe)
    if probe.is_stand_in:
        print(f"guard: WARNING probe {path!r} is a random stand-in, NOT calibrated: every verdict will be "
              "'uncertain' (nothing certified, nothing flagged) and /healthz says calibrated: false", file=sys.stderr)
    return path, probe


def _serve_in_process(settings: ServeSettings, engine: InProcessEngine, app: Callable[[InProcessEngine], Any],
                      announce: Callable[[str], str]) -> None:
    """Start the engine in this process, serve ``app(engine)`` until SIGINT or SIGTERM, stop the engine on every
    exit path.

    Raises:
        AdapterError: the engine did not start, or died while serving (the message says how and what to do).
    """
    if settings.engine_port is not None:
        bind_port("127.0.0.1", settings.engine_port).close()  # free now, so the unguarded app can take it later
    port = StartingPort(settings.host, settings.port, "guard serve")  # answers "starting" until the app takes it
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM unwinds like Ctrl-C, through the finally below
    try:
        asyncio.run(_serving(settings, engine, app, announce, port))
    finally:
        signal.signal(signal.SIGTERM, previous)
        port.close()
    if engine.death is not None:
        raise AdapterError(engine.death)


async def _serving(settings: ServeSettings, engine: InProcessEngine, app: Callable[[InProcessEngine], Any],
                   announce: Callable[[str], str], port: StartingPort) -> None:
    async with engine.running():
        served = app(engine)
        await self_test(served, settings, "guard serve", judge=False)
        drain = Drain(served)
        config = uvicorn.Config(drain, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=settings.shutdown_timeout)  # type: ignore[arg-type]
        server = _Server(config, announce, drain)
        watcher = asyncio.ensure_future(engine.watch(lambda: setattr(server, "should_exit", True)))
        unguarded = None
        if settings.engine_port is not None:  # vLLM's own app on loopback; its lifespan already runs
            unguarded = _Quiet(uvicorn.Config(engine.app, host="127.0.0.1", port=settings.engine_port,
                                              log_level="warning", access_log=False, lifespan="off"))
            unguarded_serving = asyncio.ensure_future(unguarded.serve())
        gc.freeze()  # what start-up loaded stays: the collector skips it while serving and at exit
        try:
            await server.serve(sockets=[port.handoff()])  # re-raises SIGINT/SIGTERM after a graceful stop
        finally:
            watcher.cancel()
            if unguarded is not None:
                unguarded.should_exit = True
                await unguarded_serving


class _Quiet(uvicorn.Server):
    """A second uvicorn server in the process: the first one handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _serve(settings: ServeSettings, engine: Callable[[], UpstreamServer], app: Callable[[UpstreamServer], FastAPI],
           announce: Callable[[str, UpstreamServer], str]) -> None:
    """Start the engine, serve ``app(engine)`` until SIGINT or SIGTERM, stop the engine on every exit path.

    Runs in the main thread (the engine's leash follows the thread that starts it). The port answers "starting"
    from the first moment (:mod:`adapters.http.starting`) and is handed to the app after the start-up self-test
    (:mod:`adapters.http.self_test`).

    Args:
        engine: makes the (not yet started) engine.
        app: the app over the started engine.
        announce: what to print once the server accepts connections at its URL.

    Raises:
        AdapterError: the engine did not start, or died while serving (the message says how and what to do).
    """
    port = StartingPort(settings.host, settings.port, "guard proxy")  # answers "starting" until the app takes it
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM unwinds like Ctrl-C, through the finally below
    upstream = engine()
    try:
        upstream.start()
        served = app(upstream)
        drain = Drain(served)
        deadline = settings.shutdown_timeout  # seconds; uvicorn hands it to asyncio.timeout, a float works
        config = uvicorn.Config(drain, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=deadline)  # type: ignore[arg-type]
        server = _Server(config, lambda url: announce(url, upstream), drain)
        upstream.watch(lambda: setattr(server, "should_exit", True))  # a graceful stop, as on SIGTERM
        # what start-up loaded (torch, transformers: millions of objects) stays: the garbage collector skips it
        # while serving, and at exit, where walking it took 3 of the 4 s a stop lasted
        gc.freeze()

        async def serving() -> None:  # the self-test in the server's own event loop (the app's clients live there)
            await self_test(served, settings, "guard proxy", judge=True)
            await server.serve(sockets=[port.handoff()])  # re-raises SIGINT/SIGTERM after a graceful stop

        asyncio.run(serving())
        if upstream.death is not None:
            raise AdapterError(upstream.death)
    finally:
        upstream.stop()
        signal.signal(signal.SIGTERM, previous)
        port.close()
