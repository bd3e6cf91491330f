"""Stand-ins for guard proxy's two peers: a foreign OpenAI-compatible API and the reader's vLLM server.

* :class:`FakeForeign` answers canned texts through an ``httpx.MockTransport``, knows nothing of
  vLLM's extensions and records every request (path, headers, body).
* :class:`FakeReader` speaks the part of vLLM's completions API the reader uses (token-id prompt,
  ``vllm_xargs``, ``return_token_ids``) and publishes synthetic scores for every prompt position
  into a :class:`ScoreFeed`, as the engine does in prefill: question positions score strongly
  "false" (a proxy that took them for answer tokens would flag), and an answer token scores "false"
  from a false word (:data:`FALSE_WORDS`) to the end of its sentence, else "true". The last
  position's scores arrive just after the answer, so the proxy has to wait for them.
* :class:`WordPrompts` is a word-level :class:`adapters.http.proxy.reader_prompt.ReaderPrompts`.
* :class:`Proxy` builds guard proxy's app over the three and runs a test against it.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.errors import invalid_request
from adapters.http.protocol import DEFAULT_MODE_HEADER
from adapters.http.proxy.router import create_proxy_app
from adapters.http.score_feed import ScoreFeed
from adapters.http.settings import ProxySettings
from tests.unit.fake_engine import FakeEngine, publish_probs, sse_event
from tests.unit.fake_upstream import BAD, GOOD, PROMPT_PROBS, make_probe

READER = "reader-test"
UPSTREAM = "http://foreign.test/v1"
FALSE_WORDS = {"Berlin", "Rome", "Madrid"}
ANSWERS = {
    "capital": "The capital of France is Paris.",
    "wrong": "Paris is nice. The capital of France is Berlin.",
    "middle": "Paris is nice. Its river is the Rome. The rest is long and would take many more words.",
    "GUARDED": "Paris is in France.",
    "GUARDED_QUIETLY": "Paris is in France.",
}
#: the foreign API's own guard field (as guard serve would send it)
ENGINE_GUARD = {"decision": "pass", "mode": "flag", "alpha": 0.1, "source": "engine", "sentences": []}
_MARK = "<assistant>"
_TOKEN = re.compile(r"\s*[^\s.!?]+|\s*[.!?]|\s+$")


class WordPrompts:
    """Words and punctuation are tokens; every question ends with the ``<assistant>`` marker."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.words: dict[int, str] = {}

    def _ids(self, text: str) -> list[int]:
        return [self._id(piece) for piece in _TOKEN.findall(text)]

    def _id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = len(self.vocab) + 10
            self.words[self.vocab[piece]] = piece
        return self.vocab[piece]

    def chat_prefix(self, messages: list[dict[str, str]]) -> list[int]:
        if any(m["role"] not in ("system", "user", "assistant") for m in messages):
            raise invalid_request("the reader's chat template cannot render these messages", param="messages")
        ids = []
        for m in messages:
            ids += [self._id(f"<{m['role']}>"), *self._ids(m["content"])]
        return ids + [self._id(_MARK)]

    def completion_prefix(self, prompt: str) -> list[int]:
        return self._ids(prompt) + [self._id(_MARK)]

    def answer(self, text: str) -> tuple[list[int], list[str]]:
        ids = self._ids(text)
        return ids, [self.words[i] for i in ids]


@dataclass
class FakeReader(FakeEngine):
    """The reader's vLLM server: scores every prompt position (see the module docstring)."""

    feed: ScoreFeed
    prompts: WordPrompts
    requests: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False
    status: int = 200
    drop_last: bool = False  #: never publish the last position's scores
    wrong_length: bool = False  #: claim to have read one token fewer

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "engine died", "type": "InternalServerError",
                                                               "param": None, "code": self.status}})
        prompt, key = body["prompt"], body["vllm_xargs"]["guard_key"]
        rows = self._probs(prompt)
        publish_probs(self.feed, key, 0, rows[:-1])
        if not self.drop_last:  # the engine's step ends after the HTTP answer is on its way
            asyncio.get_running_loop().call_soon(publish_probs, self.feed, key, len(rows) - 1, rows[-1:])
        read = prompt[:-1] if self.wrong_length else prompt
        return httpx.Response(200, json={"id": "cmpl-r", "object": "text_completion", "model": READER,
                                         "choices": [{"index": 0, "text": "x", "token_ids": [1],
                                                      "finish_reason": "length", "prompt_token_ids": read,
                                                      "logprobs": None}]})

    def _probs(self, prompt: list[int]) -> list[tuple[float, ...]]:
        mark = max(i for i, t in enumerate(prompt) if self.prompts.words.get(t) == _MARK)
        rows, tainted = [], False
        for i, token in enumerate(prompt):
            word = self.prompts.words.get(token, "").strip()
            if i <= mark:
                rows.append(PROMPT_PROBS)
                continue
            tainted = tainted or word in FALSE_WORDS
            rows.append(BAD if tainted else GOOD)
            if word in ".!?":
                tainted = False
        return rows


@dataclass
class FakeForeign:
    """A foreign OpenAI-compatible API: the last user message (or the prompt) picks the answer.

    Special questions: ``CRASH`` (500), ``SLOW`` (read timeout), ``DOWN`` (connection refused),
    ``GARBAGE`` (200 that is not JSON), ``UNAUTHORIZED`` (401), ``LIMIT`` (429), ``MIDERROR`` (an
    error event mid-stream), ``EVENT_ERROR`` (the same as an ``event: error`` event whose data is the error
    itself), ``SSE_FIELDS`` (every chunk's JSON over several ``data:`` lines, with ``id:`` fields and ``event:
    ping`` events), ``GUARDED`` (each choice already carries ``guard``, and the answer
    guard serve's ``x-guard-default-mode`` header), ``GUARDED_QUIETLY`` (the same without the header, as
    an older guard serve); ``n`` choices are
    ``capital``'s answer, then ``wrong``'s, alternating.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            if request.headers.get("authorization") != "Bearer sk-good":
                return httpx.Response(401, json={"error": {"message": "Incorrect API key provided",
                                                           "type": "invalid_request_error", "param": None,
                                                           "code": "invalid_api_key"}})
            return httpx.Response(200, json={"object": "list", "data": [{"id": "foreign-model", "object": "model"}]})
        body = json.loads(request.content)
        self.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        chat = request.url.path == "/v1/chat/completions"
        question = body["messages"][-1]["content"] if chat else body["prompt"]
        question = question if isinstance(question, str) else "capital"
        failure = self._failure(question, request)
        if failure is not None:
            return failure
        texts = [ANSWERS["capital"] if i % 2 == 0 else ANSWERS["wrong"] for i in range(body.get("n") or 1)]
        if question in ANSWERS:
            texts = [ANSWERS[question]] * len(texts)
        guarded = question in ("GUARDED", "GUARDED_QUIETLY")
        marked = {DEFAULT_MODE_HEADER: ENGINE_GUARD["mode"]} if question == "GUARDED" else {}
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(200, headers={"content-type": "text/event-stream", **marked},
                                  content=b"".join(_stream(chat, texts, guarded,
                                                           question in ("MIDERROR", "EVENT_ERROR"), usage, question)))
        choices = []
        for i, text in enumerate(texts):
            choice: dict[str, Any] = {"index": i, "finish_reason": "stop", "logprobs": {"content": []}}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            if guarded:
                choice["guard"] = ENGINE_GUARD
            choices.append(choice)
        return httpx.Response(200, headers=marked, json={
            "id": "chatcmpl-f", "object": "chat.completion" if chat else "text_completion",
            "created": 5, "model": body.get("model"), "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}})

    @staticmethod
    def _failure(question: str, request: httpx.Request) -> httpx.Response | None:
        if question == "CRASH":
            return httpx.Response(500, json={"error": {"message": "upstream exploded", "type": "server_error"}})
        if question == "SLOW":
            raise httpx.ReadTimeout("timed out", request=request)
        if question == "DOWN":
            raise httpx.ConnectError("connection refused", request=request)
        if question == "GARBAGE":
            return httpx.Response(200, content=b"<html>not json</html>")
        if question == "UNAUTHORIZED":
            return httpx.Response(401, json={"error": {"message": "Incorrect API key provided",
                                                       "type": "invalid_request_error", "param": None,
                                                       "code": "invalid_api_key"}})
        if question == "LIMIT":
            return httpx.Response(429, json={"error": {"message": "Rate limit reached", "type": "requests",
                                                       "param": None, "code": "rate_limit_exceeded"}})
        return None


def _stream(chat: bool, texts: list[str], guarded: bool, fail: bool, usage: bool,
            style: str = "") -> list[bytes]:
    if style == "SSE_FIELDS":  # the same events as the SSE standard also allows them to be written
        plain = _stream(chat, texts, guarded, fail, usage)
        return [_fielded(e, i) if e.startswith(b"data: {") else e for i, e in enumerate(plain)]
    head = {"id": "chatcmpl-s", "object": "chat.completion.chunk" if chat else "text_completion", "created": 5,
            "model": "foreign-model"}
    events = []
    for index, text in enumerate(texts):
        pieces = _TOKEN.findall(text)
        for i, piece in enumerate(pieces):
            if fail and i == 2:
                error = {"message": "upstream died", "type": "server_error"}
                events.append(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n" if style == "EVENT_ERROR"
                              else sse_event({"error": error}))
                return events + [b"data: [DONE]\n\n"]
            choice: dict[str, Any] = {"index": index, "logprobs": None,
                                      "finish_reason": "stop" if i == len(pieces) - 1 else None}
            if chat:
                choice["delta"] = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            else:
                choice["text"] = piece
            if guarded and i == len(pieces) - 1:
                choice["guard"] = {"tokens": []}
            events.append(sse_event({**head, "choices": [choice]}))
    if guarded:
        events.append(sse_event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": None,
                                                   "guard": ENGINE_GUARD}]}))
    if usage:
        events.append(sse_event({**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9,
                                                              "total_tokens": 12}}))
    return events + [b": keep-alive\n\n", b"data: [DONE]\n\n"]


def _fielded(event: bytes, i: int) -> bytes:
    """``event``'s JSON over several ``data:`` lines, after an ``event: ping`` event and with an ``id:`` field."""
    lines = json.dumps(json.loads(event[len(b"data: "):]), indent=1).split("\n")
    data = b"".join(b"data: " + line.encode() + b"\n" for line in lines)
    return b"event: ping\ndata: {}\n\n" + b"id: %d\n" % i + data + b"\n"


class Proxy:
    """guard proxy's app over the two fakes; :meth:`serve` runs ``run(client, proxy)`` in an event loop."""

    def __init__(self, **settings: Any) -> None:
        self.feed, self.prompts = ScoreFeed(), WordPrompts()
        self.foreign, self.reader = FakeForeign(), FakeReader(self.feed, self.prompts)
        self.settings = ProxySettings.build(upstream=UPSTREAM, served_model_name=READER, **settings)

    def build(self) -> tuple[Any, httpx.AsyncClient, httpx.AsyncClient]:
        """guard proxy's app (also kept as ``self.app``) and its upstream and reader clients."""
        upstream = httpx.AsyncClient(transport=self.foreign.transport(), base_url=UPSTREAM)
        reader = httpx.AsyncClient(transport=self.reader.transport(), base_url="http://reader")
        self.app = create_proxy_app(self.settings, "http://reader", self.feed, make_probe(), self.prompts,
                                    upstream_client=upstream, reader_client=reader)
        return self.app, upstream, reader

    def serve(self, run: Any) -> None:
        _, upstream, reader = self.build()

        async def main() -> None:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://guard") as client:
                await run(client, self)
            await upstream.aclose()
            await reader.aclose()

        asyncio.run(main())


def chat(question: str, **extra: Any) -> dict[str, Any]:
    """A chat request body asking ``question``."""
    return {"model": "foreign-model", "messages": [{"role": "user", "content": question}], **extra}


def counts(app: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every metric sample of the app's registry."""
    text = generate_latest(app.state.guard.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
