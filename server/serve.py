"""``guard serve``: start the guarded upstream, serve the app with uvicorn, stop everything on exit.

Lifecycle: load and check the probe (before the engine's slow start) -> start vLLM's OpenAI server
with the capture on and the score collector bound -> load the tokenizer -> serve until SIGINT or
SIGTERM -> stop the upstream (always, also when start-up fails or is interrupted). The URL is
printed to stderr once the server accepts connections.
"""

from __future__ import annotations

import signal
import socket
import sys
from types import FrameType

import uvicorn

from guard.errors import ConfigError
from guard.gating import GateRule
from guard.heads import check_gate
from guard.probe import Probe
from guard.verdicts import VerdictRule
from server.app import create_app
from server.settings import ServeSettings
from server.tokens import HFTokenTexts
from server.upstream import UpstreamServer

__all__ = ["run"]


class _Server(uvicorn.Server):
    """uvicorn's server, announcing its URL once it accepts connections."""

    def __init__(self, config: uvicorn.Config, upstream: UpstreamServer, served: str) -> None:
        super().__init__(config)
        self.upstream, self.served = upstream, served

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            c = self.config
            print(f"guard: serving {self.served!r} at http://{c.host}:{c.port}/v1 (OpenAI API; GET /healthz, "
                  f"/metrics); upstream vLLM at {self.upstream.url}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _check_port(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host") from exc


def run(settings: ServeSettings) -> None:
    """Serve until interrupted; the upstream is stopped on every exit path.

    Args:
        settings: with ``probe`` set (the CLI fills in the model's shipped probe).

    Raises:
        ConfigError: no probe was given.
        ArtifactError: the probe cannot be loaded or has no conformal calibration with a "true" label.
        AdapterError: the upstream did not start.
    """
    if settings.probe is None:
        raise ConfigError("guard serve needs a probe: pass --probe PATH (or GUARD_PROBE), or serve a model that "
                          "ships one")
    probe = Probe.load(settings.probe)
    VerdictRule.from_probe(probe)  # refuse an uncalibrated probe before the engine's slow start
    gate = None
    if settings.use_gate and settings.gate is not None:
        gate_probe = Probe.load(settings.gate)
        check_gate(probe, gate_probe)
        gate = GateRule(gate_probe, offset=len(probe.labels))
    _check_port(settings.host, settings.port)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM unwinds like Ctrl-C, through the finally below
    upstream = UpstreamServer(settings, settings.probe)
    try:
        upstream.start()
        texts = HFTokenTexts(upstream.model_path)
        app = create_app(settings, upstream.url, upstream.feed, probe, texts, collector=upstream.collector, gate=gate)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
        _Server(config, upstream, settings.served_name).run()  # re-raises SIGINT/SIGTERM after a graceful stop
    finally:
        upstream.stop()
        signal.signal(signal.SIGTERM, previous)
