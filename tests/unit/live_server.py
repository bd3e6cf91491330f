"""Serve an ASGI app on a real loopback port from a background thread, for tests whose client is a third-party
library that makes its own HTTP connections (LiteLLM, NeMo Guardrails).

:func:`foreign_app` turns :class:`tests.unit.fake_proxy.FakeForeign` (an ``httpx`` handler) into such an app:
an OpenAI-compatible LLM that answers canned texts. :func:`judge_and_model` serves both peers of a guardrail
framework: guard proxy's app (over the fake reader) as the judge, and that fake API as the model.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from tests.unit.fake_proxy import FakeForeign, Proxy

__all__ = ["live", "foreign_app", "refusing", "judge_and_model"]


@contextmanager
def live(app: Any) -> Iterator[str]:
    """Serve ``app`` on ``127.0.0.1`` (a free port) while the block runs; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def refusing() -> Iterator[str]:
    """A loopback URL whose port is held (bound, never listening) while the block runs: connections are refused,
    and no other server can take the port meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def foreign_app(foreign: FakeForeign) -> Any:
    """An ASGI app answering as ``foreign`` does (its requests are recorded in ``foreign.requests``)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        forwarded = httpx.Request(request.method, str(request.url), headers=request.headers.raw,
                                  content=await request.body())
        answer = await foreign._handle(forwarded)
        await Response(await answer.aread(), answer.status_code, dict(answer.headers))(scope, receive, send)

    return app


@contextmanager
def judge_and_model() -> Iterator[dict[str, Any]]:
    """guard proxy's app and the fake model, each on its own port: ``{"judge": url, "llm": url, "proxy": Proxy}``
    (the proxy's fakes record what they were asked)."""
    proxy = Proxy()
    app, _, _ = proxy.build()
    with live(app) as judge, live(foreign_app(proxy.foreign)) as llm:
        yield {"judge": judge, "llm": llm, "proxy": proxy}
