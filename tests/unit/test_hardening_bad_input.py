"""The bad-input matrix (docs/operations.md): every malformed request gets an OpenAI-shaped 4xx naming the
field and the fix, nothing goes upstream, it is counted, and the server keeps serving. A client that
leaves mid-stream is counted as a disconnect (logged as 499) and its upstream stream is closed."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.unit.fake_faults import chat, proxy, sample, serve
from tests.unit.fake_upstream import MODEL

LIMIT = 4096
FIXES = ("expected", "send", "remove", "omit", "raise", "GET /v1/models", "leave it out", "encode")


def _body(value: object) -> bytes:
    return json.dumps(value).encode()


# (name, path, raw body, status, param, words of the message); "serve"/"proxy" marks cases of one app only
CASES = [
    ("malformed_json", "chat", b'{"model": "m", "messages": [', 400, None, "not valid JSON"),
    ("invalid_utf8", "chat", b'{"model": "m", "messages": "\xff\xfe"}', 400, None, "not valid UTF-8"),
    ("deep_nesting", "chat", b"[" * 1900 + b"]" * 1900, 400, None, "more than 64 levels deep"),
    ("nesting_one_over_the_limit", "chat", b'{"a":' + b"[" * 64 + b"]" * 64 + b"}", 400, None, "more than 64 levels"),
    ("nan_temperature", "chat", b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
     400, "temperature", "temperature=NaN is invalid"),
    ("infinite_top_p", "chat", b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}',
     400, "top_p", "top_p=Infinity is invalid"),
    ("negative_infinity_in_logit_bias", "completions",
     b'{"model": "m", "prompt": "x", "logit_bias": {"42": -Infinity}}', 400, "logit_bias.42", "finite number"),
    ("overflowing_steer_alpha", "chat",
     b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "guard": {"steer_alpha": 1e999}}', 400,
     "guard.steer_alpha", "guard.steer_alpha=1e999 is invalid"),
    ("nan_in_a_list", "chat", b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1, NaN]}',
     400, "stop[1]", "must be finite"),
    ("not_an_object", "chat", b'"hello"', 400, None, "JSON str; expected a JSON object"),
    ("messages_missing", "chat", _body({"model": MODEL}), 400, "messages", "messages=null is invalid"),
    ("messages_wrong_type", "chat", _body({"model": MODEL, "messages": "hi"}), 400, "messages", "non-empty list"),
    ("messages_empty", "chat", _body({"model": MODEL, "messages": []}), 400, "messages", "non-empty list"),
    ("message_not_object", "chat", _body({"model": MODEL, "messages": [1]}), 400, "messages[0]", "expected an object"),
    ("role_wrong_type", "chat", _body({"model": MODEL, "messages": [{"role": 5, "content": "x"}]}), 400,
     "messages[0].role", "expected a string"),
    ("content_wrong_type", "chat", _body({"model": MODEL, "messages": [{"role": "user", "content": 5}]}), 400,
     "messages[0].content", "expected a string, a list of content parts"),
    ("lone_surrogate", "chat", b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}', 400,
     "messages[0].content", "lone UTF-16 surrogate"),
    ("prompt_missing", "completions", _body({"model": MODEL}), 400, "prompt", "prompt=null is invalid"),
    ("prompt_wrong_type", "completions", _body({"model": MODEL, "prompt": {"text": "x"}}), 400, "prompt",
     "expected a string"),
    ("model_wrong_type", "chat", _body(chat("clean", model=5)), 400, "model", "expected a string"),
    ("stream_wrong_type", "chat", _body(chat("clean", stream="yes")), 400, "stream", "expected true or false"),
    ("stream_options_wrong_type", "chat", _body(chat("clean", stream=True, stream_options=5)), 400,
     "stream_options", "expected an object"),
    ("max_tokens_wrong_type", "chat", _body(chat("clean", max_tokens="ten")), 400, "max_tokens", "positive integer"),
    ("max_tokens_zero", "completions", _body({"model": MODEL, "prompt": "clean", "max_tokens": 0}), 400,
     "max_tokens", "positive integer"),
    ("max_completion_tokens_negative", "chat", _body(chat("clean", max_completion_tokens=-3)), 400,
     "max_completion_tokens", "positive integer"),
    ("n_wrong_type", "chat", _body(chat("clean", n="two")), 400, "n", "positive integer"),
    ("guard_not_object", "chat", _body(chat("clean", guard="abstain")), 400, "guard", 'guard="abstain"'),
    ("guard_mode_unknown", "chat", _body(chat("clean", guard={"mode": "loud"})), 400, "guard.mode", "guard.mode"),
    ("guard_alpha_out_of_range", "chat", _body(chat("clean", guard={"alpha": 2})), 400, "guard.alpha", "guard.alpha=2"),
    ("guard_alpha_string", "chat", _body(chat("clean", guard={"alpha": "0.1"})), 400, "guard.alpha", "guard.alpha"),
    ("guard_unknown_field", "chat", _body(chat("clean", guard={"colour": "red"})), 400, "guard.colour",
     "no such field"),
    ("echo", "completions", _body({"model": MODEL, "prompt": "clean", "echo": True}), 400, "echo", "omit echo"),
    ("oversize_body", "chat", _body(chat("x" * 5000)), 413, None, f"larger than {LIMIT} bytes"),
    ("huge_number_of_messages", "chat", _body({"model": MODEL, "messages": [{"role": "user", "content": "hi"}] * 3000}),
     413, None, "larger than"),
    ("unknown_model", "chat", _body(chat("clean", model="gpt-4")), 404, "model", "does not exist"),  # serve only
    ("n_above_one", "chat", _body(chat("clean", n=2)), 400, "n", "send 2 separate requests"),  # serve only
    ("reserved_vllm_xargs", "chat", _body(chat("clean", vllm_xargs={"guard_key": "k"})), 400, "vllm_xargs.guard_key",
     "reserved"),  # serve only
]
SERVE_ONLY = {"unknown_model", "n_above_one", "reserved_vllm_xargs"}
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def _check_error(answer, status: int, param: str | None, words: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"], error["message"]
    assert any(fix in error["message"] for fix in FIXES), f"no fix named in {error['message']!r}"
    if status == 413:
        assert error["code"] == "request_too_large"
    if status == 404:
        assert error["code"] == "model_not_found"


@pytest.mark.parametrize(("name", "path", "raw", "status", "param", "words"), CASES, ids=[c[0] for c in CASES])
def test_guard_serve_refuses_bad_input_with_an_openai_error_and_keeps_serving(name, path, raw, status, param, words):
    async def run(client, fake, app):
        answer = await client.post(PATHS[path], content=raw, headers={"content-type": "application/json"})
        _check_error(answer, status, param, words)
        assert fake.requests == []  # refused before anything went upstream
        endpoint = "chat_completions" if path == "chat" else "completions"
        assert sample(app, "guard_requests_total", endpoint=endpoint, mode="flag", decision="error") == 1
        assert sample(app, "guard_requests_in_flight") == 0
        assert (await client.post("/v1/chat/completions", json=chat("clean"))).status_code == 200

    serve(run, max_request_bytes=LIMIT)


@pytest.mark.parametrize(("name", "path", "raw", "status", "param", "words"),
                         [c for c in CASES if c[0] not in SERVE_ONLY],
                         ids=[c[0] for c in CASES if c[0] not in SERVE_ONLY])
def test_guard_proxy_refuses_bad_input_with_an_openai_error_and_keeps_serving(name, path, raw, status, param, words):
    async def run(client, made):
        answer = await client.post(PATHS[path], content=raw, headers={"content-type": "application/json"})
        _check_error(answer, status, param, words)
        assert made.foreign.requests == [] and made.reader.requests == []
        assert sample(made.app, "guard_requests_in_flight") == 0
        assert (await client.post("/v1/chat/completions", json=chat("capital"))).status_code == 200

    proxy(max_request_bytes=LIMIT).serve(run)


def test_the_upstreams_own_refusal_of_an_oversize_prompt_passes_through_with_its_message():
    async def run(client, fake, app):
        answer = await client.post("/v1/chat/completions", json=chat("a prompt longer than the model's context"))
        assert answer.status_code == 400 and "maximum context length" in answer.json()["error"]["message"]
        assert (await client.post("/v1/chat/completions", json=chat("clean"))).status_code == 200

    serve(run)


@pytest.mark.parametrize(("method", "path", "status"),
                         [("GET", "/v1/chat/completions", 405), ("POST", "/v1/embeddings", 404)])
def test_unknown_routes_and_methods_get_openai_shaped_errors(method, path, status):
    async def run(client, fake, app):
        answer = await client.request(method, path)
        assert answer.status_code == status and set(answer.json()["error"]) == {"message", "type", "param", "code"}

    serve(run)


async def _leave_after(app, path: str, body: dict, events: int, spec: str) -> int:
    """Drive the ASGI app as uvicorn does, with a client that leaves after ``events`` body parts.

    ASGI 2.3 (uvicorn): the server reports ``http.disconnect``; 2.4: sending to the gone client fails.
    """
    raw, gone, asked, sent = json.dumps(body).encode(), asyncio.Event(), False, 0

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal sent
        if message["type"] == "http.response.body" and message.get("body"):
            sent += 1
            if sent >= events:
                if spec == "2.4":
                    raise OSError("connection reset by peer")
                gone.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 5), "server": ("guard", 80)}
    try:
        await app(scope, receive, send)
    except Exception as exc:  # ASGI 2.4: starlette re-raises the client's exit for the server to log
        assert type(exc).__name__ == "ClientDisconnect"
    return sent


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_a_client_leaving_mid_stream_is_counted_as_499_and_the_upstream_stream_closed(spec, caplog):
    async def run(client, fake, app):
        with caplog.at_level(logging.INFO, logger="guard.server"):
            sent = await _leave_after(app, "/v1/chat/completions", chat("mixed", stream=True), 2, spec)
        assert sent == 2
        assert sample(app, "guard_client_disconnects_total", endpoint="chat_completions") == 1
        assert any("499" in r.getMessage() for r in caplog.records)
        assert fake.closed_early  # the upstream's stream was closed: vLLM aborts the generation
        assert sample(app, "guard_requests_in_flight") == 0 and app.state.guard.feed.open_keys == 0
        assert (await client.post("/v1/chat/completions", json=chat("clean", stream=True))).status_code == 200

    serve(run)


def test_a_client_leaving_a_proxy_stream_is_counted_and_the_proxy_keeps_serving():
    async def run(client, made):
        await _leave_after(made.app, "/v1/chat/completions", chat("capital", stream=True), 1, "2.3")
        assert sample(made.app, "guard_client_disconnects_total", endpoint="chat_completions") == 1
        assert sample(made.app, "guard_requests_in_flight") == 0
        assert (await client.post("/v1/chat/completions", json=chat("capital"))).status_code == 200

    proxy().serve(run)
