"""Upstream faults and guard failures, in guard serve and guard proxy, streamed and not.

An upstream that fails produced no answer: 502/504 (or, once a stream has started, one error event
and ``[DONE]``), counted by kind, whatever ``on_guard_failure`` says. An answer the guard could not
judge (scores missing, reader failed) follows ``on_guard_failure``: ``fail_open`` passes it marked
``verified: false``, ``fail_closed`` abstains with ``guard.abstained.kind: "guard_failure"``.
"""

from __future__ import annotations

import pytest

from guard.policy import DEFAULT_ABSTAIN_MESSAGE
from tests.unit.fake_faults import SCRIPTS, chat, proxy, sample, serve
from tests.unit.fake_proxy import ANSWERS
from tests.unit.fake_upstream import events, streamed_text

# prompt -> (status before any event, error code, metric kind); "event": the failure arrives mid-stream
SERVE_FAULTS = {
    "down": (502, "upstream_connection", "connection"),
    "SLOW": (504, "upstream_timeout", "timeout"),
    "CRASH": (502, "upstream_http_status", "http_status"),
    "GARBAGE": (502, "upstream_protocol", "protocol"),
    "BADEVENT": ("event", "upstream_protocol", "protocol"),
    "DROP": ("event", "upstream_connection", "connection"),
    "PEERCLOSED": ("event", "upstream_connection", "connection"),
    "TRUNCATED": ("event", "upstream_protocol", "protocol"),
}


@pytest.mark.parametrize("fault", sorted(SERVE_FAULTS))
@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_serve_maps_every_upstream_fault_to_502_or_504_counted_and_keeps_serving(fault, policy):
    status, code, kind = SERVE_FAULTS[fault]

    async def run(client, fake, app):
        fake.down = fault == "down"
        prompt = "clean" if fault == "down" else fault
        for stream in (False, True):
            if (status == "event" and not stream) or (fault == "GARBAGE" and stream):
                continue  # only a stream can break after it started; a stream that is not SSE is BADEVENT's case
            answer = await client.post("/v1/chat/completions", json=chat(prompt, stream=stream))
            if status == "event":
                got = events(answer.text)
                assert answer.status_code == 200 and got[-1] == "[DONE]"
                error = got[-2]["error"]
            else:
                assert answer.status_code == status, answer.text
                error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert (error["type"], error["code"]) == ("server_error", code) and "upstream" in error["message"]
        expected = 1 if status == "event" or fault == "GARBAGE" else 2
        assert sample(app, "guard_upstream_errors_total", kind=kind) == expected
        assert sample(app, "guard_requests_in_flight") == 0 and app.state.guard.feed.open_keys == 0
        fake.down = False
        assert (await client.post("/v1/chat/completions", json=chat("clean"))).status_code == 200

    serve(run, on_guard_failure=policy)


PROXY_FAULTS = {
    "DOWN": (502, "upstream_connection", "connection"),
    "SLOW": (504, "upstream_timeout", "timeout"),
    "CRASH": (502, "upstream_http_status", "http_status"),
    "GARBAGE": (502, "upstream_protocol", "protocol"),
    "BADEVENT": ("event", "upstream_protocol", "protocol"),
    "DROP": ("event", "upstream_connection", "connection"),
}


@pytest.mark.parametrize("fault", sorted(PROXY_FAULTS))
@pytest.mark.parametrize("mode", ["flag", "abstain"])
def test_proxy_maps_every_upstream_fault_to_502_or_504_counted_and_keeps_serving(fault, mode):
    status, code, kind = PROXY_FAULTS[fault]

    async def run(client, made):
        for stream in (False, True):
            if status == "event" and not stream:
                continue
            if fault == "GARBAGE" and stream:
                continue  # a 200 stream that is not SSE is BADEVENT's case
            answer = await client.post("/v1/chat/completions", json=chat(fault, stream=stream, guard={"mode": mode}))
            if status == "event":
                got = events(answer.text)
                assert answer.status_code == 200 and got[-1] == "[DONE]"
                error = got[-2]["error"]
                if mode == "abstain":  # nothing unread leaves the proxy
                    assert streamed_text(got[:-2]) == ""
            else:
                assert answer.status_code == status, answer.text
                error = answer.json()["error"]
            assert (error["type"], error["code"]) == ("server_error", code)
        assert made.reader.requests == []
        assert sample(made.app, "guard_requests_in_flight") == 0
        assert (await client.post("/v1/chat/completions", json=chat("capital"))).status_code == 200
        assert sample(made.app, "guard_upstream_errors_total", kind=kind) >= 1

    proxy().serve(run)


def test_every_verified_answer_says_so():
    async def run(client, fake, app):
        answer = (await client.post("/v1/chat/completions", json=chat("clean"))).json()
        assert (answer["choices"][0]["guard"]["verified"], answer["choices"][0]["guard"]["error"]) == (True, None)
        summary = events((await client.post("/v1/chat/completions", json=chat("clean", stream=True))).text)[-2]
        assert summary["choices"][0]["guard"]["verified"] is True

    serve(run)


@pytest.mark.parametrize("stream", [False, True])
def test_serve_fail_open_passes_an_answer_whose_scores_never_arrive_marked_unverified(stream):
    async def run(client, fake, app):
        answer = await client.post("/v1/chat/completions", json=chat("mixed", stream=stream, guard={"mode": "abstain"}))
        if stream:
            got = events(answer.text)
            text, guard = streamed_text(got[:-2]), got[-2]["choices"][0]["guard"]
        else:
            choice = answer.json()["choices"][0]
            text, guard = choice["message"]["content"], choice["guard"]
        assert text == SCRIPTS["mixed"].text  # the flagged middle sentence was never judged: it passes
        assert (guard["decision"], guard["verified"], guard["error"]["kind"]) == ("pass", False, "scores_missing")
        assert "score_timeout" in guard["error"]["message"] and guard["counts"]["tokens_scored"] == 0
        assert sample(app, "guard_failures_total", kind="scores_missing", policy="fail_open") == 1
        assert sample(app, "guard_upstream_errors_total", kind="scores_missing") == 1

    serve(run, silent=True, score_timeout=0.05)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["flag", "abstain"])
def test_serve_fail_closed_abstains_when_the_scores_never_arrive(stream, mode):
    async def run(client, fake, app):
        answer = await client.post("/v1/chat/completions", json=chat("clean", stream=stream, guard={"mode": mode}))
        if stream:
            got = events(answer.text)
            text, guard = streamed_text(got[:-2]), got[-2]["choices"][0]["guard"]
            finish = [c["choices"][0]["finish_reason"] for c in got[:-2] if c["choices"][0].get("finish_reason")]
            assert finish == ["stop"]
        else:
            choice = answer.json()["choices"][0]
            text, guard = choice["message"]["content"], choice["guard"]
        # abstain mode never released unverified text; flag mode streamed it before the end, then says so
        expected = DEFAULT_ABSTAIN_MESSAGE if mode == "abstain" or not stream else SCRIPTS["clean"].text + \
            DEFAULT_ABSTAIN_MESSAGE
        assert text == expected
        assert (guard["decision"], guard["abstained"]["kind"], guard["verified"]) == ("abstain", "guard_failure", False)
        assert sample(app, "guard_failures_total", kind="scores_missing", policy="fail_closed") == 1
        assert sample(app, "guard_abstentions_total", reason="guard_failure") == 1

    serve(run, silent=True, score_timeout=0.05, on_guard_failure="fail_closed")


def test_serve_fail_closed_leaves_score_only_requests_unchanged_but_unverified():
    async def run(client, fake, app):
        choice = (await client.post("/v1/chat/completions", json=chat("clean", guard={"mode": "pass"}))).json()[
            "choices"][0]
        assert choice["message"]["content"] == SCRIPTS["clean"].text
        assert (choice["guard"]["decision"], choice["guard"]["verified"]) == ("pass", False)

    serve(run, silent=True, score_timeout=0.05, on_guard_failure="fail_closed")


READER_FAULTS = ["down", "status", "slow", "scores_missing"]


def _proxy_with(fault: str, policy: str):
    made = proxy(slow_reader=fault == "slow", on_guard_failure=policy, score_timeout=0.05)
    made.reader.down = fault == "down"
    made.reader.status = 500 if fault == "status" else 200
    made.reader.drop_last = fault == "scores_missing"
    return made


@pytest.mark.parametrize("fault", READER_FAULTS)
@pytest.mark.parametrize("stream", [False, True])
def test_proxy_fail_open_passes_the_answer_marked_unverified_when_the_reader_fails(fault, stream):
    kind = "scores_missing" if fault == "scores_missing" else "reader"

    async def run(client, made):
        answer = await client.post("/v1/chat/completions", json=chat("wrong", stream=stream, guard={"mode": "abstain"}))
        assert answer.status_code == 200
        if stream:
            got = events(answer.text)
            text, guard = streamed_text(got[:-2]), got[-2]["choices"][0]["guard"]
        else:
            choice = answer.json()["choices"][0]
            text, guard = choice["message"]["content"], choice["guard"]
        if kind == "reader":  # nothing was judged: the upstream's answer passes
            assert text == ANSWERS["wrong"] and guard["decision"] == "pass"
        assert (guard["verified"], guard["error"]["kind"]) == (False, kind)
        assert sample(made.app, "guard_failures_total", kind=kind, policy="fail_open") == 1

    _proxy_with(fault, "fail_open").serve(run)


@pytest.mark.parametrize("fault", READER_FAULTS)
@pytest.mark.parametrize("stream", [False, True])
def test_proxy_fail_closed_abstains_when_the_reader_fails(fault, stream):
    kind = "scores_missing" if fault == "scores_missing" else "reader"

    async def run(client, made):
        answer = await client.post("/v1/chat/completions",
                                   json=chat("capital", stream=stream, guard={"mode": "abstain"}))
        assert answer.status_code == 200
        if stream:
            got = events(answer.text)
            text, guard = streamed_text(got[:-2]), got[-2]["choices"][0]["guard"]
        else:
            choice = answer.json()["choices"][0]
            text, guard = choice["message"]["content"], choice["guard"]
        assert text == DEFAULT_ABSTAIN_MESSAGE  # the true answer is withheld too: it was not verified
        assert (guard["decision"], guard["abstained"]["kind"], guard["error"]["kind"]) == ("abstain", "guard_failure",
                                                                                           kind)
        assert sample(made.app, "guard_failures_total", kind=kind, policy="fail_closed") == 1
        assert sample(made.app, "guard_requests_in_flight") == 0 and made.feed.open_keys == 0

    _proxy_with(fault, "fail_closed").serve(run)
