"""Errors the server answers with, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

::

    GuardError (guard.errors)
    └── APIError            an HTTP error answer: status + OpenAI error object (4xx; 500 ``guard_error``)
        └── UpstreamError   the upstream (vLLM server, or guard proxy's foreign API) failed (502/504);
            │               ``kind`` is its metric label
            └── ReaderError guard proxy's local reader engine failed (502, kind ``reader``)

Upstream 4xx bodies pass through with the upstream status, normalised to the same shape (vLLM
sends an integer ``code``; OpenAI's is a string or null).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from guard.errors import AdapterError, GuardError, NonFiniteScores

__all__ = ["APIError", "UpstreamError", "ReaderError", "invalid_request", "from_upstream", "error_body",
           "upstream_failure", "guard_failure", "NONFINITE_CODES", "send_json"]


class APIError(GuardError):
    """An error answer.

    Args:
        status: HTTP status.
        message: names the offending value, what was expected and the fix.
        type: OpenAI error type (``invalid_request_error``, ``server_error``, ...).
        param: the request field at fault (``"guard.alpha"``), if any.
        code: a machine-readable code (``"model_not_found"``), if any.

    Example:
        >>> APIError(404, "The model `x` does not exist", param="model", code="model_not_found").body()["error"]["code"]
        'model_not_found'
    """

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return error_body(self.message, self.type, self.param, self.code)


class UpstreamError(APIError):
    """The upstream vLLM server was unreachable, failed or timed out.

    Args:
        kind: metric label from :data:`guard.metrics.UPSTREAM_ERRORS` (``timeout``, ``connection``, ...).
    """

    def __init__(self, kind: str, message: str, status: int = 502) -> None:
        super().__init__(status, message, type="server_error", code=f"upstream_{kind}")
        self.kind = kind


class ReaderError(UpstreamError):
    """guard proxy's reader (its own vLLM server, which reads the foreign answer) failed: always 502.

    Example:
        >>> ReaderError("the reader is unreachable").body()["error"]["code"]
        'reader_failed'
    """

    def __init__(self, message: str) -> None:
        super().__init__("reader", message, status=502)
        self.code = "reader_failed"


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` in OpenAI's shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def send_json(send: Any, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A complete JSON answer over a raw ASGI ``send`` (middleware that answers before, or instead of, the app)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def invalid_request(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> APIError:
    """A 4xx ``invalid_request_error``."""
    return APIError(status, message, "invalid_request_error", param, code)


def from_upstream(status: int, content: bytes, who: str = "the upstream vLLM server") -> APIError:
    """The upstream's error answer, normalised to OpenAI's shape with the upstream status.

    A 5xx becomes :class:`UpstreamError` (502, kind ``http_status``): the engine failed, not the request.
    ``who`` names the upstream in that message.
    """
    message, type_, param, code = f"upstream answered HTTP {status}", "invalid_request_error", None, None
    try:
        raw = json.loads(content)
    except ValueError:
        raw = None
    err = raw.get("error") if isinstance(raw, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or message)
        type_ = str(err.get("type") or type_)
        param = err.get("param") if isinstance(err.get("param"), str) else None
        code = err.get("code") if isinstance(err.get("code"), str) else None
    elif isinstance(raw, dict) and isinstance(raw.get("detail"), str):  # FastAPI's own errors
        message = raw["detail"]
    if status >= 500:
        return UpstreamError("http_status", f"{who} failed (HTTP {status}): {message}")
    return APIError(status, message, type_, param, code)


def upstream_failure(exc: httpx.HTTPError, who: str = "the upstream vLLM server") -> UpstreamError:
    """Translate an httpx failure talking to the upstream (``who`` names it in the message)."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError("timeout", f"{who} did not answer in time ({type(exc).__name__}); "
                             "retry, or raise upstream_timeout (GUARD_UPSTREAM_TIMEOUT) for long generations",
                             status=504)
    if isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.CloseError)) or _dropped(exc):
        return UpstreamError("connection", f"{who} is unreachable ({type(exc).__name__}: {exc}); "
                             "check GET /healthz and the server's log")
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamError("protocol", f"{who} broke the HTTP protocol ({exc}); check its log")
    return UpstreamError("other", f"talking to {who} failed ({type(exc).__name__}: {exc})")


def _dropped(exc: httpx.HTTPError) -> bool:
    """httpx's word for a peer that closed the connection mid-answer (a drop, not malformed HTTP)."""
    text = str(exc).lower()
    return isinstance(exc, httpx.RemoteProtocolError) and ("peer closed" in text or "disconnected" in text)


def guard_failure(exc: AdapterError, steered: bool = False) -> APIError:
    """The guard could not process the engine's scores (e.g. the engine runs another probe).

    Non-finite scores (:class:`NonFiniteScores`) are told apart: a request that ``steered`` drove its
    own hidden states out of range (400 ``steering_diverged``); one that did not means the engine is
    broken (500 ``engine_nonfinite``; the server then reports itself unhealthy).
    """
    if isinstance(exc, NonFiniteScores):
        if steered:
            return invalid_request(f"steering drove this request's hidden states out of the finite range ({exc}); "
                                   "send a smaller guard.steer_alpha", param="guard.steer_alpha",
                                   code="steering_diverged")
        return APIError(500, f"the engine produced non-finite hidden states for a request that did not steer ({exc}); "
                             "the engine is unhealthy: restart the server", type="server_error",
                        code="engine_nonfinite")
    return APIError(500, f"the guard could not process this request's scores: {exc}", type="server_error",
                    code="guard_error")


#: the error codes of non-finite scores -> their ``guard_nonfinite_scores_total`` source (did the request steer?)
NONFINITE_CODES = {"steering_diverged": "steered", "engine_nonfinite": "unsteered"}
