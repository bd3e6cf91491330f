"""Request ids, trace context and the access log: one content-free line per request.

Every request gets an id: the client's ``x-request-id`` when it is a plausible id (1-128 characters of letters,
digits and ``._:-``), else a fresh one. It is returned in the response's ``x-request-id`` header, forwarded with
the client's W3C trace context (``traceparent``, ``tracestate``) to the upstream (vLLM uses it as its request
id, so its logs line up with the guard's; guard proxy passes it to the foreign API), and written in the access
line: method, route, status, latency and request id on the ``guard.access`` logger. Never a body, a query
string, a header value other than the id, or a model name. Health and metrics requests are logged at DEBUG
(probes would flood the log).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from adapters.http.api_key import OPEN_PATHS

__all__ = ["RequestLog", "trace_headers", "ACCESS_LOGGER"]

#: the logger of the access lines
ACCESS_LOGGER = "guard.access"
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_TRACE = (b"traceparent", b"tracestate")
_QUIET = OPEN_PATHS  # health, probes and metrics: logged at debug
#: routes logged by name; any other path is logged as "other" (a path a client made up may hold anything)
_KNOWN = _QUIET | {"/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize", "/detokenize", "/version",
                   "/v1/guard/check"}
_current: ContextVar[dict[str, str] | None] = ContextVar("guard_trace", default=None)
_log = logging.getLogger(ACCESS_LOGGER)


def trace_headers() -> dict[str, str]:
    """The headers to forward upstream for the request being served: its id and trace context (empty outside a
    request)."""
    return _current.get() or {}


class RequestLog:
    """ASGI middleware: gives each request an id (returned and forwarded) and logs its access line.

    Args:
        app: the ASGI app.
        access_log: write the access line (the id is handled either way).
    """

    def __init__(self, app: Any, access_log: bool = True) -> None:
        self.app, self.access_log = app, access_log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given, trace = b"", {}
        headers = []
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = value
                continue
            if name in _TRACE and len(value) <= 512:
                trace[name.decode()] = value.decode("latin-1")
            headers.append((name, value))
        request_id = given if _VALID.fullmatch(given) else uuid.uuid4().hex.encode()
        headers.append((b"x-request-id", request_id))  # what forwarding and vLLM see
        scope = {**scope, "headers": headers}
        token = _current.set({"x-request-id": request_id.decode(), **trace})
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            if self.access_log:
                path = scope.get("path", "")
                path = path if path in _KNOWN else "other"
                level = logging.DEBUG if path in _QUIET else logging.INFO
                if _log.isEnabledFor(level):
                    _log.log(level, "%s %s %d %.1fms request_id=%s", scope.get("method", ""), path, status,
                             (time.perf_counter() - started) * 1000, request_id.decode())
