"""Server-sent events as both relays speak them: reading the upstream's, writing the client's.

The cross-process contract is OpenAI's streaming format: ``data: <JSON chunk>`` events, ended by
``data: [DONE]``; an upstream that fails mid-stream sends one event whose JSON has ``error``.
:func:`guarded_events` is the loop guard serve (:mod:`adapters.http.serve.streaming`) and guard proxy
(:mod:`adapters.http.proxy.streaming`) share: it relays a stream's events, turns a failure into one
OpenAI-shaped error event (or, when the upstream's own error event was already passed on, just
counts it), always ends with ``[DONE]``, and releases the request on every exit path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Protocol

import httpx
import numpy as np
import orjson

from adapters.http.errors import (
    APIError,
    UpstreamError,
    guard_failure,
    upstream_failure,
)
from adapters.http.protocol import Endpoint
from adapters.http.sse_decoder import SSEDecoder
from guard.errors import AdapterError
from guard.metrics import GuardMetrics


class FailureCounter(Protocol):
    """What :func:`guarded_events` needs of a relay (:class:`adapters.http.forwarding.Forwarder` is one)."""

    who: str
    metrics: GuardMetrics

    def record_error(self, endpoint: Endpoint, mode: str, exc: APIError) -> None:
        """Count a refused or failed request."""

__all__ = ["DONE", "EventSource", "FailureCounter", "PassedOnError", "chunk_head", "chunk_ids", "encode", "encode_data",
           "guarded_events", "parse_chunk"]

#: the event that ends every stream
DONE = b"data: [DONE]\n\n"


class PassedOnError(UpstreamError):
    """The upstream's own mid-stream error event, already relayed to the client: counted, not sent again.

    Args:
        who: names the upstream.
    """

    def __init__(self, who: str) -> None:
        super().__init__("other", f"{who} failed mid-stream")


class EventSource:
    """The data of an upstream's SSE response, event by event, up to ``[DONE]``.

    The stream is parsed as the SSE standard says (:class:`adapters.http.sse_decoder.SSEDecoder`: multi-line
    ``data:`` fields joined by newlines, comments, ``id:`` and ``retry:`` fields, CR/LF line ends). An event
    named ``error`` (``event: error``) is the upstream's mid-stream failure: its data comes out as a JSON object
    with ``error`` (wrapped when it was not one), which the relays already treat as the upstream's own error
    event. Events of other names than ``message`` (e.g. ``ping``) carry no chunk and are skipped.

    Example:
        >>> source = EventSource(response, "the upstream")  # doctest: +SKIP
        >>> async for data in source.payloads(): ...  # doctest: +SKIP
        >>> source.done  # doctest: +SKIP
        True
    """

    def __init__(self, response: httpx.Response, who: str = "the upstream") -> None:
        self.response = response
        self.who = who
        self.done = False  #: whether ``[DONE]`` arrived

    async def payloads(self) -> AsyncGenerator[str, None]:
        """Each event's ``data``, stripped, until ``[DONE]`` or the end of the response.

        Raises:
            UpstreamError: ``protocol``: the answer is not an event stream (its content type says so).
        """
        response = self.response
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "text/event-stream":
            raise UpstreamError("protocol", f"{self.who} answered a streamed request with something other than an "
                                            f"event stream (content type {content_type or 'missing'!r})")
        decoder = SSEDecoder()
        # bytes as they came when nothing encodes them (vLLM, most APIs); decompressed, or already read, otherwise
        encoded = response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
        chunks = response.aiter_bytes() if encoded or response.is_stream_consumed else response.aiter_raw()
        try:
            async for chunk in chunks:
                for event, data in decoder.feed(chunk):
                    if event == "message":
                        data = data.strip()
                        if data == "[DONE]":
                            self.done = True
                            return
                        if data:
                            yield data
                    elif event == "error":
                        yield _error_data(data.strip())
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


def _error_data(data: str) -> str:
    """An ``event: error`` event's data as a JSON object with ``error``."""
    try:
        parsed: Any = json.loads(data)
    except ValueError:
        parsed = data
    if isinstance(parsed, dict) and "error" in parsed:
        return data
    error = parsed if isinstance(parsed, dict) else {"message": str(parsed) or "stream error", "type": "upstream_error"}
    return json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))


def parse_chunk(data: str, who: str) -> dict[str, Any]:
    """One event's JSON object (read by ``orjson``; what only Python's reader takes, e.g. ``NaN``, by that).

    Raises:
        UpstreamError: ``protocol``: the event is not JSON, or not a JSON object.
    """
    try:
        chunk = orjson.loads(data)
    except ValueError:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise UpstreamError("protocol", f"{who} sent a stream event that is not JSON ({exc})") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("protocol", f"{who} sent a stream event that is not a JSON object: {data[:80]!r}")
    return chunk


def chunk_ids(chunk: dict[str, Any]) -> dict[str, Any]:
    """The ``id``, ``object``, ``created`` and ``model`` a chunk carries (any of them)."""
    return {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}


def chunk_head(ids: dict[str, Any], endpoint: Endpoint, model: Any) -> dict[str, Any]:
    """The head of a chunk the guard adds: the upstream's ``ids``, with defaults where it sent none."""
    default_object = "chat.completion.chunk" if endpoint == "chat_completions" else "text_completion"
    return {"id": ids.get("id", ""), "object": ids.get("object", default_object), "created": ids.get("created", 0),
            "model": ids.get("model", model)}


def encode(payload: dict[str, Any]) -> bytes:
    """One event carrying ``payload`` as compact UTF-8 JSON (written by ``orjson``, the per-chunk path; a value
    only Python's writer takes, e.g. an integer beyond 64 bits, by that)."""
    try:
        data = orjson.dumps(payload, default=_plain)
    except TypeError:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (what ``orjson`` does not write itself)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_data(data: str) -> bytes:
    """One event carrying ``data`` as it is (relayed byte for byte); data of several lines (an upstream's
    multi-line ``data:`` fields, joined) goes out as one ``data:`` line per line, as the SSE standard writes it."""
    if "\n" in data:
        return b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"
    return b"data: " + data.encode() + b"\n\n"


async def guarded_events(events: AsyncGenerator[bytes, None], response: httpx.Response, relay: FailureCounter,
                         endpoint: Endpoint, mode: str,
                         close: Callable[[], None] | None = None) -> AsyncGenerator[bytes, None]:
    """Relay ``events`` then ``[DONE]``; a failure on the way ends the stream with one error event.

    Args:
        events: the stream's events; raises on failure (:class:`PassedOnError` after relaying the
            upstream's own error event). It closes ``response`` itself before it sends anything that
            follows the upstream's stream.
        response: the upstream's streamed answer, closed on every exit path.
        relay: counts a failure and the request in flight.
        endpoint / mode: the request's, for the failure's count.
        close: releases whatever else the request holds (called once, last but one).
    """
    try:
        failure: APIError | None = None
        try:
            async with aclosing(events) as relayed:
                async for event in relayed:
                    yield event
        except httpx.HTTPError as exc:
            failure = upstream_failure(exc, relay.who)
        except AdapterError as exc:
            failure = guard_failure(exc, steered=mode == "steer")
        except APIError as exc:
            failure = exc
        if failure is None:
            yield DONE
            return
        await response.aclose()  # at once: closing the upstream's stream stops its generation
        relay.record_error(endpoint, mode, failure)
        if not isinstance(failure, PassedOnError):
            yield encode(failure.body())
        yield DONE
    finally:  # bookkeeping first: a client's exit may cancel the await below again
        if close is not None:
            close()
        relay.metrics.in_flight.dec()
        await response.aclose()
