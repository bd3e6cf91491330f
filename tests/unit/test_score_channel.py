"""The score channel's transports deliver frames unchanged (zmq ipc/tcp and in-process)."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.score_channel import ScoreCollector, new_ipc_endpoint, open_sink
from guard.errors import ChannelError
from guard.scores import ScoreSegment, encode_batch


def _segments() -> list[ScoreSegment]:
    rng = np.random.default_rng(0)
    return [ScoreSegment("a", 0, rng.standard_normal((3, 2, 1)).astype(np.float32),
                         rng.standard_normal((3, 2, 4)).astype(np.float32)),
            ScoreSegment("b", 7, rng.standard_normal((1, 2, 1)).astype(np.float32))]


@pytest.mark.parametrize("endpoint", [new_ipc_endpoint(), "tcp://127.0.0.1:0", "inproc://unit-test"])
def test_segments_published_by_a_sink_arrive_intact_at_the_collector(endpoint):
    if endpoint.endswith(":0"):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    collector = ScoreCollector(endpoint)
    try:
        sink = open_sink(endpoint)
        try:
            sink.publish(_segments())
            a = collector.store.wait("a", 3, timeout=10)
            b = collector.store.wait("b", 8, timeout=10)
        finally:
            sink.close()
    finally:
        collector.close()
    assert a.positions.tolist() == [0, 1, 2] and np.array_equal(a.scores, _segments()[0].scores)
    assert np.array_equal(a.hidden, _segments()[0].hidden)
    assert b.positions.tolist() == [7] and b.hidden is None


def test_inproc_sink_without_a_collector_explains_how_to_fix_it():
    with pytest.raises(ChannelError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        open_sink("inproc://nobody-here")


def test_binding_an_endpoint_twice_is_refused_with_the_address():
    collector = ScoreCollector("inproc://twice")
    try:
        with pytest.raises(ChannelError, match="inproc://twice"):
            ScoreCollector("inproc://twice")
    finally:
        collector.close()


def test_malformed_batches_are_counted_not_fatal():
    import zmq

    endpoint = new_ipc_endpoint()
    collector = ScoreCollector(endpoint)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"not json", b"", b""])
        sock.send_multipart(encode_batch(_segments()))  # same socket: arrives after the bad batch
        assert collector.store.wait("b", 8, timeout=10).positions.tolist() == [7]
        assert collector.malformed_batches == 1
        assert "malformed score batch" in (collector.last_error or "")
    finally:
        sock.close(linger=0)
        ctx.term()
        collector.close()
