"""Reading one streamed (server-sent events) completion from a benchmark's async httpx client.

The benchmarks time streams and, for the load test, check what they carried; both need every
``data:`` event with its arrival time, parsed only once the stream has ended so the parsing does
not skew the timings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["EventStream", "is_summary", "read_events"]


@dataclass
class EventStream:
    """One streamed answer as the client saw it.

    Attributes:
        start / end: ``time.perf_counter()`` when the request was sent / the stream closed.
        stamps: arrival time of each chunk (not of ``[DONE]``).
        chunks: the parsed JSON chunks, in order.
        done: whether the stream ended with ``data: [DONE]``.
    """

    start: float
    end: float = 0.0
    stamps: list[float] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    @property
    def error(self) -> str | None:
        """The first error event's message, if the server sent one."""
        errors = [c["error"] for c in self.chunks if "error" in c]
        return str(errors[0].get("message", errors[0])) if errors else None


async def read_events(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> EventStream:
    """POST ``body`` to ``url`` and read its event stream to the end.

    Raises:
        RuntimeError: the server answered with a status other than 200 (the message holds its body).

    Example:
        >>> stream = await read_events(client, f"{base}/v1/completions", {..., "stream": True})  # doctest: +SKIP
        >>> stream.done, len(stream.chunks)  # doctest: +SKIP
        (True, 13)
    """
    raw: list[str] = []
    stream = EventStream(start=time.perf_counter())
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"POST {url} answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                stream.stamps.append(time.perf_counter())
                raw.append(line[5:].strip())
    stream.end = time.perf_counter()
    stream.done = bool(raw) and raw[-1] == "[DONE]"
    if stream.done:
        raw.pop()
        stream.stamps.pop()
    stream.chunks = [json.loads(event) for event in raw]
    return stream


def is_summary(chunk: dict[str, Any]) -> bool:
    """Whether ``chunk`` is guard serve's last chunk, the one with the answer's full summary.

    Example:
        >>> is_summary({"choices": [{"index": 0, "delta": {}, "guard": {"decision": "pass"}}]})
        True
    """
    choices = chunk.get("choices") or [{}]
    return "decision" in (choices[0].get("guard") or {})
