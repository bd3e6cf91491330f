"""guard serve's mode "steer" in-process: the steered request the relay sends, and the one answer the client gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.steer import Steering
from tests.unit.fake_upstream import BAD, GOOD, MODEL, FakeUpstream, Script, run_app

MIXED = Script([("Good", GOOD), (" one", GOOD), (".", GOOD), (" Bad", BAD), (" claim", BAD), (".", BAD),
                (" More", GOOD), (".", GOOD)], n_prompt=11)
CLEAN = Script([("Paris", GOOD), (" is", GOOD), (" fine", GOOD), (".", GOOD), (" Yes", GOOD), (".", GOOD)])
CONTINUATION = Script([(" Fixed", GOOD), (" claim", GOOD), (".", GOOD), (" Done", GOOD), (".", GOOD)])
FRESH = Script([("Fixed", GOOD), (" claim", GOOD), (".", GOOD)])
N_KEPT = 3  # "Good", " one", "." come before the flagged sentence's first token " Bad"
STEERING = Steering(4.0, "test-vector")


def _serve(run: Any, steered: Script | None = CONTINUATION, steering: Steering | None = STEERING,
           **settings: Any) -> FakeUpstream:
    fake = FakeUpstream(ScoreFeed(), {"mixed": MIXED, "clean": CLEAN}, steered=steered)
    return run_app(fake, run, steering=steering, **settings)


def _chat(prompt: str, guard: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "guard": guard, **extra}


def _chunks(body: str) -> list[dict[str, Any]]:
    return [json.loads(b[6:]) for b in body.split("\n\n") if b.startswith("data: ") and b != "data: [DONE]"]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0].get("text") or (c["choices"][0].get("delta") or {}).get("content") or ""
                   for c in chunks if c["choices"])


def test_continue_keeps_the_verified_sentence_and_replaces_the_flagged_one_by_the_steered_text():
    async def run(client, fake, app):
        answer = (await client.post("/v1/chat/completions", json=_chat("mixed", {"mode": "steer"}))).json()
        choice = answer["choices"][0]
        assert choice["message"]["content"] == "Good one. Fixed claim. Done."
        guard = choice["guard"]
        assert guard["decision"] == "steer" and guard["counts"]["flagged"] == 0
        steered = guard["steered"]
        assert (steered["kind"], steered["how"], steered["strength"], steered["kept_chars"]) == ("sentence", "continue",
                                                                                                 4.0, len("Good one."))
        assert steered["position"] == MIXED.n_prompt + N_KEPT and steered["flagged"]["verdict"] == "flagged"
        assert [s["verdict"] for s in guard["sentences"]] == ["supported"] * 3
        first, second = fake.requests
        kept_ids = [fake.token_id(t) for t, _ in MIXED.tokens[:N_KEPT]]
        assert second["prompt"] == list(range(MIXED.n_prompt)) + kept_ids
        assert second["vllm_xargs"]["guard_steer"] == 4.0 and "guard_steer" not in first["vllm_xargs"]
        assert second["vllm_xargs"]["guard_steer_from"] == -1  # the last prompt row makes the first steered token
        assert second["vllm_xargs"]["guard_key"] != first["vllm_xargs"]["guard_key"]
        assert answer["usage"]["completion_tokens"] == N_KEPT + len(CONTINUATION.tokens) + 1  # + end of sequence
        metrics = (await client.get("/metrics")).text
        assert 'guard_steered_total{how="continue",kind="sentence"} 1.0' in metrics
        assert 'decision="steer"' in metrics

    _serve(run)


def test_streamed_continue_never_sends_the_flagged_sentence_and_announces_the_steering():
    async def run(client, fake, app):
        body = {**_chat("mixed", {"mode": "steer"}), "stream": True}
        chunks = _chunks((await client.post("/v1/chat/completions", json=body)).text)
        assert _text(chunks) == "Good one. Fixed claim. Done."
        announced = [c for c in chunks[:-1] if c["choices"] and "steered" in (c["choices"][0].get("guard") or {})]
        assert len(announced) == 1 and announced[0]["choices"][0]["finish_reason"] is None
        finishing = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]]
        assert len(finishing) == 1 and finishing[0] == len(chunks) - 2  # then the summary chunk
        assert {c["id"] for c in chunks} == {chunks[0]["id"]} and all(c["object"] == "chat.completion.chunk"
                                                                      for c in chunks)
        assert chunks[-1]["choices"][0]["guard"]["decision"] == "steer"
        assert all("token_ids" not in c["choices"][0] for c in chunks if c["choices"])

    _serve(run)


@pytest.mark.parametrize("stream", [False, True])
def test_regenerate_replaces_the_whole_answer_by_a_steered_one(stream):
    async def run(client, fake, app):
        body = {"model": MODEL, "prompt": "mixed", "max_tokens": 40, "stream": stream,
                "guard": {"mode": "steer", "steer_how": "regenerate", "steer_alpha": 2.5}}
        response = await client.post("/v1/completions", json=body)
        if stream:
            chunks = _chunks(response.text)
            text, guard = _text(chunks), chunks[-1]["choices"][0]["guard"]
        else:
            text, guard = response.json()["choices"][0]["text"], response.json()["choices"][0]["guard"]
        assert text == "Fixed claim." and guard["steered"]["how"] == "regenerate"
        assert guard["steered"]["strength"] == 2.5 and guard["steered"]["position"] is None
        assert fake.requests[1]["prompt"] == list(range(MIXED.n_prompt)) and fake.requests[1]["max_tokens"] == 40

    _serve(run, steered=FRESH)


def test_the_steered_request_gets_the_token_budget_the_kept_tokens_left():
    async def run(client, fake, app):
        body = {"model": MODEL, "prompt": "mixed", "max_tokens": 20, "temperature": 0.3, "seed": 7,
                "guard": {"mode": "steer"}}
        await client.post("/v1/completions", json=body)
        steered = fake.requests[1]
        assert steered["max_tokens"] == 20 - N_KEPT and (steered["temperature"], steered["seed"]) == (0.3, 7)

    _serve(run)


@pytest.mark.parametrize("stream", [False, True])
def test_a_verified_answer_is_not_steered_and_keeps_its_text(stream):
    async def run(client, fake, app):
        response = await client.post("/v1/chat/completions",
                                     json={**_chat("clean", {"mode": "steer"}), "stream": stream})
        if stream:
            chunks = _chunks(response.text)
            text, guard = _text(chunks), chunks[-1]["choices"][0]["guard"]
        else:
            text, guard = response.json()["choices"][0]["message"]["content"], response.json()["choices"][0]["guard"]
        assert text == CLEAN.text and guard["decision"] == "pass" and guard["steered"] is None
        assert len(fake.requests) == 1

    _serve(run)


def test_always_steers_the_first_request_itself_and_keeps_the_text():
    async def run(client, fake, app):
        answer = (await client.post("/v1/chat/completions",
                                    json=_chat("mixed", {"mode": "steer", "steer_how": "always"}))).json()
        choice = answer["choices"][0]
        assert choice["message"]["content"] == MIXED.text and len(fake.requests) == 1
        assert fake.requests[0]["vllm_xargs"]["guard_steer"] == 4.0
        assert choice["guard"]["decision"] == "steer" and choice["guard"]["steered"]["kind"] == "request"
        assert choice["guard"]["counts"]["flagged"] == 1  # reported like mode "flag"

    _serve(run)


@pytest.mark.parametrize(("steering", "guard", "param"), [
    (None, {"mode": "steer"}, "guard.mode"),
    (Steering(None, "v.safetensors"), {"mode": "steer"}, "guard.steer_alpha"),
    (Steering(4.0, "v.safetensors"), {"mode": "flag", "steer_alpha": 1.0}, "guard.steer_alpha"),
])
def test_steering_requests_the_server_cannot_serve_get_a_400_naming_the_field(steering, guard, param):
    async def run(client, fake, app):
        response = await client.post("/v1/chat/completions", json=_chat("mixed", guard))
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == param and "guard" in error["message"]
        assert fake.requests == []

    _serve(run, steering=steering)


@pytest.mark.parametrize("field", ["guard_steer", "guard_steer_from"])
def test_clients_cannot_steer_through_vllm_xargs(field):
    async def run(client, fake, app):
        response = await client.post("/v1/chat/completions", json=_chat("mixed", {}, vllm_xargs={field: 3}))
        assert response.status_code == 400 and response.json()["error"]["param"] == f"vllm_xargs.{field}"
        assert "guard.mode='steer'" in response.json()["error"]["message"]

    _serve(run)


def test_a_streamed_steered_answer_reports_the_usage_of_the_whole_answer_in_the_clients_shape():
    async def run(client, fake, app):
        body = {**_chat("mixed", {"mode": "steer"}), "stream": True, "stream_options": {"include_usage": True}}
        chunks = _chunks((await client.post("/v1/chat/completions", json=body)).text)
        [usage] = [c for c in chunks if not c["choices"]]
        assert chunks[-1] is usage and "decision" in chunks[-2]["choices"][0]["guard"]  # after the summary, last
        assert usage["object"] == "chat.completion.chunk" and usage["id"] == chunks[0]["id"]
        assert usage["usage"]["prompt_tokens"] == MIXED.n_prompt
        assert usage["usage"]["completion_tokens"] == N_KEPT + len(CONTINUATION.tokens) + 1

    _serve(run)


def test_a_steered_answer_is_not_judged_by_the_answer_check_it_was_not_calibrated_on():
    from guard.gating import GateRule
    from tests.unit.fake_upstream import LABELS, make_gate

    async def run(client, fake, app):
        for stream in (False, True):
            options = {"mode": "steer", "answer_check": True, "gate": False}
            reply = await client.post("/v1/chat/completions", json=_chat("mixed", options, stream=stream))
            guard = (_chunks(reply.text)[-1] if stream else reply.json())["choices"][0]["guard"]
            assert guard["decision"] == "steer" and "answer_check" not in guard and guard["verified"] is True
        judged = (await client.post("/v1/chat/completions", json=_chat("clean", options))).json()["choices"][0]
        assert judged["guard"]["answer_check"]["answer"] is True  # an unsteered answer is judged (and reported)

    fake = FakeUpstream(ScoreFeed(), {"mixed": MIXED, "clean": CLEAN}, steered=CONTINUATION,
                        gate={"mixed": (0.1, 0.9), "clean": (0.1, 0.9)})
    run_app(fake, run, steering=STEERING, gate=GateRule(make_gate(answer_check=True), offset=len(LABELS)))
