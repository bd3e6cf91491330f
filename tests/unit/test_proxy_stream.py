"""guard proxy in-process, streamed: relay or hold the foreign stream, then the reader's summary chunk."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from guard.policy import DEFAULT_ABSTAIN_MESSAGE
from tests.unit.fake_proxy import ANSWERS, ENGINE_GUARD, READER, Proxy, chat, counts


def _data(body: str) -> list[str]:
    """Each event's data (its ``data:`` lines joined, as the SSE standard reads them)."""
    events = (["\n".join(line[len("data: "):] for line in block.split("\n") if line.startswith("data: "))]
              for block in body.split("\n\n"))
    return [data for (data,) in events if data]


def _chunks(body: str) -> list[dict[str, Any]]:
    return [json.loads(d) for d in _data(body) if d != "[DONE]"]


def _text(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(c.get("text") or (c.get("delta") or {}).get("content") or ""
                   for chunk in chunks for c in chunk["choices"] if c["index"] == index)


async def _upstream_data(proxy: Proxy, body: dict[str, Any], path: str = "/v1/chat/completions") -> list[str]:
    """What the foreign API itself streams for ``body`` (asked directly, not through the proxy)."""
    response = await proxy.foreign.transport().handle_async_request(
        httpx.Request("POST", f"http://foreign.test{path}", json=body))
    return _data((await response.aread()).decode())


def test_flag_mode_relays_the_upstream_events_byte_for_byte_then_one_summary_chunk_then_usage_last():
    async def run(client, proxy):
        body = chat("wrong", stream=True, stream_options={"include_usage": True})
        events = _data((await client.post("/v1/chat/completions", json=body)).text)
        direct = await _upstream_data(proxy, body)
        assert json.loads(direct[-2])["choices"] == []  # the upstream's usage chunk, before its [DONE]
        assert events[:len(direct) - 2] == direct[:-2]  # every upstream event unchanged, in order
        assert events[-1] == "[DONE]" and len(events) == len(direct) + 1
        assert events[-2] == direct[-2]  # the usage chunk, unchanged, last (as OpenAI sends it)
        summary = json.loads(events[-3])
        choice = summary["choices"][0]
        assert (choice["index"], choice["delta"], choice["finish_reason"]) == (0, {}, None)
        guard = choice["guard"]
        assert (guard["source"], guard["reader_model"], guard["decision"]) == ("reader", READER, "flag")
        assert [s["verdict"] for s in guard["sentences"]] == ["supported", "flagged"]
        assert len(guard["tokens"]) == guard["counts"]["tokens"] == 11
        assert counts(proxy.app)[("guard_requests_total", (("decision", "flag"), ("endpoint", "chat_completions"),
                                                            ("mode", "flag")))] == 1

    Proxy().serve(run)


def test_streamed_and_unstreamed_answers_get_the_same_verdicts():
    async def run(client, proxy):
        whole = (await client.post("/v1/completions", json={"model": "m", "prompt": "wrong"})).json()
        chunks = _chunks((await client.post("/v1/completions", json={"model": "m", "prompt": "wrong",
                                                                     "stream": True})).text)
        assert _text(chunks[:-1]) == whole["choices"][0]["text"]
        assert chunks[-1]["choices"][0]["text"] == "" and chunks[-1]["object"] == "text_completion"
        assert chunks[-1]["choices"][0]["guard"] == whole["choices"][0]["guard"]

    Proxy().serve(run)


def test_abstain_mode_holds_the_events_and_sends_them_unchanged_once_the_reader_passes_them():
    async def run(client, proxy):
        body = chat("capital", stream=True, guard={"mode": "abstain"})
        events = _data((await client.post("/v1/chat/completions", json=body)).text)
        direct = await _upstream_data(proxy, {k: v for k, v in body.items() if k != "guard"})
        assert events[:-2] == direct[:-1]
        assert json.loads(events[-2])["choices"][0]["guard"]["decision"] == "pass"

    Proxy().serve(run)


def test_abstain_mode_sends_each_sentence_once_read_and_the_abstain_message_at_a_flagged_last_one():
    async def run(client, proxy):
        body = chat("wrong", stream=True, stream_options={"include_usage": True}, guard={"mode": "abstain"})
        chunks = _chunks((await client.post("/v1/chat/completions", json=body)).text)
        assert _text(chunks) == "Paris is nice." + DEFAULT_ABSTAIN_MESSAGE  # the first sentence passed its reading
        message, summary, usage = chunks[-3:]
        assert message["choices"][0]["finish_reason"] == "stop" and message["id"] == "chatcmpl-s"
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 9
        guard = summary["choices"][0]["guard"]
        assert guard["decision"] == "abstain" and guard["abstained"]["sentence"] == 1
        assert len(proxy.reader.requests) == 2  # "Paris is nice. " when it closed, then the whole answer

    Proxy().serve(run)


def test_abstain_mode_stops_the_upstream_at_a_flagged_sentence_mid_answer():
    async def run(client, proxy):
        body = chat("middle", stream=True, guard={"mode": "abstain"})
        chunks = _chunks((await client.post("/v1/chat/completions", json=body)).text)
        assert _text(chunks) == "Paris is nice." + DEFAULT_ABSTAIN_MESSAGE
        assert "Rome" not in json.dumps(chunks) and "rest" not in json.dumps(chunks)
        guard = chunks[-1]["choices"][0]["guard"]
        assert guard["decision"] == "abstain" and guard["abstained"]["sentence"] == 1
        assert [s["verdict"] for s in guard["sentences"]] == ["supported", "flagged"]
        assert len(proxy.reader.requests) == 2  # one reading per closed sentence; the rest was never read

    Proxy().serve(run)


def test_abstain_mode_withholds_only_the_flagged_choice_of_several():
    async def run(client, proxy):
        body = {"model": "m", "prompt": "pick", "n": 2, "stream": True, "guard": {"mode": "abstain"}}
        chunks = _chunks((await client.post("/v1/completions", json=body)).text)
        assert _text(chunks, 0) == ANSWERS["capital"] and _text(chunks, 1) == DEFAULT_ABSTAIN_MESSAGE
        summary = chunks[-1]["choices"]
        assert [(c["index"], c["guard"]["decision"]) for c in summary] == [(0, "pass"), (1, "abstain")]
        assert len(proxy.reader.requests) == 2

    Proxy().serve(run)


def test_a_streamed_upstream_guard_field_passes_through_and_nothing_is_read():
    async def run(client, proxy):
        body = chat("GUARDED", stream=True)
        events = _data((await client.post("/v1/chat/completions", json=body)).text)
        assert events == (await _upstream_data(proxy, body))  # no summary chunk of ours
        assert json.loads(events[-2])["choices"][0]["guard"] == ENGINE_GUARD
        assert proxy.reader.requests == []

    Proxy().serve(run)


@pytest.mark.parametrize("question", ["MIDERROR", "EVENT_ERROR"])
@pytest.mark.parametrize("mode", ["flag", "abstain"])
def test_a_mid_stream_upstream_error_is_passed_on_then_done_and_counted(mode, question):
    async def run(client, proxy):
        body = chat(question, stream=True, guard={"mode": mode})
        chunks = _chunks((await client.post("/v1/chat/completions", json=body)).text)
        assert chunks[-1]["error"]["message"] == "upstream died"
        # flag: what came before the error was relayed; abstain: nothing unread leaves the proxy
        assert _text(chunks[:-1]) == ("" if mode == "abstain" else "The capital")
        assert proxy.reader.requests == []
        assert counts(proxy.app)[("guard_upstream_errors_total", (("kind", "other"),))] == 1

    Proxy().serve(run)


@pytest.mark.parametrize("mode", ["flag", "abstain"])
def test_multi_line_data_ids_and_named_events_are_read_as_the_sse_standard_says(mode):
    async def run(client, proxy):
        plain = _chunks((await client.post("/v1/chat/completions", json=chat("capital", stream=True,
                                                                              guard={"mode": mode}))).text)
        fields = _chunks((await client.post("/v1/chat/completions", json=chat("SSE_FIELDS", stream=True,
                                                                               guard={"mode": mode}))).text)
        assert _text(fields[:-1]) == _text(plain[:-1]) == ANSWERS["capital"]
        sent = (await client.post("/v1/chat/completions", json=chat("SSE_FIELDS", stream=True,
                                                                    guard={"mode": mode}))).text
        assert all(line.startswith(("data: ", ": ")) for line in sent.split("\n") if line)  # every line a field
        assert fields[-1]["choices"][0]["guard"] == plain[-1]["choices"][0]["guard"]  # the same verdict

    Proxy().serve(run)


def test_a_reader_failure_after_the_text_was_relayed_ends_the_stream_with_an_unverified_summary():
    proxy = Proxy()
    proxy.reader.status = 500

    async def run(client, proxy):
        body = chat("capital", stream=True)
        chunks = _chunks((await client.post("/v1/chat/completions", json=body)).text)
        assert _text(chunks[:-1]) == ANSWERS["capital"]
        guard = chunks[-1]["choices"][0]["guard"]  # on_guard_failure defaults to fail_open
        assert (guard["verified"], guard["error"]["kind"]) == (False, "reader")
        assert counts(proxy.app)[("guard_upstream_errors_total", (("kind", "reader"),))] == 1
        assert counts(proxy.app)[("guard_requests_in_flight", ())] == 0

    proxy.serve(run)


def test_upstream_refusals_before_the_stream_are_plain_error_answers():
    async def run(client, proxy):
        answer = await client.post("/v1/chat/completions", json=chat("UNAUTHORIZED", stream=True))
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"

    Proxy().serve(run)


def test_the_official_openai_client_reads_the_proxy_unchanged():
    openai = pytest.importorskip("openai")

    async def run(client, proxy):
        api = openai.AsyncOpenAI(api_key="sk-from-client", base_url="http://guard/v1", http_client=client)
        answer = await api.chat.completions.create(model="foreign-model", messages=chat("wrong")["messages"],
                                                   extra_body={"guard": {"mode": "flag"}})
        assert answer.choices[0].message.content == ANSWERS["wrong"]
        assert answer.choices[0].model_extra["guard"]["source"] == "reader"
        stream = await api.completions.create(model="foreign-model", prompt="capital", stream=True)
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].text for c in chunks) == ANSWERS["capital"]
        assert chunks[-1].choices[0].model_extra["guard"]["decision"] == "pass"
        assert {r["headers"]["authorization"] for r in proxy.foreign.requests} == {"Bearer sk-from-client"}

    Proxy().serve(run)
