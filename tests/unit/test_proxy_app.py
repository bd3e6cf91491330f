"""guard proxy in-process, non-streamed: a foreign API and the reader's server behind mock transports."""

from __future__ import annotations

import httpx
import pytest

from guard.policy import DEFAULT_ABSTAIN_MESSAGE
from tests.unit.fake_proxy import (
    ANSWERS,
    ENGINE_GUARD,
    READER,
    UPSTREAM,
    Proxy,
    chat,
    counts,
)
from tests.unit.fake_upstream import BAD, GOOD, LABELS


def test_forwards_the_request_unchanged_but_for_guard_and_passes_the_authorization_header_on():
    async def run(client, proxy):
        body = chat("capital", temperature=0.3, top_p=0.9, seed=7, guard={"mode": "flag"})
        answer = await client.post("/v1/chat/completions", json=body,
                                   headers={"Authorization": "Bearer sk-secret", "OpenAI-Organization": "org-1",
                                            "X-Internal": "do-not-forward"})
        assert answer.status_code == 200
        sent = proxy.foreign.requests[-1]
        assert sent["path"] == "/v1/chat/completions"
        assert sent["body"] == {k: v for k, v in body.items() if k != "guard"}  # no vllm_xargs, no return_token_ids
        assert sent["headers"]["authorization"] == "Bearer sk-secret"
        assert sent["headers"]["openai-organization"] == "org-1" and "x-internal" not in sent["headers"]
        assert "sk-secret" not in (await client.get("/metrics")).text

    Proxy().serve(run)


def test_each_choice_gets_a_reader_guard_field_with_verdicts_in_answer_text_terms():
    async def run(client, proxy):
        answer = (await client.post("/v1/chat/completions", json=chat("wrong"))).json()
        choice = answer["choices"][0]
        text = ANSWERS["wrong"]
        assert choice["message"]["content"] == text and choice["logprobs"] == {"content": []}
        guard = choice["guard"]
        assert (guard["source"], guard["reader_model"], guard["decision"], guard["gate"]) == ("reader", READER, "flag",
                                                                                            None)
        assert [s["verdict"] for s in guard["sentences"]] == ["supported", "flagged"]
        assert [text[s["start"]:s["end"]].strip() for s in guard["sentences"]] == ["Paris is nice.",
                                                                                   "The capital of France is Berlin."]
        prefix = len(proxy.reader.requests[-1]["prompt"]) - guard["counts"]["tokens"]
        # every answer token has a score, the last one too: the reader reads, it does not generate
        assert [t["position"] for t in guard["tokens"]] == list(range(prefix, prefix + guard["counts"]["tokens"]))
        assert guard["counts"]["tokens_scored"] == guard["counts"]["tokens"] == 11
        assert guard["tokens"][0]["p"] == pytest.approx(dict(zip(LABELS, GOOD)))
        assert guard["tokens"][-1]["p"] == pytest.approx(dict(zip(LABELS, BAD)))

    Proxy().serve(run)


def test_the_reader_reads_question_then_answer_with_one_token_a_fresh_guard_key_and_greedy_sampling():
    async def run(client, proxy):
        await client.post("/v1/chat/completions", json=chat("capital"))
        await client.post("/v1/chat/completions", json=chat("capital"))
        first, second = proxy.reader.requests
        question = proxy.prompts.chat_prefix([{"role": "user", "content": "capital"}])
        assert first["prompt"] == question + proxy.prompts.answer(ANSWERS["capital"])[0]
        assert (first["model"], first["max_tokens"], first["temperature"], first["return_token_ids"]) == (READER, 1, 0,
                                                                                                         True)
        assert len(first["vllm_xargs"]["guard_key"]) == 32
        assert first["vllm_xargs"]["guard_key"] != second["vllm_xargs"]["guard_key"]
        assert proxy.feed.open_keys == 0

    Proxy().serve(run)


def test_completions_are_read_as_the_prompt_followed_by_the_answer():
    async def run(client, proxy):
        answer = (await client.post("/v1/completions", json={"model": "m", "prompt": "wrong"})).json()
        choice = answer["choices"][0]
        assert choice["text"] == ANSWERS["wrong"]
        assert [s["verdict"] for s in choice["guard"]["sentences"]] == ["supported", "flagged"]
        assert proxy.reader.requests[-1]["prompt"] == (proxy.prompts.completion_prefix("wrong")
                                                       + proxy.prompts.answer(ANSWERS["wrong"])[0])

    Proxy().serve(run)


def test_abstain_mode_replaces_a_flagged_answer_and_keeps_a_supported_one():
    async def run(client, proxy):
        options = {"guard": {"mode": "abstain", "abstain_message": "[withheld]"}}
        flagged = (await client.post("/v1/chat/completions", json=chat("wrong", **options))).json()["choices"][0]
        assert flagged["message"]["content"] == "[withheld]" and flagged["finish_reason"] == "stop"
        assert flagged["logprobs"] is None
        reason = flagged["guard"]["abstained"]
        assert (flagged["guard"]["decision"], reason["kind"], reason["sentence"]) == ("abstain", "sentence", 1)
        kept = (await client.post("/v1/chat/completions", json=chat("capital", **options))).json()["choices"][0]
        assert kept["message"]["content"] == ANSWERS["capital"] and kept["guard"]["decision"] == "pass"

    Proxy().serve(run)
    Proxy(mode="abstain").serve(lambda client, proxy: _default_abstains(client))  # the server's default mode


async def _default_abstains(client: httpx.AsyncClient) -> None:
    choice = (await client.post("/v1/completions", json={"model": "m", "prompt": "wrong"})).json()["choices"][0]
    assert choice["text"] == DEFAULT_ABSTAIN_MESSAGE and choice["guard"]["mode"] == "abstain"


def test_every_choice_of_n_is_read_in_its_own_reader_request():
    async def run(client, proxy):
        answer = (await client.post("/v1/chat/completions", json=chat("pick", n=3))).json()
        decisions = [c["guard"]["decision"] for c in answer["choices"]]
        assert decisions == ["pass", "flag", "pass"]
        assert [c["message"]["content"] for c in answer["choices"]] == [ANSWERS["capital"], ANSWERS["wrong"],
                                                                        ANSWERS["capital"]]
        assert len(proxy.reader.requests) == 3
        assert len({r["vllm_xargs"]["guard_key"] for r in proxy.reader.requests}) == 3
        assert proxy.foreign.requests[-1]["body"]["n"] == 3

    Proxy().serve(run)


def test_an_upstream_guard_field_passes_through_unchanged_and_the_reader_is_not_asked():
    async def run(client, proxy):
        choice = (await client.post("/v1/chat/completions", json=chat("GUARDED"))).json()["choices"][0]
        assert choice["guard"] == ENGINE_GUARD and choice["message"]["content"] == ANSWERS["GUARDED"]
        assert proxy.reader.requests == []

    Proxy().serve(run)


@pytest.mark.parametrize(("body", "param"), [
    (chat("capital", guard={"alpha": 1.5}), "guard.alpha"),
    (chat("capital", guard={"mode": "steer"}), "guard.mode"),
    (chat("capital", guard="abstain"), "guard"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "prompt": [1, 2, 3]}, "prompt"),
    ({"model": "m", "prompt": "capital", "echo": True}, "echo"),
])
def test_bad_requests_get_400_naming_the_field_before_the_upstream_is_called(body, param):
    async def run(client, proxy):
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        answer = await client.post(path, json=body)
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == param and answer.json()["error"]["type"] == "invalid_request_error"
        assert proxy.foreign.requests == [] and proxy.reader.requests == []

    Proxy().serve(run)


@pytest.mark.parametrize(("question", "status", "kind"), [
    ("CRASH", 502, "http_status"), ("SLOW", 504, "timeout"), ("DOWN", 502, "connection"), ("GARBAGE", 502, "protocol"),
])
def test_upstream_failures_become_502_or_504_in_openai_shape_and_are_counted(question, status, kind):
    async def run(client, proxy):
        answer = await client.post("/v1/chat/completions", json=chat(question))
        assert answer.status_code == status
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == f"upstream_{kind}"
        assert UPSTREAM in error["message"]
        samples = counts(proxy.app)
        assert samples[("guard_upstream_errors_total", (("kind", kind),))] == 1
        assert samples[("guard_requests_total", (("decision", "error"), ("endpoint", "chat_completions"),
                                                  ("mode", "flag")))] == 1

    Proxy().serve(run)


@pytest.mark.parametrize(("question", "status", "code"), [("UNAUTHORIZED", 401, "invalid_api_key"),
                                                          ("LIMIT", 429, "rate_limit_exceeded")])
def test_upstream_4xx_pass_through_with_their_status_in_openai_shape(question, status, code):
    async def run(client, proxy):
        answer = await client.post("/v1/chat/completions", json=chat(question))
        assert answer.status_code == status and answer.json()["error"]["code"] == code
        assert proxy.reader.requests == []

    Proxy().serve(run)


@pytest.mark.parametrize("failure", ["down", "status", "wrong_length", "too_long"])
def test_a_reader_failure_passes_the_answer_marked_unverified_naming_the_reader_and_counted(failure):
    proxy = Proxy(max_model_len=16) if failure == "too_long" else Proxy()
    proxy.reader.down = failure == "down"
    proxy.reader.status = 500 if failure == "status" else 200
    proxy.reader.wrong_length = failure == "wrong_length"

    async def run(client, proxy):
        system = {"role": "system", "content": "Answer in one or two short sentences, please."}
        answer = await client.post("/v1/chat/completions", json={"model": "m", "messages": [system, *chat("wrong")[
            "messages"]]})
        assert answer.status_code == 200  # on_guard_failure defaults to fail_open
        choice = answer.json()["choices"][0]
        assert choice["message"]["content"] == ANSWERS["wrong"]
        guard = choice["guard"]
        assert (guard["decision"], guard["verified"], guard["error"]["kind"]) == ("pass", False, "reader")
        assert "the reader" in guard["error"]["message"]
        if failure == "too_long":
            assert "max_model_len" in guard["error"]["message"]
        assert counts(proxy.app)[("guard_upstream_errors_total", (("kind", "reader"),))] == 1
        assert counts(proxy.app)[("guard_failures_total", (("kind", "reader"), ("policy", "fail_open")))] == 1
        assert proxy.feed.open_keys == 0

    proxy.serve(run)


def test_missing_reader_scores_are_decided_without_and_counted():
    proxy = Proxy(score_timeout=0.05)
    proxy.reader.drop_last = True

    async def run(client, proxy):
        guard = (await client.post("/v1/chat/completions", json=chat("capital"))).json()["choices"][0]["guard"]
        assert guard["counts"]["tokens_scored"] == guard["counts"]["tokens"] - 1
        assert guard["sentences"][0]["verdict"] == "supported"  # pooled over the tokens that were scored
        assert counts(proxy.app)[("guard_upstream_errors_total", (("kind", "scores_missing"),))] == 1

    proxy.serve(run)


def test_models_come_from_the_upstream_with_the_clients_credentials_and_healthz_reports_both():
    async def run(client, proxy):
        models = await client.get("/v1/models", headers={"Authorization": "Bearer sk-good"})
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "foreign-model"
        refused = await client.get("/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        health = await client.get("/healthz")
        body = health.json()
        assert health.status_code == 200 and body["status"] == "ok"
        assert body["upstream"] == {"url": UPSTREAM, "healthy": True, "status_code": 401, "detail": "reachable"}
        assert body["reader"]["healthy"] and body["reader"]["model"] == READER
        proxy.reader.down = True
        down = await client.get("/healthz")
        assert down.status_code == 503 and down.json()["reader"]["healthy"] is False

    Proxy().serve(run)


def test_metrics_count_one_request_per_post_with_its_most_severe_decision():
    async def run(client, proxy):
        await client.post("/v1/chat/completions", json=chat("pick", n=2))  # pass + flag: counted once, as flag
        await client.post("/v1/completions", json={"model": "m", "prompt": "capital", "guard": {"mode": "pass"}})
        await client.post("/v1/chat/completions", content=b"{oops")
        samples = counts(proxy.app)
        assert samples[("guard_requests_total", (("decision", "flag"), ("endpoint", "chat_completions"),
                                                  ("mode", "flag")))] == 1
        assert samples[("guard_requests_total", (("decision", "pass"), ("endpoint", "completions"),
                                                  ("mode", "pass")))] == 1
        assert samples[("guard_requests_total", (("decision", "error"), ("endpoint", "chat_completions"),
                                                  ("mode", "flag")))] == 1
        assert samples[("guard_sentences_scored_total", ())] == 4
        assert samples[("guard_flagged_sentences_total", ())] == 1
        assert samples[("guard_latency_seconds_count", ())] == 2 and samples[("guard_requests_in_flight", ())] == 0

    Proxy().serve(run)


def test_steering_is_refused_in_proxy_mode_with_the_reason_and_the_alternative():
    async def run(client, proxy):
        answer = await client.post("/v1/chat/completions", json=chat("capital", guard={"mode": "steer"}))
        message = answer.json()["error"]["message"]
        assert answer.status_code == 400 and "foreign model" in message and "guard serve" in message
        checked = await client.post("/v1/chat/completions", json=chat("capital", guard={"answer_check": True}))
        error = checked.json()["error"]
        assert checked.status_code == 400 and error["param"] == "guard.answer_check"
        assert "guard serve" in error["message"]
        assert proxy.reader.requests == []  # refused before anything is read

    Proxy().serve(run)


def test_an_upstream_guarded_proxy_passes_the_guard_object_on_so_steering_reaches_the_upstream_engine():
    async def run(client, proxy):
        options = {"mode": "steer", "steer_how": "regenerate"}
        answer = await client.post("/v1/chat/completions", json=chat("GUARDED", guard=options))
        assert answer.status_code == 200 and proxy.foreign.requests[-1]["body"]["guard"] == options
        assert answer.json()["choices"][0]["guard"] == ENGINE_GUARD and proxy.reader.requests == []
        await client.post("/v1/chat/completions", json=chat("GUARDED"))
        assert "guard" not in proxy.foreign.requests[-1]["body"]  # nothing to pass on: the upstream's defaults

    Proxy(upstream_guarded=True).serve(run)


# without the header (an older guard serve) a stream's mode shows only after its 200 went out: JSON answers only
@pytest.mark.parametrize(("question", "stream"), [("GUARDED", False), ("GUARDED", True), ("GUARDED_QUIETLY", False)])
def test_a_mode_a_guarded_upstream_overrides_is_refused_naming_the_fix_never_downgraded(question, stream):
    async def run(client, proxy):
        answer = await client.post("/v1/chat/completions",
                                   json=chat(question, stream=stream, guard={"mode": "abstain"}))
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["code"] == "mode_unavailable" and error["param"] == "guard.mode"
        assert "--upstream-guarded" in error["message"] and "'flag'" in error["message"]
        assert proxy.reader.requests == []
        same = await client.post("/v1/chat/completions", json=chat(question, stream=stream, guard={"mode": "flag"}))
        assert same.status_code == 200  # the upstream's own mode is honoured as it is

    Proxy().serve(run)


def test_guard_serve_names_its_default_mode_in_a_header_of_every_answer():
    from tests.unit.fake_faults import serve

    async def run(client, upstream, app):
        for body in (chat("clean"), chat("clean", stream=True), {"messages": "bad"}):
            answer = await client.post("/v1/chat/completions", json=body)
            assert answer.headers["x-guard-default-mode"] == "abstain", answer.status_code

    serve(run, mode="abstain")
