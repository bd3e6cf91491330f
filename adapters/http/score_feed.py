"""The server's score store: scores by guard key, awaitable from asyncio without blocking the loop.

The score collector's thread publishes each engine step's segments here; request handlers on the
event loop read them with :meth:`ScoreStore.take` as their text streams and, once a response has
ended, ``await`` :meth:`ScoreFeed.wait_for` its last positions. A publish wakes the waiting
handlers through the loop (``call_soon_threadsafe``), so no thread blocks per request. Scores
that arrive for a request already closed (e.g. one step after it was aborted) are dropped, so
keys cannot pile up.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict

from guard.scores import ScoreSegment, ScoreStore

__all__ = ["ScoreFeed"]


class ScoreFeed(ScoreStore):
    """A :class:`ScoreStore` with asyncio waiting and closing of finished keys.

    Args:
        max_keys: bound on keys held (oldest dropped beyond it) and on closed keys remembered.

    Example:
        >>> import numpy as np
        >>> feed = ScoreFeed()
        >>> feed.publish([ScoreSegment("k", 0, np.zeros((3, 1, 1), np.float32))])
        >>> asyncio.run(feed.wait_for("k", 3, timeout=1.0))
        True
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        super().__init__(max_keys)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, asyncio.Event] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._closed_lock = threading.Lock()
        self.late_segments = 0  #: segments dropped because their request had already finished

    def publish(self, segments: list[ScoreSegment]) -> None:
        """Store the segments of open requests and wake their waiters (any thread)."""
        with self._closed_lock:
            live = [s for s in segments if s.key not in self._closed]
            self.late_segments += len(segments) - len(live)
        if not live:
            return
        super().publish(live)
        loop = self._loop
        # stored before the check: a waiter that registers after it finds these scores itself
        if self._waiters and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake, {s.key for s in live})
            except RuntimeError:  # the loop closed after the check: nobody is waiting on it any more
                self._loop = None

    def _wake(self, keys: set[str]) -> None:
        for key in keys:
            if (event := self._waiters.get(key)) is not None:
                event.set()

    async def wait_for(self, key: str, until: int, timeout: float) -> bool:
        """Wait until position ``until - 1`` of ``key`` has arrived, at most ``timeout`` seconds.

        Returns:
            Whether it arrived (``True`` at once when ``until <= 0``).
        """
        if until <= 0 or self._arrived(key, until):
            return True
        loop = asyncio.get_running_loop()
        self._loop = loop
        deadline = loop.time() + timeout
        event = self._waiters.setdefault(key, asyncio.Event())
        try:
            while True:
                event.clear()
                if self._arrived(key, until):  # checked after clear(): a wake in between is not lost
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return self._arrived(key, until)
        finally:
            self._waiters.pop(key, None)

    def _arrived(self, key: str, until: int) -> bool:
        return bool(self.take_segments(key, until - 1))

    def close(self, key: str) -> None:
        """Forget ``key`` and drop any of its scores that arrive later."""
        with self._closed_lock:
            self._closed[key] = None
            while len(self._closed) > self._max_keys:
                self._closed.popitem(last=False)
        self.discard(key)

    @property
    def open_keys(self) -> int:
        """Keys holding scores now (requests in flight, plus any never closed)."""
        with self._cond:
            return len(self._segments)
