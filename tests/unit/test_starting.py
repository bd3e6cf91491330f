"""The port answers "starting" from the first moment, and the app gets it only after the start-up self-test."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from adapters.http.api_key import ApiKey
from adapters.http.score_feed import ScoreFeed
from adapters.http.self_test import SELF_TEST_TEXT, self_test
from adapters.http.settings import ServeSettings
from adapters.http.starting import StartingPort, bind_port
from guard.errors import AdapterError, ConfigError
from tests.unit.fake_faults import FaultyUpstream
from tests.unit.fake_upstream import GOOD, MODEL, Script, run_app


def _get(port: int, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=5, json={} if method == "POST" else None)


def test_a_starting_server_is_alive_not_ready_and_refuses_work_with_a_retry() -> None:
    port = StartingPort("127.0.0.1", 0, "guard serve")
    number = port.socket.getsockname()[1]
    try:
        live, ready, health = _get(number, "/livez"), _get(number, "/readyz"), _get(number, "/healthz?x=1")
        assert (live.status_code, live.json()) == (200, {"status": "starting"})
        assert ready.status_code == 503 and ready.json()["status"] == "starting"
        assert health.status_code == 503
        work = _get(number, "/v1/chat/completions", "POST")
        assert work.status_code == 503 and work.headers["retry-after"] == "5"
        error = work.json()["error"]
        assert error["code"] == "starting" and "guard serve is starting" in error["message"]
    finally:
        port.close()


def test_the_handover_keeps_the_listening_socket_so_no_connection_is_refused() -> None:
    port = StartingPort("127.0.0.1", 0, "guard proxy")
    number = port.socket.getsockname()[1]
    listening = port.handoff()
    try:
        with socket.create_connection(("127.0.0.1", number), timeout=5) as client:  # waits in the backlog
            client.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
            conn, _ = listening.accept()  # the app (uvicorn) accepts it after the handover
            with conn:
                assert conn.recv(100).startswith(b"GET /readyz")
    finally:
        listening.close()


def test_an_address_in_use_is_refused_naming_it_and_the_fix() -> None:
    taken = StartingPort("127.0.0.1", 0, "guard serve")
    try:
        port = taken.socket.getsockname()[1]
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*pick another --port"):
            StartingPort("127.0.0.1", port, "guard serve")
        with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*pick another --port"):
            bind_port("127.0.0.1", port)  # guard serve's check of --engine-port
    finally:
        taken.close()


def _self_test_run(silent: bool, key: str | None = None, settings_key: str | None = None) -> list[str]:
    errors: list[str] = []
    script = Script([("Paris", GOOD), (" is", GOOD), (" big", GOOD), (".", GOOD)])
    settings = ServeSettings.build(served_model_name=MODEL, **({"api_key": settings_key} if settings_key else {}))

    async def run(client: Any, fake: Any, app: Any) -> None:
        try:
            await self_test(app if key is None else ApiKey(app, key), settings, "guard serve", judge=False)
        except AdapterError as exc:
            errors.append(str(exc))

    run_app(FaultyUpstream(ScoreFeed(), {SELF_TEST_TEXT: script}, silent=silent), run, score_timeout=0.2)
    return errors


def test_the_self_test_passes_when_every_answer_token_has_its_scores() -> None:
    assert _self_test_run(silent=False) == []


def test_the_self_test_fails_naming_what_is_missing_when_the_scores_never_arrive() -> None:
    (error,) = _self_test_run(silent=True)
    assert "guard serve's start-up self-test failed" in error and "scores_missing" in error


def test_the_self_test_goes_through_the_api_key_like_a_client() -> None:
    assert _self_test_run(silent=False, key="sk-test-1234567890", settings_key="sk-test-1234567890") == []
    (error,) = _self_test_run(silent=False, key="sk-test-1234567890", settings_key="sk-other-0987654321")
    assert "answered 401" in error
