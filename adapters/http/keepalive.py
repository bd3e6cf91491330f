"""SSE keep-alive: a comment line while a held stream has nothing to send.

A stream the guard holds until the answer is read (guard proxy in mode ``abstain``) can stay silent for as
long as the upstream takes to generate; load balancers and proxies cut connections idle for 30-60 s. While no
event has come for ``every`` seconds, :func:`with_keepalive` sends ``: keep-alive`` (an SSE comment: clients
and the OpenAI SDKs ignore it). The stream's own generator runs in one task of its own (a producer), so its
clean-up and cancellation stay in that task; closing the result cancels it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

__all__ = ["KEEPALIVE", "with_keepalive"]

#: the comment event sent while a stream is silent
KEEPALIVE = b": keep-alive\n\n"
_END = object()  # after the last event


async def with_keepalive(events: AsyncGenerator[bytes, None], every: float) -> AsyncGenerator[bytes, None]:
    """``events`` as they come, and :data:`KEEPALIVE` after every ``every`` seconds without one.

    Errors of ``events`` are raised here, after the events before them.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)  # the producer waits for the consumer: no buffering
    failed: list[Exception] = []

    async def produce() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:  # raised to the consumer after the events before it
            failed.append(exc)
        finally:
            await events.aclose()
        await queue.put(_END)

    producer = asyncio.ensure_future(produce())
    getting: asyncio.Future[Any] | None = None
    try:
        while True:
            if getting is None:
                getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getting}, timeout=every)
            if not done:
                yield KEEPALIVE
                continue
            event, getting = getting.result(), None
            if event is _END:
                break
            yield event
        if failed:
            raise failed[0]
    finally:
        for task in (getting, producer):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
