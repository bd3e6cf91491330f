"""Transports for the score channel: ``inproc://`` (same process) and zmq (``ipc://`` / ``tcp://``).

Workers hold a sink (:func:`open_sink`); consumers run a :class:`ScoreCollector` that binds the
endpoint and fills a :class:`guard.scores.ScoreStore`. zmq PUSH -> PULL was chosen because it
streams every engine step as it happens (verdicts while streaming), crosses processes and hosts,
never blocks the engine (a full queue drops and counts), and pyzmq already ships with vLLM.
"""

from __future__ import annotations

import os
import threading
import uuid

import zmq

from adapters.run_folder import socket_folder
from guard.errors import ChannelError
from guard.scores import ScoreSegment, ScoreSink, ScoreStore, decode_batch, encode_batch

__all__ = ["open_sink", "ScoreCollector", "new_ipc_endpoint"]

_INPROC: dict[str, ScoreStore] = {}
_INPROC_LOCK = threading.Lock()
_HWM = 100_000


def new_ipc_endpoint() -> str:
    """A fresh Unix-socket endpoint for a collector on this host, in this process's run folder
    (:func:`adapters.run_folder.socket_folder`)."""
    name = f"guard-scores-{uuid.uuid4().hex[:12]}.sock"
    return f"ipc://{socket_folder(len(name))}/{name}"


class _ZmqSink:
    """Worker side: PUSH frames without ever blocking the engine."""

    def __init__(self, endpoint: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, _HWM)
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.connect(endpoint)
        self.dropped_batches = 0

    def publish(self, segments: list[ScoreSegment]) -> None:
        try:
            self._sock.send_multipart(encode_batch(segments), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped_batches += 1

    def close(self) -> None:
        """Close the socket (frames still queued get up to its linger time); the shared context stays."""
        self._sock.close()


class _InprocSink:
    def __init__(self, store: ScoreStore) -> None:
        self._store = store
        self.dropped_batches = 0

    def publish(self, segments: list[ScoreSegment]) -> None:
        self._store.publish(segments)

    def close(self) -> None:
        """Nothing to release: the store belongs to its collector."""


def open_sink(endpoint: str) -> ScoreSink:
    """A :class:`guard.scores.ScoreSink` delivering to ``endpoint``.

    It also has ``close()``, which releases its socket; an engine worker's sink lives as long as the worker.

    Raises:
        ChannelError: an ``inproc://`` endpoint has no collector in this process.
    """
    if endpoint.startswith("inproc://"):
        with _INPROC_LOCK:
            store = _INPROC.get(endpoint)
        if store is None:
            raise ChannelError(
                f"no in-process score collector is bound at {endpoint!r}; in-process delivery needs the engine in "
                "this process (VLLM_ENABLE_V1_MULTIPROCESSING=0); otherwise use an ipc:// or tcp:// endpoint"
            )
        return _InprocSink(store)
    return _ZmqSink(endpoint)


class ScoreCollector:
    """Consumer side: binds ``endpoint`` and stores every arriving batch.

    Args:
        endpoint: ``inproc://NAME``, ``ipc:///path.sock`` or ``tcp://host:port``.
        store: where segments go (a new :class:`ScoreStore` by default).

    Raises:
        ChannelError: the endpoint cannot be bound.
    """

    def __init__(self, endpoint: str, store: ScoreStore | None = None) -> None:
        self.endpoint = endpoint
        self.store = store or ScoreStore()
        self.malformed_batches = 0
        self.last_error: str | None = None  #: the latest malformed batch, for diagnosis
        self._thread: threading.Thread | None = None
        if endpoint.startswith("inproc://"):
            with _INPROC_LOCK:
                if endpoint in _INPROC:
                    raise ChannelError(f"score endpoint {endpoint!r} is already bound in this process; "
                                       "pick another name")
                _INPROC[endpoint] = self.store
            return
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, _HWM)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._ctx.destroy(linger=0)
            raise ChannelError(f"cannot bind score endpoint {endpoint!r}: {exc}; choose a free address") from exc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guard-score-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            frames = self._sock.recv_multipart()
            try:
                self.store.publish(decode_batch(frames))
            except ChannelError as exc:
                self.malformed_batches += 1
                self.last_error = str(exc)

    def close(self) -> None:
        """Stop receiving and release the endpoint; an ``ipc://`` socket file it bound is removed."""
        if self._thread is None:
            with _INPROC_LOCK:
                _INPROC.pop(self.endpoint, None)
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close(linger=0)
        self._ctx.term()
        self._thread = None
        path = self.endpoint.removeprefix("ipc://")
        if path != self.endpoint and not path.startswith("@"):  # zmq leaves the file behind (@: abstract, no file)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
