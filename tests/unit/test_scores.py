from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.errors import ChannelError
from guard.scores import (
    WIRE_VERSION,
    ScoreSegment,
    ScoreStore,
    decode_batch,
    encode_batch,
)


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       with_hidden=st.lists(st.booleans(), min_size=5, max_size=5), k=st.integers(0, 3))
def test_wire_format_roundtrips_segments_exactly(counts, with_hidden, k):
    # k == 0 is the probe-less capture (hidden rows only): rows must survive zero-width scores.
    rng = np.random.default_rng(len(counts))
    segs = [
        ScoreSegment(f"k{i}", 3 * i, rng.standard_normal((n, 2, k)).astype(np.float32),
                     rng.standard_normal((n, 2, 5)).astype(np.float32) if with_hidden[i] else None)
        for i, n in enumerate(counts)
    ]
    back = decode_batch(encode_batch(segs))
    assert [(s.key, s.start, s.n) for s in back] == [(s.key, s.start, s.n) for s in segs]
    for a, b in zip(segs, back):
        assert a.scores.shape == b.scores.shape and np.array_equal(a.scores, b.scores)
        assert (a.hidden is None) == (b.hidden is None)
        if a.hidden is not None:
            assert np.array_equal(a.hidden, b.hidden)


def test_other_wire_version_is_rejected_with_a_clear_error():
    frames = encode_batch([ScoreSegment("k", 0, np.zeros((1, 1, 1), np.float32))])
    frames[0] = frames[0].replace(f'"v": {WIRE_VERSION}'.encode(), b'"v": 7')
    with pytest.raises(ChannelError, match="wire version 7"):
        decode_batch(frames)


def test_malformed_frames_raise_channel_error():
    with pytest.raises(ChannelError):
        decode_batch([b"{}", b"", b""])


def test_store_orders_segments_by_position_and_pop_forgets_them():
    store = ScoreStore()
    store.publish([ScoreSegment("a", 5, np.full((2, 1, 1), 2, np.float32))])
    store.publish([ScoreSegment("a", 0, np.full((5, 1, 1), 1, np.float32)),
                   ScoreSegment("b", 0, np.zeros((1, 1, 1), np.float32))])
    got = store.pop("a")
    assert got.positions.tolist() == list(range(7)) and got.segments == 2
    assert got.scores[:, 0, 0].tolist() == [1] * 5 + [2] * 2
    assert store.pop("a").positions.size == 0
    assert store.pop("b").positions.tolist() == [0]


def test_wait_returns_once_the_requested_position_arrives():
    store = ScoreStore()
    timer = threading.Timer(0.05, store.publish, args=([ScoreSegment("a", 0, np.zeros((3, 1, 1), np.float32))],))
    timer.start()
    got = store.wait("a", until=3, timeout=10.0)
    timer.join()
    assert got.positions.tolist() == [0, 1, 2]


def test_wait_gives_up_after_the_timeout_with_what_arrived():
    store = ScoreStore()
    store.publish([ScoreSegment("a", 0, np.zeros((1, 1, 1), np.float32))])
    assert store.wait("a", until=5, timeout=0.01).positions.tolist() == [0]


def test_store_is_bounded_in_keys():
    store = ScoreStore(max_keys=3)
    for i in range(5):
        store.publish([ScoreSegment(f"k{i}", 0, np.zeros((1, 1, 1), np.float32))])
    assert store.dropped_keys == 2
    assert store.pop("k0").positions.size == 0 and store.pop("k4").positions.size == 1


def test_missing_lists_positions_without_scores():
    store = ScoreStore()
    store.publish([ScoreSegment("a", 3, np.zeros((2, 1, 1), np.float32))])
    assert store.pop("a").missing(5) == [0, 1, 2]


def test_take_returns_only_positions_from_start_on_without_forgetting_or_blocking():
    store = ScoreStore()
    store.publish([ScoreSegment("a", 0, np.arange(5, dtype=np.float32).reshape(5, 1, 1)),
                   ScoreSegment("b", 0, np.full((9, 1, 1), -1, np.float32))])
    store.publish([ScoreSegment("a", 5, np.full((1, 1, 1), 5, np.float32))])
    got = store.take("a", 3)  # straddles the first segment: rows 3, 4 of it, then the next one
    assert got.positions.tolist() == [3, 4, 5] and got.scores[:, 0, 0].tolist() == [3, 4, 5]
    assert store.take("a", 6).positions.size == 0  # nothing yet: returns at once
    assert store.take("missing", 0).positions.size == 0
    assert store.pop("a").positions.tolist() == list(range(6))  # take forgot nothing
