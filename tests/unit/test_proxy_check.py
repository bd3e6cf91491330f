"""guard proxy's judge endpoint (POST /v1/guard/check): a question and an answer give the verdicts the proxy gives
the same answer to the same question when it relays it; bad checks are refused naming the field; the upstream is
never called; a reader failure follows the failure policy."""

from __future__ import annotations

import pytest

from tests.unit.fake_proxy import ANSWERS, READER, Proxy, chat

PATH = "/v1/guard/check"


@pytest.mark.parametrize("mode", ["flag", "abstain", "pass"])
@pytest.mark.parametrize("question", ["wrong", "capital", "middle"])
def test_a_check_gives_the_verdicts_the_proxy_gives_the_same_answer_relayed(question, mode):
    async def run(client, proxy):
        relayed = (await client.post("/v1/chat/completions", json=chat(question, guard={"mode": mode}))).json()
        expected = relayed["choices"][0]["guard"]
        calls = len(proxy.foreign.requests)
        checked = await client.post(PATH, json={"messages": [{"role": "user", "content": question}],
                                                "answer": ANSWERS[question], "guard": {"mode": mode}})
        assert checked.status_code == 200, checked.text
        assert checked.json()["object"] == "guard.check"
        got = checked.json()["guard"]
        assert got == expected
        assert (got["source"], got["reader_model"]) == ("reader", READER)
        assert len(proxy.foreign.requests) == calls  # the upstream is not called

    Proxy().serve(run)


def test_a_completion_prompt_is_checked_as_the_completions_endpoint_reads_it():
    async def run(client, proxy):
        relayed = (await client.post("/v1/completions", json={"model": "m", "prompt": "wrong"})).json()
        checked = (await client.post(PATH, json={"prompt": "wrong", "answer": ANSWERS["wrong"]})).json()
        assert checked["guard"] == relayed["choices"][0]["guard"]
        assert [s["verdict"] for s in checked["guard"]["sentences"]] == ["supported", "flagged"]

    Proxy().serve(run)


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"messages": [{"role": "user", "content": "q"}]}, "answer", "non-empty string"),
    ({"messages": [{"role": "user", "content": "q"}], "answer": "  "}, "answer", "non-empty string"),
    ({"messages": [{"role": "user", "content": "q"}], "answer": 3}, "answer", "non-empty string"),
    ({"answer": "x"}, "messages", "exactly one question"),
    ({"prompt": "q", "messages": [{"role": "user", "content": "q"}], "answer": "x"}, "messages", "exactly one"),
    ({"prompt": ["a", "b"], "answer": "x"}, "prompt", "one prompt"),
    ({"prompt": "q", "answer": "x", "stream": True}, "stream", "unknown field"),
    ({"prompt": "q", "answer": "x", "guard": {"mode": "steer"}}, "guard.mode", "steer"),
    ({"prompt": "q", "answer": "x", "guard": {"alpha": 7}}, "guard.alpha", "alpha"),
])
def test_a_bad_check_is_refused_naming_the_field(body, param, words):
    async def run(client, proxy):
        refused = await client.post(PATH, json=body)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == param and words in error["message"]
        assert proxy.reader.requests == []

    Proxy().serve(run)


def test_a_reader_that_fails_gives_an_unverified_verdict_under_fail_open():
    async def run(client, proxy):
        proxy.reader.status = 500
        checked = (await client.post(PATH, json={"prompt": "wrong", "answer": ANSWERS["wrong"]})).json()
        assert checked["guard"]["verified"] is False and checked["guard"]["error"]["kind"] == "reader"

    Proxy().serve(run)
