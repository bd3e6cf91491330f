"""The API key: enforced on model routes with 401 in OpenAI's shape, open on health and metrics, the key never
echoed; settings read it from GUARD_API_KEY and never print it; guard proxy keeps the client's key from the
foreign API when the guard has its own."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from adapters.http.api_key import OPEN_PATHS, ApiKey
from adapters.http.proxy.router import upstream_headers
from adapters.http.settings import ProxySettings, ServeSettings

KEY = "sk-guard-unit-7f3a"


def _app() -> ApiKey:
    app = FastAPI()
    for path in ("/v1/chat/completions", "/tokenize", *OPEN_PATHS):
        app.add_api_route(path, lambda: {"ok": True}, methods=["GET", "POST"])
    return ApiKey(app, KEY)


def _call(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def main() -> httpx.Response:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://x")
        return await client.post(path, headers=headers or {})

    return asyncio.run(main())


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"bearer{KEY}"}])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/tokenize"])
def test_a_request_without_the_right_bearer_key_gets_401_in_openais_shape_without_the_key(path, headers):
    answer = _call(path, headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in error["message"] and KEY not in answer.text and "wrong" not in answer.text


def test_the_right_key_passes_and_health_and_metrics_need_none():
    assert _call("/v1/chat/completions", {"Authorization": f"Bearer {KEY}"}).json() == {"ok": True}
    for path in sorted(OPEN_PATHS):
        assert _call(path).json() == {"ok": True}, path


def test_an_empty_key_is_refused_at_construction():
    with pytest.raises(ValueError, match="empty"):
        ApiKey(FastAPI(), "")


def test_settings_read_the_key_from_the_environment_and_never_print_it(monkeypatch):
    monkeypatch.setenv("GUARD_API_KEY", KEY)
    settings = ServeSettings.build()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == KEY
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def test_guard_proxy_with_its_own_key_never_forwards_the_clients_key_and_sends_the_upstream_key_instead():
    client = {"authorization": f"Bearer {KEY}", "openai-organization": "org-1", "x-other": "1"}
    guarded = ProxySettings.build(upstream="http://127.0.0.1:9000", api_key=KEY, upstream_api_key="sk-upstream")
    assert upstream_headers(client, guarded) == {"authorization": "Bearer sk-upstream", "openai-organization": "org-1"}
    no_upstream_key = ProxySettings.build(upstream="http://127.0.0.1:9000", api_key=KEY)
    assert upstream_headers(client, no_upstream_key) == {"openai-organization": "org-1"}
    # without a key of its own the proxy passes the client's credentials on, as before
    open_proxy = ProxySettings.build(upstream="http://127.0.0.1:9000")
    assert upstream_headers(client, open_proxy) == {"authorization": f"Bearer {KEY}", "openai-organization": "org-1"}
