"""Ending the requests still running when the shutdown deadline passes, in OpenAI's shape and without tracebacks.

On SIGTERM uvicorn stops accepting connections, waits ``timeout_graceful_shutdown`` seconds
(guard's ``shutdown_timeout``) for the running requests, then cancels the rest and logs each
cancellation as "Exception in ASGI application" with a traceback. :class:`Drain` wraps the app
so that, once :meth:`Drain.stop` was called, a request cancelled that way ends with an answer the
client can act on: 503 ``server_shutting_down`` before its response started, an error event and
``data: [DONE]`` in a started stream, the end of the body otherwise. The request's own clean-up
(its upstream request closed, so vLLM stops generating it) has run by then: the cancellation
passed through it first. From the start of the shutdown ``GET /readyz`` answers 503 (readiness probes and load
balancers stop sending work), while ``/livez`` keeps answering 200.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from adapters.http.errors import error_body, send_json

__all__ = ["Drain"]

_STOPPED = error_body("the server is shutting down and stopped this request before it finished; retry it",
                      "server_error", code="server_shutting_down")


class Drain:
    """ASGI middleware: requests cancelled after :meth:`stop` end with an answer instead of a traceback.

    Args:
        app: the ASGI app.

    Example:
        >>> drain = Drain(app)  # doctest: +SKIP
        >>> uvicorn.Config(drain, timeout_graceful_shutdown=5)  # call drain.stop() when the shutdown begins
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stopping = False
        self.aborted = 0  #: requests ended by the shutdown deadline

    def stop(self) -> None:
        """The shutdown has begun: a cancelled request from now on was cut by its deadline."""
        self.stopping = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.stopping and scope.get("path") == "/readyz":  # no new work: load balancers take it out
            await _Sent(send).end()
            return
        sent = _Sent(send)
        try:
            await self.app(scope, receive, sent)
        except asyncio.CancelledError:
            if not self.stopping or sent.complete:
                raise
            self.aborted += 1
            try:
                await sent.end()
            except OSError:  # the client is gone too
                pass


class _Sent:
    """An ASGI ``send`` that remembers how far the response got, and can end it."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.started = self.stream = self.complete = False

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.stream = any(name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                              for name, value in message.get("headers", ()))
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self.send(message)

    async def end(self) -> None:
        """End the response: 503 if it had not started, else an error event and ``[DONE]`` (streams) and the end."""
        if not self.started:
            await send_json(self.send, 503, json.dumps(_STOPPED).encode())
            return
        tail = b"data: " + json.dumps(_STOPPED).encode() + b"\n\ndata: [DONE]\n\n" if self.stream else b""
        await self.send({"type": "http.response.body", "body": tail})
