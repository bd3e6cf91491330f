"""guard serve in-process: the app against a fake upstream that speaks vLLM's API and publishes synthetic scores."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.router import create_app
from adapters.http.settings import ServeSettings
from guard.policy import DEFAULT_ABSTAIN_MESSAGE
from guard.probe import Probe
from tests.unit.fake_upstream import (
    BAD,
    GOOD,
    LABELS,
    MODEL,
    FakeUpstream,
    Script,
    make_probe,
    run_app,
)
from tests.unit.fake_upstream import events as _events
from tests.unit.fake_upstream import streamed_text as _streamed_text

SCRIPTS = {
    "clean": Script([("Paris", GOOD), (" is", GOOD), (" in", GOOD), (" France", GOOD), (".", GOOD), (" Yes", GOOD),
                     (".", GOOD)]),
    "mixed": Script([("Good", GOOD), (" one", GOOD), (".", GOOD), (" Bad", BAD), (" claim", BAD), (".", BAD),
                     (" More", GOOD), (" text", GOOD), (".", GOOD), (" And", GOOD), (" more", GOOD), (".", GOOD)],
                    n_prompt=11),
    "other": Script([("Rome", BAD), (" is", BAD), (" big", BAD), (".", BAD), (" Sure", GOOD), (".", GOOD)], n_prompt=4),
}


def _serve(run: Any, *, probe: Any = None, **settings: Any) -> FakeUpstream:
    """Build the app over a fake upstream and run ``run(client, fake, app)`` in an event loop."""
    return run_app(FakeUpstream(ScoreFeed(), dict(SCRIPTS)), run, probe=probe, **settings)


def _chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}


def test_flag_mode_keeps_the_text_and_adds_the_guard_summary_with_one_score_per_fed_back_token():
    async def run(client, fake, app):
        answer = (await client.post("/v1/chat/completions", json=_chat("mixed"))).json()
        choice = answer["choices"][0]
        assert choice["message"]["content"] == SCRIPTS["mixed"].text
        guard = choice["guard"]
        assert (guard["decision"], guard["mode"], guard["alpha"], guard["source"]) == ("flag", "flag", 0.1, "engine")
        assert [s["verdict"] for s in guard["sentences"]] == ["supported", "flagged", "supported", "supported"]
        assert guard["score"] == pytest.approx(0.05) and guard["counts"]["flagged"] == 1
        n_prompt, n_gen = 11, len(SCRIPTS["mixed"].tokens) + 1  # + the end-of-sequence token
        assert [t["position"] for t in guard["tokens"]] == list(range(n_prompt, n_prompt + n_gen - 1))
        assert guard["tokens"][3]["p"] == pytest.approx(dict(zip(LABELS, BAD)))
        assert answer["prompt_token_ids"] is None and choice["token_ids"] is None  # asked by the guard, not the client
        sent = fake.requests[-1]
        assert sent["return_token_ids"] is True and "guard" not in sent and len(sent["vllm_xargs"]["guard_key"]) == 32

    _serve(run)


def test_abstain_mode_replaces_the_answer_and_says_which_sentence_why():
    async def run(client, fake, app):
        body = _chat("mixed", guard={"mode": "abstain", "abstain_message": "[withheld]"}, logprobs=True)
        choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
        assert choice["message"]["content"] == "[withheld]" and choice["finish_reason"] == "stop"
        assert choice["logprobs"] is None
        reason = choice["guard"]["abstained"]
        assert (choice["guard"]["decision"], reason["kind"], reason["sentence"]) == ("abstain", "sentence", 1)
        assert (reason["p_true"], reason["alpha"]) == (pytest.approx(0.05), 0.1)
        clean = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "clean",
                                                            "guard": {"mode": "abstain"}})).json()["choices"][0]
        assert clean["text"] == SCRIPTS["clean"].text and clean["guard"]["decision"] == "pass"

    _serve(run)


def test_the_server_default_mode_and_message_apply_when_the_request_sets_none():
    async def run(client, fake, app):
        choice = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "mixed"})).json()["choices"][0]
        assert choice["text"] == "No." and choice["guard"]["mode"] == "abstain"
        kept = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "mixed",
                                                           "guard": {"mode": "flag"}})).json()["choices"][0]
        assert kept["text"] == SCRIPTS["mixed"].text

    _serve(run, mode="abstain", abstain_message="No.")


def test_token_ids_stay_when_the_client_asked_for_them_and_its_own_vllm_xargs_are_kept():
    async def run(client, fake, app):
        body = {"model": MODEL, "prompt": "clean", "return_token_ids": True, "vllm_xargs": {"mine": 3}}
        choice = (await client.post("/v1/completions", json=body)).json()["choices"][0]
        assert choice["prompt_token_ids"] == list(range(7)) and choice["token_ids"][-1] == 0
        assert fake.requests[-1]["vllm_xargs"]["mine"] == 3

    _serve(run)


def test_streamed_flag_mode_relays_the_text_unchanged_with_the_same_scores_as_the_unstreamed_answer():
    async def run(client, fake, app):
        whole = (await client.post("/v1/chat/completions", json=_chat("mixed"))).json()["choices"][0]["guard"]
        events = _events((await client.post("/v1/chat/completions", json=_chat("mixed", stream=True))).text)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert _streamed_text(chunks) == SCRIPTS["mixed"].text
        assert all("prompt_token_ids" not in c and "token_ids" not in c["choices"][0] for c in chunks)
        streamed = [t for c in chunks for t in c["choices"][0].get("guard", {}).get("tokens", [])]
        assert streamed == whole["tokens"]
        sentences = [s for c in chunks[:-1] for s in c["choices"][0].get("guard", {}).get("sentences", [])]
        summary = chunks[-1]["choices"][0]["guard"]
        assert sentences == whole["sentences"] == summary["sentences"]
        assert {k: v for k, v in summary.items()} == {k: v for k, v in whole.items() if k != "tokens"}
        assert chunks[-1]["choices"][0]["finish_reason"] is None and chunks[-2]["choices"][0]["finish_reason"] == "stop"

    _serve(run)


def test_the_usage_chunk_comes_last_after_the_guard_summary_as_openai_sends_it():
    async def run(client, fake, app):
        body = _chat("mixed", stream=True, stream_options={"include_usage": True})
        events = _events((await client.post("/v1/chat/completions", json=body)).text)
        assert events[-1] == "[DONE]"
        *_, finish, summary, usage = events[:-1]
        assert finish["choices"][0]["finish_reason"] == "stop"
        assert "decision" in summary["choices"][0]["guard"]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0

    _serve(run)


def test_streamed_abstain_stops_at_the_flagged_sentence_and_closes_the_upstream_stream():
    async def run(client, fake, app):
        body = {"model": MODEL, "prompt": "mixed", "stream": True, "guard": {"mode": "abstain"}}
        events = _events((await client.post("/v1/completions", json=body)).text)
        chunks = events[:-1]
        assert events[-1] == "[DONE]"
        assert _streamed_text(chunks) == "Good one. " + DEFAULT_ABSTAIN_MESSAGE
        stop = [c for c in chunks if c["choices"][0]["finish_reason"] == "stop"]
        assert len(stop) == 1 and stop[0]["choices"][0]["guard"]["abstained"]["sentence"] == 1
        assert chunks[-1]["choices"][0]["guard"]["decision"] == "abstain"
        key = fake.requests[-1]["vllm_xargs"]["guard_key"]
        assert key in fake.closed_early and fake.chunks_sent[key] < len(SCRIPTS["mixed"].tokens) + 1
        # nothing unverified went out: every text chunk before the stop ends at a decided sentence
        released = [c["choices"][0]["text"] for c in chunks if c["choices"][0]["text"]]
        assert released[0] == "Good one. "

    _serve(run)


def test_concurrent_requests_never_get_each_others_scores():
    async def run(client, fake, app):
        bodies = [_chat(p, stream=s) for p in ("mixed", "other") for s in (True, False)] * 3
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))
        for body, answer in zip(bodies, answers):
            script = SCRIPTS[body["messages"][0]["content"]]
            if body["stream"]:
                chunks = _events(answer.text)[:-1]
                tokens = [t for c in chunks for t in c["choices"][0].get("guard", {}).get("tokens", [])]
            else:
                tokens = answer.json()["choices"][0]["guard"]["tokens"]
            expected = [dict(zip(LABELS, p)) for _, p in script.tokens]
            assert [t["position"] for t in tokens] == list(range(script.n_prompt, script.n_prompt + len(expected)))
            assert [t["p"] for t in tokens] == [pytest.approx(e) for e in expected]
        assert app.state.guard.feed.open_keys == 0  # every key was closed when its request ended

    _serve(run)


def test_an_engine_failure_mid_stream_is_passed_on_and_counted_as_an_error():
    async def run(client, fake, app):
        fake.scripts["doomed"] = Script(list(SCRIPTS["clean"].tokens), fail_mid_stream=True)
        events = _events((await client.post("/v1/chat/completions", json=_chat("doomed", stream=True))).text)
        assert events[-2]["error"]["message"] == "engine died" and events[-1] == "[DONE]"
        registry = app.state.guard.metrics.registry
        labels = {"endpoint": "chat_completions", "mode": "flag", "decision": "error"}
        assert registry.get_sample_value("guard_requests_total", labels) == 1
        assert registry.get_sample_value("guard_upstream_errors_total", {"kind": "other"}) == 1
        assert app.state.guard.feed.open_keys == 0

    _serve(run)


@pytest.mark.parametrize(("content", "status", "param", "needle"), [
    (b"{not json", 400, None, "not valid JSON"),
    (b"[1, 2]", 400, None, "JSON list; expected a JSON object"),
    (json.dumps(_chat("clean", guard={"alpha": 2})).encode(), 400, "guard.alpha", "guard.alpha=2"),
    (json.dumps(_chat("clean", guard={"mode": "loud"})).encode(), 400, "guard.mode", "'pass', 'flag', 'abstain'"),
    (json.dumps(_chat("clean", guard="abstain")).encode(), 400, "guard", 'guard="abstain"'),
    (json.dumps(_chat("clean", n=2)).encode(), 400, "n", "send 2 separate requests"),
    (json.dumps(_chat("clean", vllm_xargs={"guard_key": "x"})).encode(), 400, "vllm_xargs.guard_key", "reserved"),
    (json.dumps(_chat("clean", model=5)).encode(), 400, "model", "expected a string"),
    (json.dumps(_chat("clean", model="gpt-4")).encode(), 404, "model", "does not exist"),
    (json.dumps(_chat("too long for the model")).encode(), 400, None, "maximum context length"),
    (json.dumps(_chat("x" * 5000)).encode(), 413, None, "larger than 4096 bytes"),
])
def test_bad_requests_get_openai_shaped_errors(content, status, param, needle):
    async def run(client, fake, app):
        answer = await client.post("/v1/chat/completions", content=content,
                                   headers={"content-type": "application/json"})
        assert answer.status_code == status
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and needle in error["message"]
        assert error["param"] == param
        assert error["type"] == ("BadRequestError" if "context length" in needle else "invalid_request_error")
        if status == 404:
            assert error["code"] == "model_not_found"

    _serve(run, max_request_bytes=4096)


def test_an_upstream_refusal_of_a_streamed_request_comes_back_as_json_with_its_status():
    async def run(client, fake, app):
        answer = await client.post("/v1/completions", json={"model": MODEL, "prompt": "too long", "stream": True})
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
        assert "maximum context length" in answer.json()["error"]["message"]
        assert app.state.guard.metrics.registry.get_sample_value("guard_requests_in_flight") == 0

    _serve(run)


def test_an_alpha_the_probe_cannot_serve_is_refused_before_anything_goes_upstream():
    async def run(client, fake, app):
        answer = await client.post("/v1/completions",
                                   json={"model": MODEL, "prompt": "clean", "guard": {"alpha": 0.05}})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "guard.alpha"
        assert "calibrated at alpha=0.1" in answer.json()["error"]["message"] and fake.requests == []

    _serve(run, probe=make_probe(with_scores=False))


@pytest.mark.parametrize(("prompt", "down", "status", "kind"), [
    ("CRASH", False, 502, "http_status"),
    ("SLOW", False, 504, "timeout"),
    ("clean", True, 502, "connection"),
])
def test_upstream_failures_become_502_or_504_and_are_counted(prompt, down, status, kind):
    async def run(client, fake, app):
        fake.down = down
        for stream in (False, True):
            answer = await client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "stream": stream})
            assert answer.status_code == status
            assert answer.json()["error"]["type"] == "server_error"
            assert answer.json()["error"]["code"] == f"upstream_{kind}"
        registry = app.state.guard.metrics.registry
        assert registry.get_sample_value("guard_upstream_errors_total", {"kind": kind}) == 2
        assert registry.get_sample_value("guard_requests_in_flight") == 0

    _serve(run)


def test_metrics_count_a_known_sequence_of_requests():
    async def run(client, fake, app):
        await client.post("/v1/chat/completions", json=_chat("clean"))
        await client.post("/v1/chat/completions", json=_chat("mixed", stream=True))
        await client.post("/v1/completions", json={"model": MODEL, "prompt": "mixed", "guard": {"mode": "abstain"}})
        await client.post("/v1/completions", json={"model": MODEL, "prompt": "clean", "guard": {"mode": "pass"}})
        await client.post("/v1/completions", content=b"{")
        text = (await client.get("/metrics")).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        def requests(endpoint: str, mode: str, decision: str) -> float:
            key = ("guard_requests_total", (("decision", decision), ("endpoint", endpoint), ("mode", mode)))
            return samples.get(key, 0.0)
        assert requests("chat_completions", "flag", "pass") == 1
        assert requests("chat_completions", "flag", "flag") == 1
        assert requests("completions", "abstain", "abstain") == 1
        assert requests("completions", "pass", "pass") == 1
        assert requests("completions", "flag", "error") == 1
        assert samples[("guard_abstentions_total", (("reason", "sentence"),))] == 1
        # clean: 2 sentences; streamed mixed: 4 (1 flagged); abstained mixed: 2 decided (1 flagged); pass-mode clean: 2
        assert samples[("guard_sentences_scored_total", ())] == 10
        assert samples[("guard_flagged_sentences_total", ())] == 2
        # the abstained (non-streamed) answer: its first 11 scores arrive in one pull, before it is decided
        assert samples[("guard_tokens_scored_total", ())] == 7 + 12 + 11 + 7
        assert samples[("guard_latency_seconds_count", ())] == 4
        assert samples[("guard_probe_latency_seconds_count", ())] > 0

    _serve(run)


def test_healthz_reports_the_upstream_and_turns_503_when_it_is_down_and_models_come_from_upstream():
    async def run(client, fake, app):
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["upstream"] == {"url": "http://upstream", "healthy": True,
                                                                          "detail": "ok"}
        assert health.json()["probe"]["any_alpha"] is True
        assert (await client.get("/v1/models")).json()["data"][0]["id"] == MODEL
        assert (await client.get("/readyz")).status_code == 200 and (await client.get("/livez")).status_code == 200
        fake.down = True
        down = await client.get("/healthz")
        assert down.status_code == 503 and down.json()["status"] == "unavailable"
        # readiness follows the engine; liveness only says the server answers
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/livez")).json() == {"status": "alive"}
        missing = await client.get("/v1/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    _serve(run)


def test_the_official_openai_client_reads_the_guard_field_unchanged():
    openai = pytest.importorskip("openai")

    async def run(client, fake, app):
        api = openai.AsyncOpenAI(api_key="unused", base_url="http://guard/v1", http_client=client)
        answer = await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "mixed"}],
                                                   extra_body={"guard": {"mode": "flag"}})
        assert answer.choices[0].message.content == SCRIPTS["mixed"].text
        assert answer.choices[0].model_extra["guard"]["decision"] == "flag"
        stream = await api.completions.create(model=MODEL, prompt="clean", stream=True)
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].text for c in chunks) == SCRIPTS["clean"].text
        assert chunks[-1].choices[0].model_extra["guard"]["decision"] == "pass"

    _serve(run)


def _serve_gated(run: Any, scoped: bool = False) -> None:
    from guard.gating import GateRule
    from guard.scope import QuestionScope
    from tests.unit.fake_upstream import make_gate

    feed = ScoreFeed()
    scripts = {q: SCRIPTS["clean"] for q in ("known", "unknown", *SCOPED)}
    fake = FakeUpstream(feed, scripts, gate={"known": (0.1, 0.9), "unknown": (0.95, 0.05)} | {
        q: (0.95, 0.05) for q in SCOPED})
    upstream = httpx.AsyncClient(transport=fake.transport(), base_url="http://upstream")
    gate = make_gate()
    if scoped:  # calibrated on questions worded "What is the capital of ...?" only
        scope = QuestionScope.fit({"capital/q0": ["What is the capital of France?", "What is the capital of Chad?"]})
        gate = Probe(gate.manifest.model_copy(update={"question_scope": scope}), gate.weight, gate.bias, gate.mean,
                     gate.scale)
    app = create_app(ServeSettings.build(served_model_name=MODEL), "http://upstream", feed, make_probe(), fake,
                     client=upstream, gate=GateRule(gate, offset=len(LABELS)))

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard") as client:
            await run(client, fake)
        await upstream.aclose()

    asyncio.run(main())


#: questions a scoped gate is (first) and is not (the others) calibrated for; the gate says p(correct) 0.05 to all
SCOPED = ("What is the capital of Peru?", "Where was Ada Lovelace born?", "What is the capital city of Peru?")


def test_a_scoped_gate_decides_on_questions_worded_as_its_calibration_and_lets_others_through_undecided():
    async def run(client, fake):
        inside = (await client.post("/v1/chat/completions", json=_chat(SCOPED[0]))).json()["choices"][0]
        assert inside["message"]["content"] == DEFAULT_ABSTAIN_MESSAGE and inside["guard"]["gate"]["in_scope"] is True
        for question in SCOPED[1:]:  # another relation, another wording: the gate does not decide
            for stream in (False, True):
                reply = await client.post("/v1/chat/completions", json=_chat(question, stream=stream))
                if stream:
                    chunks = [c for c in _events(reply.text) if c != "[DONE]"]
                    assert _streamed_text(chunks) == SCRIPTS["clean"].text
                    gate = chunks[-1]["choices"][0]["guard"]["gate"]
                else:
                    choice = reply.json()["choices"][0]
                    assert choice["message"]["content"] == SCRIPTS["clean"].text
                    gate = choice["guard"]["gate"]
                assert gate["in_scope"] is False and (gate["certified"], gate["answer"], gate["threshold"]) == (
                    False, True, None)
                assert gate["p_correct"] == pytest.approx(0.05)  # still reported, not acted on

    _serve_gated(run, scoped=True)


def test_the_gate_abstains_before_any_text_when_the_question_is_below_its_certified_threshold():
    async def run(client, fake):
        known = (await client.post("/v1/chat/completions", json=_chat("known"))).json()["choices"][0]
        assert known["message"]["content"] == SCRIPTS["clean"].text
        assert known["guard"]["gate"] == {"p_correct": pytest.approx(0.9), "alpha": 0.3, "threshold": 0.15,
                                          "certified": True, "answer": True, "in_scope": True}
        assert known["guard"]["decision"] == "pass"
        unknown = (await client.post("/v1/chat/completions", json=_chat("unknown"))).json()["choices"][0]
        assert unknown["message"]["content"] == DEFAULT_ABSTAIN_MESSAGE  # flag mode: the gate still abstains
        assert unknown["guard"]["decision"] == "abstain" and unknown["guard"]["abstained"]["kind"] == "gate"
        assert unknown["guard"]["gate"]["answer"] is False
        # streamed: not one token of the answer goes out before the gate decided
        body = (await client.post("/v1/chat/completions", json=_chat("unknown", stream=True))).text
        chunks = [c for c in _events(body) if c != "[DONE]"]
        assert _streamed_text(chunks) == DEFAULT_ABSTAIN_MESSAGE
        assert chunks[-1]["choices"][0]["guard"]["decision"] == "abstain"
        # the request opts out, or asks for an alpha the stored calibration cannot certify: no gate decision
        opted_out = (await client.post("/v1/chat/completions", json=_chat("unknown", guard={"gate": False}))).json()
        assert opted_out["choices"][0]["message"]["content"] == SCRIPTS["clean"].text
        assert opted_out["choices"][0]["guard"]["gate"] is None
        strict = (await client.post("/v1/chat/completions", json=_chat("unknown", guard={"gate_alpha": 0.001}))).json()
        gate = strict["choices"][0]["guard"]["gate"]
        assert (gate["certified"], gate["answer"], gate["threshold"]) == (False, True, None)
        assert strict["choices"][0]["message"]["content"] == SCRIPTS["clean"].text

    _serve_gated(run)


def test_a_stand_in_probe_serves_every_sentence_as_uncertain_and_says_it_is_uncalibrated():
    from guard.model_spec import ModelSpec
    from guard.probe import Probe

    stand_in = Probe.random(ModelSpec(model_type="llama", hidden_size=4, num_layers=2, fingerprint="test"), (0,),
                            labels=LABELS, undecided=True)

    async def run(client, fake, app):
        probe = (await client.get("/healthz")).json()["probe"]
        assert (probe["kind"], probe["calibrated"]) == ("stand-in", False)
        body = _chat("mixed", guard={"mode": "abstain"})
        choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
        guard = choice["guard"]
        assert choice["message"]["content"] == SCRIPTS["mixed"].text  # nothing flagged, nothing withheld
        assert [s["verdict"] for s in guard["sentences"]] == ["uncertain"] * 4
        assert (guard["decision"], guard["calibrated"], guard["counts"]["uncertain"]) == ("pass", False, 4)

    _serve(run, probe=stand_in)


def test_a_calibrated_probe_reports_itself_calibrated():
    async def run(client, fake, app):
        assert (await client.get("/healthz")).json()["probe"]["calibrated"] is True
        guard = (await client.post("/v1/chat/completions", json=_chat("clean"))).json()["choices"][0]["guard"]
        assert guard["calibrated"] is True

    _serve(run)
