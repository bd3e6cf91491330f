"""What guard serve's stream and steering code need of its relay: a Protocol, so they never import the relay.

:class:`adapters.http.serve.serving.Relay` satisfies :class:`RelayPort`; the relay imports the
stream and steering modules, and they depend on this contract only (no import cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from adapters.http.serve.protocol import GuardedRequest
from adapters.http.serve.session import GuardSession
from adapters.http.sse import FailureCounter
from adapters.http.tokens import TokenTexts

__all__ = ["RelayPort"]


class RelayPort(FailureCounter, Protocol):
    """guard serve's relay as its streams and steered requests see it (it counts failures too)."""

    client: httpx.AsyncClient  #: the upstream vLLM server's client
    texts: TokenTexts  #: splits token ids into texts

    async def send(self, request: GuardedRequest) -> httpx.Response:
        """Send the request upstream with a streamed answer."""

    async def post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any],
                   headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST ``body`` with a streamed answer."""

    async def read(self, response: httpx.Response) -> bytes:
        """A whole streamed answer's body."""

    def finish_request(self, request: GuardedRequest, session: GuardSession) -> None:
        """Record a request that completed."""
