"""Per-token scores leaving the engine: records, the wire format, and the channel interfaces.

Cross-process contract (engine worker -> consumer):

* The worker emits one *batch* per engine step: a list of :class:`ScoreSegment`, each holding the
  scores of consecutive token positions ``start .. start + n - 1`` of one request, keyed by the
  request's **guard key** (chosen by the client and carried in ``SamplingParams.extra_args``; never
  vLLM's internal request id). Scores are float32 ``(n, L, k)``; optional raw hidden rows are
  float32 ``(n, L, H)`` (calibration capture).
* :func:`encode_batch` / :func:`decode_batch` turn a batch into frames: a JSON header, the packed
  scores, and the packed hidden rows. Transports (in-process, zmq) carry frames unchanged.
* A consumer reads through :class:`ScoreSource`; :class:`ScoreStore` is the in-process
  implementation that is both sink and source.

Token position ``p`` is the index in the request's full sequence (prompt then generated tokens).
The last sampled token is never fed back into the model, so it has no score; prompt tokens served
from the prefix cache are not recomputed and have no score either (see docs/architecture.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from guard.errors import ChannelError

__all__ = [
    "WIRE_VERSION",
    "ScoreSegment",
    "TokenScores",
    "combine",
    "ScoreSink",
    "ScoreSource",
    "ScoreStore",
    "encode_batch",
    "decode_batch",
]

WIRE_VERSION = 2


@dataclass(frozen=True)
class ScoreSegment:
    """Scores of consecutive token positions of one request, from one engine step."""

    key: str
    start: int
    scores: np.ndarray  # (n, L, k) float32
    hidden: np.ndarray | None = None  # (n, L, H) float32

    @property
    def n(self) -> int:
        """Number of token positions in the segment."""
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class TokenScores:
    """All scores received for one request, ordered by token position."""

    key: str
    positions: np.ndarray  # (n,) int64, strictly increasing
    scores: np.ndarray  # (n, L, k)
    hidden: np.ndarray | None  # (n, L, H) or None
    segments: int = 0  # how many engine steps delivered them

    def missing(self, upto: int) -> list[int]:
        """Positions in ``0 .. upto - 1`` that have no score (e.g. prefix-cached prompt tokens)."""
        return sorted(set(range(upto)) - set(self.positions.tolist()))


def encode_batch(segments: list[ScoreSegment]) -> list[bytes]:
    """Pack a step's segments into frames ``[header, scores, hidden]``.

    Raises:
        ChannelError: segments disagree on shapes.
    """
    if not segments:
        raise ChannelError("refusing to encode an empty score batch")
    cols = segments[0].scores.shape[1:]
    hid = next((s.hidden.shape[1:] for s in segments if s.hidden is not None), None)
    for s in segments:
        if s.scores.shape[1:] != cols or (s.hidden is not None and s.hidden.shape[1:] != hid):
            raise ChannelError(f"segment {s.key!r} has shape {s.scores.shape}, expected (n, *{cols})")
    header = {
        "v": WIRE_VERSION,
        "cols": list(cols),
        "hidden": list(hid) if hid is not None else None,
        "rows": sum(s.n for s in segments),
        "segments": [[s.key, s.start, s.n, s.hidden is not None] for s in segments],
    }
    scores = np.concatenate([s.scores for s in segments]).astype("<f4", copy=False)
    hidden = [s.hidden for s in segments if s.hidden is not None]
    packed_hidden = np.concatenate(hidden).astype("<f4", copy=False).tobytes() if hidden else b""
    return [json.dumps(header).encode(), scores.tobytes(), packed_hidden]


def decode_batch(frames: list[bytes]) -> list[ScoreSegment]:
    """Inverse of :func:`encode_batch`.

    Raises:
        ChannelError: the frames are malformed or of another wire version.
    """
    try:
        header = json.loads(frames[0])
        if header.get("v") != WIRE_VERSION:
            raise ChannelError(f"score batch has wire version {header.get('v')!r}, expected {WIRE_VERSION}; "
                               "engine and consumer run different guard versions")
        cols = tuple(header["cols"])
        hid = tuple(header["hidden"]) if header["hidden"] is not None else None
        n_rows = int(header["rows"])  # explicit: a probe-less capture sends zero-width scores
        scores = np.frombuffer(frames[1], "<f4").reshape((n_rows, *cols))
        hidden = np.frombuffer(frames[2], "<f4").reshape((-1, *hid)) if hid is not None else None
        out, row, hrow = [], 0, 0
        for key, start, n, has_hidden in header["segments"]:
            seg_hidden = None
            if has_hidden:
                if hidden is None:
                    raise ValueError(f"segment {key!r} carries hidden rows but the header declares none")
                seg_hidden = hidden[hrow : hrow + n]
                hrow += n
            out.append(ScoreSegment(str(key), int(start), scores[row : row + n], seg_hidden))
            row += n
    except ChannelError:
        raise
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise ChannelError(f"malformed score batch ({exc}); "
                           "engine and consumer may run different guard versions") from exc
    if row != scores.shape[0]:
        raise ChannelError(f"score batch header covers {row} rows but carries {scores.shape[0]}")
    return out


@runtime_checkable
class ScoreSink(Protocol):
    """Where an engine worker delivers a step's segments."""

    def publish(self, segments: list[ScoreSegment]) -> None:
        """Deliver one step's segments; must not block the engine for long."""


@runtime_checkable
class ScoreSource(Protocol):
    """Where a consumer (offline API, server) reads a request's scores."""

    def wait(self, key: str, until: int, timeout: float) -> TokenScores:
        """Block until position ``until - 1`` of ``key`` has arrived or ``timeout`` passes."""

    def pop(self, key: str) -> TokenScores:
        """Return and forget everything received for ``key``."""


class ScoreStore:
    """In-process sink and source: keeps segments per guard key, bounded in keys.

    Args:
        max_keys: oldest keys are dropped beyond this many (a consumer that never pops cannot
            exhaust memory).
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        self._segments: OrderedDict[str, list[ScoreSegment]] = OrderedDict()
        self._max_keys = max_keys
        self._cond = threading.Condition()
        self.dropped_keys = 0

    def publish(self, segments: list[ScoreSegment]) -> None:
        """Store segments and wake waiters."""
        with self._cond:
            for seg in segments:
                self._segments.setdefault(seg.key, []).append(seg)
            while len(self._segments) > self._max_keys:
                self._segments.popitem(last=False)
                self.dropped_keys += 1
            self._cond.notify_all()

    def _last(self, key: str) -> int:
        segs = self._segments.get(key, ())
        return max((s.start + s.n for s in segs), default=0)

    def wait(self, key: str, until: int, timeout: float) -> TokenScores:
        """Block until positions up to ``until - 1`` of ``key`` arrived (or timeout); return a snapshot."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._last(key) < until:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._snapshot(key)

    def take(self, key: str, start: int = 0) -> TokenScores:
        """Non-blocking: the scores of ``key`` received so far at positions ``>= start`` (nothing is forgotten).

        Example:
            >>> store = ScoreStore()
            >>> store.publish([ScoreSegment("k", 0, np.zeros((4, 1, 1), np.float32))])
            >>> store.take("k", 2).positions.tolist()
            [2, 3]
        """
        return combine(key, self.take_segments(key, start))

    def take_segments(self, key: str, start: int = 0) -> list[ScoreSegment]:
        """Non-blocking, without copies: the segments of ``key`` received so far that reach position
        ``start``, in position order, the first one cut to begin at ``start`` or later.

        The cheap form of :meth:`take` for a consumer that polls with a growing ``start`` while a
        request streams (usually one segment of one row comes back): work is proportional to the
        segments that reach ``start``, each paid for once. Segments of one key arrive in position
        order (one publisher, engine steps in sequence).

        Example:
            >>> store = ScoreStore()
            >>> store.publish([ScoreSegment("k", 0, np.zeros((4, 1, 1), np.float32))])
            >>> [(s.start, s.n) for s in store.take_segments("k", 2)]
            [(2, 2)]
        """
        with self._cond:
            segs = self._segments.get(key, ())
            recent = []
            for seg in reversed(segs):
                if seg.start + seg.n <= start:
                    break
                recent.append(seg)
        recent.reverse()
        if recent and recent[0].start < start:
            first, cut = recent[0], start - recent[0].start
            hidden = None if first.hidden is None else first.hidden[cut:]
            recent[0] = ScoreSegment(key, start, first.scores[cut:], hidden)
        return recent

    def pop(self, key: str) -> TokenScores:
        """Return and forget the scores of ``key`` (empty if none arrived)."""
        with self._cond:
            snap = self._snapshot(key)
            self._segments.pop(key, None)
            return snap

    def discard(self, key: str) -> None:
        """Forget the scores of ``key`` (nothing is returned, nothing is copied)."""
        with self._cond:
            self._segments.pop(key, None)

    def _snapshot(self, key: str) -> TokenScores:
        return combine(key, sorted(self._segments.get(key, ()), key=lambda s: s.start))


def combine(key: str, segs: list[ScoreSegment]) -> TokenScores:
    """Segments of ``key``, in position order, as one :class:`TokenScores` (no copy for a single segment)."""
    if not segs:
        return TokenScores(key, np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float32), None)
    if len(segs) == 1:  # the common case while a request streams: one engine step's rows, no copy
        s = segs[0]
        return TokenScores(key, np.arange(s.start, s.start + s.n), s.scores, s.hidden, 1)
    positions = np.concatenate([np.arange(s.start, s.start + s.n) for s in segs])
    scores = np.concatenate([s.scores for s in segs])
    hidden = np.concatenate([s.hidden for s in segs]) if all(s.hidden is not None for s in segs) else None
    return TokenScores(key, positions, scores, hidden, len(segs))
