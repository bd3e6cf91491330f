"""What guard proxy's stream code needs of its relay: a Protocol, so it never imports the relay.

:class:`adapters.http.proxy.serving.ProxyRelay` satisfies :class:`ProxyRelayPort`; the relay
imports the stream module, which depends on this contract only (no import cycle).
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from adapters.http.proxy.protocol import ProxyRequest
from adapters.http.proxy.reader import Reading
from adapters.http.sse import FailureCounter

__all__ = ["ProxyRelayPort"]


class ProxyRelayPort(FailureCounter, Protocol):
    """guard proxy's relay as its streams see it (it counts failures too)."""

    async def send(self, request: ProxyRequest) -> httpx.Response:
        """Send the request to the foreign API with a streamed answer."""

    async def read_all(self, request: ProxyRequest, answers: dict[int, str]) -> dict[int, Reading]:
        """Read every choice's answer with the reader."""

    def guard_field(self, reading: Reading) -> dict[str, Any]:
        """A read choice's ``guard`` field."""

    def finish_request(self, request: ProxyRequest, readings: list[Reading], passed: list[Any], busy: float) -> None:
        """Record a completed request."""
