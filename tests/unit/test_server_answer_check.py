"""guard serve's answer check over a fake upstream: whole answers held, then sent or abstained on as certified."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.router import create_app
from adapters.http.settings import ServeSettings
from guard.gating import GateRule
from guard.policy import DEFAULT_ABSTAIN_MESSAGE
from tests.unit.fake_upstream import GOOD, LABELS, MODEL, FakeUpstream, Script, make_gate, make_probe
from tests.unit.fake_upstream import events as _events
from tests.unit.fake_upstream import streamed_text as _streamed_text

ANSWER = Script([("Paris", GOOD), (" is", GOOD), (" in", GOOD), (" France", GOOD), (".", GOOD), (" Yes", GOOD),
                 (".", GOOD)])
#: the question looks easy to the gate for both; only the answer's rows tell them apart
SURE, UNSURE = (0.1, 0.9), (0.95, 0.05)


#: what the model says when asked again: the answer every time, or something else twice in three
SAMPLES = {"right": ["Paris.", "It is Lyon.", "The answer is Lyon"], "wrong": ["Paris", "Paris is in France.", "paris"]}


def _serve(run: Any, answer_check: bool = True, honours_logprobs: bool = True, sampled: bool = False,
           **settings: Any) -> None:
    feed = ScoreFeed()
    fake = FakeUpstream(feed, {"right": ANSWER, "wrong": ANSWER}, gate={"right": SURE, "wrong": SURE},
                        answer_gate={"right": SURE, "wrong": UNSURE}, honours_logprobs=honours_logprobs,
                        samples=SAMPLES)
    upstream = httpx.AsyncClient(transport=fake.transport(), base_url="http://upstream")
    gate = GateRule(make_gate(answer_check=answer_check, sampled=sampled), offset=len(LABELS))
    app = create_app(ServeSettings.build(served_model_name=MODEL, **settings), "http://upstream", feed, make_probe(),
                     fake, client=upstream, gate=gate)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard") as client:
            await run(client, fake)
        await upstream.aclose()

    asyncio.run(main())


def _chat(prompt: str, **guard: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "guard": {"mode": "abstain", "answer_check": True, **guard}}


def test_abstain_mode_answers_the_certified_answers_whole_and_abstains_on_the_rest():
    async def run(client, fake):
        right = (await client.post("/v1/chat/completions", json=_chat("right"))).json()["choices"][0]
        assert right["message"]["content"] == ANSWER.text
        check = right["guard"]["answer_check"]
        assert (check["answer"], check["certified"], check["threshold"], check["alpha"]) == (True, True, 0.15, 0.3)
        assert check["p_correct"] == pytest.approx(0.9, abs=1e-4) and check["answer_rows"] == len(ANSWER.tokens)
        assert right["guard"]["gate"]["answer"] is True  # the gate let both questions through
        assert check["logprob"] == pytest.approx(-0.25) and right["logprobs"] is None  # asked for by the guard
        assert fake.requests[-1]["logprobs"] is True
        wrong = (await client.post("/v1/chat/completions", json=_chat("wrong"))).json()["choices"][0]
        assert wrong["message"]["content"] == DEFAULT_ABSTAIN_MESSAGE
        assert wrong["guard"]["decision"] == "abstain" and wrong["guard"]["abstained"]["kind"] == "answer"
        assert wrong["guard"]["answer_check"]["p_correct"] == pytest.approx(0.05, abs=1e-4)
        assert "< certified threshold 0.15" in wrong["guard"]["abstained"]["detail"]
        assert wrong["guard"]["abstained"]["alpha"] == 0.3 != wrong["guard"]["alpha"]  # the check's alpha, not 0.1
        # streamed: nothing of the answer leaves before it is judged whole
        body = (await client.post("/v1/chat/completions", json=_chat("wrong") | {"stream": True})).text
        chunks = [c for c in _events(body) if c != "[DONE]"]
        assert _streamed_text(chunks) == DEFAULT_ABSTAIN_MESSAGE
        assert chunks[-1]["choices"][0]["guard"]["abstained"]["kind"] == "answer"
        body = (await client.post("/v1/chat/completions", json=_chat("right") | {"stream": True})).text
        chunks = [c for c in _events(body) if c != "[DONE]"]
        assert _streamed_text(chunks) == ANSWER.text
        assert chunks[-1]["choices"][0]["guard"]["answer_check"]["logprob"] == pytest.approx(-0.25)
        assert all(c["choices"][0].get("logprobs") is None for c in chunks if c["choices"])
        # the completions endpoint too: logprobs asked for as a count, the answer judged the same way
        done = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "wrong",
                                                           "guard": {"mode": "abstain", "answer_check": True}})).json()
        assert fake.requests[-1]["logprobs"] == 0 and done["choices"][0]["text"] == DEFAULT_ABSTAIN_MESSAGE
        metrics = (await client.get("/metrics")).text
        abstained = {s.labels["reason"]: s.value for f in text_string_to_metric_families(metrics)
                     if f.name == "guard_abstentions" for s in f.samples if s.name.endswith("_total")}
        assert abstained["answer"] == 3

    _serve(run)


def test_an_alpha_nothing_certifies_abstains_on_every_answer_and_other_modes_only_report():
    async def run(client, fake):
        strict = (await client.post("/v1/chat/completions", json=_chat("right", answer_alpha=0.001))).json()
        choice = strict["choices"][0]
        assert choice["message"]["content"] == DEFAULT_ABSTAIN_MESSAGE
        assert (choice["guard"]["answer_check"]["certified"], choice["guard"]["answer_check"]["threshold"]) == (False,
                                                                                                                None)
        assert "certifies no threshold at answer_alpha 0.001" in choice["guard"]["abstained"]["detail"]
        flagged = (await client.post("/v1/chat/completions", json=_chat("wrong", mode="flag") | {"logprobs": True})
                   ).json()["choices"][0]
        assert flagged["logprobs"]["content"][0]["logprob"] == pytest.approx(-0.25)  # the client's own: kept
        assert flagged["message"]["content"] == ANSWER.text and flagged["guard"]["decision"] == "pass"
        assert flagged["guard"]["answer_check"]["answer"] is False  # reported, not acted on
        plain = (await client.post("/v1/chat/completions", json=_chat("wrong", answer_check=False))).json()
        assert "answer_check" not in plain["choices"][0]["guard"]

    _serve(run)


def test_asking_for_an_answer_check_the_server_cannot_make_is_a_400_naming_the_field():
    async def run(client, fake):
        reply = await client.post("/v1/chat/completions", json=_chat("right"))
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["param"] == "guard.answer_check" and "calibrate-answers --ship" in error["message"]
        bad = await client.post("/v1/chat/completions", json=_chat("right", answer_alpha=2))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "guard.answer_alpha"

    _serve(run, answer_check=False)


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_an_answer_the_check_cannot_judge_is_a_guard_failure_under_the_servers_policy(policy):
    async def run(client, fake):
        for stream in (False, True):
            reply = await client.post("/v1/chat/completions", json=_chat("wrong") | {"stream": stream})
            if stream:
                chunks = [c for c in _events(reply.text) if c != "[DONE]"]
                text, guard = _streamed_text(chunks), chunks[-1]["choices"][0]["guard"]
            else:
                choice = reply.json()["choices"][0]
                text, guard = choice["message"]["content"], choice["guard"]
            assert guard["verified"] is False and guard["error"]["kind"] == "answer_check"
            assert "log-probabilities" in guard["error"]["message"] and "answer_check" not in guard
            if policy == "fail_closed":
                assert text == DEFAULT_ABSTAIN_MESSAGE and guard["abstained"]["kind"] == "guard_failure"
            else:
                assert text == ANSWER.text and guard["decision"] == "pass"  # unjudged, said so, not withheld
        metrics = (await client.get("/metrics")).text
        failures = {(s.labels["kind"], s.labels["policy"]): s.value for f in text_string_to_metric_families(metrics)
                    if f.name == "guard_guard_failures" for s in f.samples if s.name.endswith("_total")}
        assert failures[("answer_check", policy)] == 2

    _serve(run, honours_logprobs=False, on_guard_failure=policy)


def test_answer_samples_ask_the_model_again_unguarded_and_their_agreement_decides():
    async def run(client, fake):
        # the answer's rows say "right" is right and "wrong" wrong; the samples say the opposite, and decide
        right = (await client.post("/v1/chat/completions", json=_chat("right", answer_samples=True) | {
            "temperature": 0.1, "top_p": 0.5, "seed": 3, "max_tokens": 50})).json()["choices"][0]
        check = right["guard"]["answer_check"]
        assert (check["agreement"], check["samples"]) == (pytest.approx(1 / 3, abs=1e-6), 3)
        assert right["message"]["content"] == DEFAULT_ABSTAIN_MESSAGE and check["answer"] is False
        assert "33% of 3 samples say the same" in right["guard"]["abstained"]["detail"]
        sent = fake.sample_requests[-1]
        assert (sent["n"], sent["temperature"], sent["max_tokens"], sent["stream"]) == (3, 0.7, 16, False)
        assert not {"top_p", "logprobs", "return_token_ids", "guard"} & set(sent)  # calibrated, unguarded
        assert sent["messages"] == [{"role": "user", "content": "right"}] and "vllm_xargs" not in sent
        assert sent["seed"] != 3  # the client's seed is the client's answer's, not the samples'
        body = (await client.post("/v1/chat/completions", json=_chat("wrong", answer_samples=True) | {"stream": True})
                ).text
        chunks = [c for c in _events(body) if c != "[DONE]"]
        assert _streamed_text(chunks) == ANSWER.text  # every sample says Paris: answered, whole
        assert chunks[-1]["choices"][0]["guard"]["answer_check"]["agreement"] == 1.0
        done = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "wrong", "guard": {
            "mode": "abstain", "answer_check": True, "answer_samples": True}})).json()["choices"][0]
        assert done["text"] == ANSWER.text and fake.sample_requests[-1]["prompt"] == "wrong"
        seeds = [r["seed"] for r in fake.sample_requests]
        assert len(set(seeds)) == 3  # "right", "wrong" chatted, and "wrong" as a prompt: three conversations
        plain = (await client.post("/v1/chat/completions", json=_chat("wrong"))).json()["choices"][0]
        assert plain["guard"]["answer_check"]["agreement"] is None and len(fake.sample_requests) == 3
        again = await client.post("/v1/chat/completions", json=_chat("right", answer_samples=True) | {"seed": 9})
        assert again.json()["choices"][0]["guard"]["answer_check"]["agreement"] == check["agreement"]
        assert fake.sample_requests[-1]["seed"] == seeds[0]  # the same conversation draws the same samples

    _serve(run, sampled=True)


def test_answer_samples_need_the_answer_check_and_a_gate_calibrated_with_samples():
    async def run(client, fake):
        reply = await client.post("/v1/chat/completions", json=_chat("right", answer_samples=True))
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "guard.answer_samples"
        assert "calibrate-answers --ship" in reply.json()["error"]["message"]
        alone = await client.post("/v1/chat/completions", json=_chat("right", answer_check=False, answer_samples=True))
        assert alone.status_code == 400 and "guard.answer_check=true" in alone.json()["error"]["message"]
        assert not fake.sample_requests

    _serve(run)


def test_samples_that_fail_leave_the_answer_unjudged_under_the_failure_policy():
    async def run(client, fake):
        fake.samples.pop("right")  # the upstream refuses the samples' request
        choice = (await client.post("/v1/chat/completions", json=_chat("right", answer_samples=True))).json()[
            "choices"][0]
        assert choice["message"]["content"] == DEFAULT_ABSTAIN_MESSAGE
        assert choice["guard"]["error"]["kind"] == "answer_check" and "samples failed" in choice["guard"]["error"][
            "message"]

    _serve(run, sampled=True, on_guard_failure="fail_closed")
