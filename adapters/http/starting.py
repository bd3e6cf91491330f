"""The server's port while the engine starts: bound at once, answering "starting" until the app takes it over.

An engine start takes from seconds to many minutes (a big model's weights, compilation), and blocks the
process's event loop. :class:`StartingPort` binds and listens on the server's address before it begins, and a
thread answers every connection meanwhile, content-free and at once:

* ``GET /livez``: 200 ``{"status": "starting"}`` (the process is alive: a liveness probe must not kill it);
* ``/readyz``, ``/healthz``, ``/health``: 503 ``{"status": "starting"}`` (send no work yet);
* anything else: 503 with an OpenAI-shaped error (``code: "starting"``) and ``Retry-After``.

Once the engine is up and the start-up self-test passed, :meth:`StartingPort.handoff` stops the thread and
gives the same listening socket to uvicorn: connections that arrive during the handover wait in the socket's
backlog, none is refused.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from typing import Any

from guard.errors import ConfigError

__all__ = ["StartingPort", "STARTING_PATHS", "bind_port"]

#: paths a starting server answers with its status rather than an error
STARTING_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/health"})
_POLL_S = 0.05
_READ_S = 2.0


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``; IPv6 when ``host`` has a colon), not yet listening.

    Raises:
        ConfigError: the address cannot be bound, naming it and the fix.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host") from exc
    return sock


class StartingPort:
    """The server's listening socket, answered by a thread until :meth:`handoff`.

    Args:
        host / port: where the server listens.
        who: names the server in the "starting" answers (``guard serve``, ``guard proxy``).

    Raises:
        ConfigError: the address cannot be bound (in use, or not this machine's), naming it and the fix.

    Example:
        >>> port = StartingPort("127.0.0.1", 0, "guard serve")
        >>> sock = port.handoff()  # the app serves from here: server.run(sockets=[sock])
        >>> sock.close()
    """

    def __init__(self, host: str, port: int, who: str) -> None:
        self.who = who
        self.socket = bind_port(host, port)
        try:
            self.socket.listen(2048)
        except OSError as exc:
            self.socket.close()
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or "
                              "--host") from exc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._answer, name="guard-starting", daemon=True)
        self._thread.start()

    def handoff(self) -> socket.socket:
        """Stop answering and return the listening socket (for uvicorn's ``sockets=[...]``)."""
        self._stop.set()
        self._thread.join()
        return self.socket

    def close(self) -> None:
        """Stop answering and close the socket (the server did not start); idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.socket.close()

    def _answer(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.socket], [], [], _POLL_S)
                if not ready or self._stop.is_set():
                    continue
                self.socket.setblocking(False)
                try:
                    conn, _ = self.socket.accept()
                finally:
                    self.socket.setblocking(True)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # the socket was closed under us
                return
            with conn:
                self._reply(conn)

    def _reply(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(_READ_S)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                part = conn.recv(4096)
                if not part:
                    break
                head += part
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            path = request_line[1].split("?", 1)[0] if len(request_line) >= 2 else ""
            conn.sendall(self._response(path))
        except OSError:
            pass  # a client that left or stalled: nothing to answer

    def _response(self, path: str) -> bytes:
        body: dict[str, Any]
        if path == "/livez":
            status, body = "200 OK", {"status": "starting"}
        elif path in STARTING_PATHS:
            status, body = "503 Service Unavailable", {"status": "starting",
                                                       "detail": f"{self.who} is starting: the engine is loading"}
        else:
            status, body = "503 Service Unavailable", {"error": {
                "message": f"{self.who} is starting (the engine is loading the model); retry once GET /readyz "
                           "answers 200", "type": "server_error", "param": None, "code": "starting"}}
        payload = json.dumps(body).encode()
        return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                f"retry-after: 5\r\nconnection: close\r\n\r\n").encode() + payload
