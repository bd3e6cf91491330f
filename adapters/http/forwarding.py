"""Forwarding to an OpenAI-compatible upstream: what guard serve's and guard proxy's relays share.

No web framework here. A relay answers a POST with a :class:`JSONReply` or a :class:`StreamReply`;
:class:`Forwarder` is the part of a relay that talks to its upstream over httpx (send the request
with a streamed answer, read a whole answer) and turns every failure into a counted, OpenAI-shaped
error reply. The upstream is named in every message by ``who``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.http.errors import (
    NONFINITE_CODES,
    APIError,
    UpstreamError,
    from_upstream,
    guard_failure,
    upstream_failure,
)
from adapters.http.protocol import Endpoint
from guard.errors import AdapterError
from guard.metrics import GuardMetrics

__all__ = ["Forwarder", "JSONReply", "StreamReply"]

_log = logging.getLogger("guard.server")


@dataclass(frozen=True)
class JSONReply:
    """A JSON answer."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class StreamReply:
    """A server-sent-events answer (status 200); ``events`` yields encoded ``data:`` lines."""

    events: AsyncGenerator[bytes, None]


class Forwarder:
    """A relay's upstream side; subclasses set ``who`` (the upstream, for messages) and ``metrics``.

    Example:
        >>> class Echo(Forwarder):
        ...     who, metrics = "the echo server", GuardMetrics()
        >>> Echo().error_reply("completions", "flag", APIError(400, "bad")).status
        400
    """

    who: str
    metrics: GuardMetrics
    #: set once the engine produced non-finite scores for a request that did not steer: ``/healthz`` fails
    engine_broken: str | None = None

    def record_error(self, endpoint: Endpoint, mode: str, exc: APIError) -> None:
        """Count a refused or failed request (and the upstream's failure, if it was one)."""
        self.metrics.record_request(endpoint, mode, "error")
        if isinstance(exc, UpstreamError):
            self.metrics.record_upstream_error(exc.kind)
        if (source := NONFINITE_CODES.get(exc.code or "")) is not None:
            self.metrics.record_nonfinite(source)
            if source == "unsteered" and self.engine_broken is None:
                self.engine_broken = exc.message
                _log.error("the engine produced non-finite hidden states for a request that did not steer; GET "
                           "/healthz now answers 503: restart the server")

    def error_reply(self, endpoint: Endpoint, mode: str, exc: APIError | AdapterError) -> JSONReply:
        """Count a failed request and answer it in OpenAI's shape.

        Args:
            exc: the refusal or failure; an :class:`AdapterError` (the engine's scores do not fit this
                server's probe) answers 500 ``guard_error``.
        """
        failure = guard_failure(exc, steered=mode == "steer") if isinstance(exc, AdapterError) else exc
        self.record_error(endpoint, mode, failure)
        return JSONReply(failure.status, failure.body())

    async def post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any],
                   headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST ``body`` as JSON with the answer streamed; the caller closes the response.

        Raises:
            UpstreamError: unreachable (502), timed out (504), failed with a 5xx (502).
            APIError: the upstream's own 4xx, with its status, in OpenAI's shape.
        """
        built = client.build_request("POST", path, json=body, headers=headers)
        try:
            response = await client.send(built, stream=True)
        except httpx.HTTPError as exc:
            raise upstream_failure(exc, self.who) from exc
        if response.status_code != 200:
            raise from_upstream(response.status_code, await self.read(response), self.who)
        return response

    async def read(self, response: httpx.Response) -> bytes:
        """The whole (streamed) answer's body; the response is closed after.

        Raises:
            UpstreamError: the connection failed while reading.
        """
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise upstream_failure(exc, self.who) from exc
        finally:
            await response.aclose()
