"""SSE keep-alive: a held stream that is silent for longer than the interval gets comment events, its events and
its error come through unchanged and in order, and closing it early cancels the stream's own generator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from adapters.http.keepalive import KEEPALIVE, with_keepalive


async def _slow(delays: list[float], fail: bool = False, closed: list[bool] | None = None
                ) -> AsyncGenerator[bytes, None]:
    try:
        for i, delay in enumerate(delays):
            await asyncio.sleep(delay)
            yield f"data: {i}\n\n".encode()
        if fail:
            raise RuntimeError("the upstream failed")
    finally:
        if closed is not None:
            closed.append(True)


async def _collect(events: AsyncGenerator[bytes, None]) -> list[bytes]:
    return [event async for event in events]


def test_a_silence_longer_than_the_interval_sends_keepalive_comments_between_the_events_in_order():
    got = asyncio.run(_collect(with_keepalive(_slow([0.0, 0.35, 0.0]), every=0.1)))
    events = [e for e in got if e != KEEPALIVE]
    assert events == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    first, second = got.index(b"data: 0\n\n"), got.index(b"data: 1\n\n")
    assert 2 <= second - first - 1 <= 4  # ~0.35 s of silence at 0.1 s: about three comments, all between the two
    assert got[-1] == b"data: 2\n\n"


def test_a_stream_that_never_pauses_gets_no_comment():
    assert asyncio.run(_collect(with_keepalive(_slow([0.0] * 20), every=0.5))) == \
        [f"data: {i}\n\n".encode() for i in range(20)]


def test_the_streams_error_comes_after_its_events():
    async def main() -> list[bytes]:
        got: list[bytes] = []
        with pytest.raises(RuntimeError, match="upstream failed"):
            async for event in with_keepalive(_slow([0.0, 0.0], fail=True), every=0.5):
                got.append(event)
        return got

    assert asyncio.run(main()) == [b"data: 0\n\n", b"data: 1\n\n"]


def test_closing_the_stream_early_cancels_and_closes_the_generator_behind_it():
    async def main() -> list[bool]:
        closed: list[bool] = []
        events = with_keepalive(_slow([0.0, 10.0], closed=closed), every=0.05)
        assert await events.__anext__() == b"data: 0\n\n"
        assert await events.__anext__() == KEEPALIVE  # the stream is now waiting for its slow second event
        await events.aclose()  # the client left
        return closed

    assert asyncio.run(main()) == [True]
