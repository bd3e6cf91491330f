"""An API key for ``guard serve`` and ``guard proxy``: ``Authorization: Bearer <key>`` on every route that
answers with model output or model data; the health and metrics routes stay open (orchestrators' probes and
Prometheus scrape them without credentials; put them behind the network policy instead).

The key comes from ``api_key`` (``GUARD_API_KEY``, ``--api-key``); it is compared in constant time, never
logged, never put in an error message or a metric. A refused request gets 401 in OpenAI's shape, which the
OpenAI SDKs raise as ``AuthenticationError``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from adapters.http.errors import error_body, send_json

__all__ = ["ApiKey", "OPEN_PATHS"]

#: routes answered without a key: liveness, readiness and metrics (no model output, no request content)
OPEN_PATHS = frozenset({"/health", "/healthz", "/livez", "/readyz", "/ping", "/metrics"})

_REFUSED = json.dumps(error_body(
    "missing or incorrect API key: send the server's key as 'Authorization: Bearer <key>' (the OpenAI SDKs' "
    "api_key); the server's operator sets it with GUARD_API_KEY", "invalid_request_error", None,
    code="invalid_api_key")).encode()


class ApiKey:
    """ASGI middleware: 401 for a request outside :data:`OPEN_PATHS` without ``Authorization: Bearer <key>``.

    Args:
        app: the ASGI app it guards.
        key: the key clients must send (non-empty).

    Example:
        >>> app = ApiKey(app, settings.api_key.get_secret_value())  # doctest: +SKIP
    """

    def __init__(self, app: Any, key: str) -> None:
        if not key:
            raise ValueError("an API key must not be empty")
        self.app, self.expected = app, b"Bearer " + key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send_json(send, 401, _REFUSED, ((b"www-authenticate", b"Bearer"),))

    def _allowed(self, scope: Any) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        return hmac.compare_digest(given, self.expected)
