"""A small in-process stand-in for vLLM's OpenAI server and its engine's score channel.

It speaks the parts of vLLM's OpenAI API that guard serve relies on (``return_token_ids``,
``vllm_xargs``, chat and completion chunks, vLLM's error bodies) through an ``httpx.MockTransport``
and publishes synthetic scores into a :class:`ScoreFeed` the way the engine does: the prompt's
positions first, then each generated token's score one step later (when the next token is
generated), never the last token's. A non-streamed answer's last score arrives just after the
answer, so the server has to wait for it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np

from adapters.http.score_feed import ScoreFeed
from guard.conformal import MondrianConformal
from guard.probe import ConformalCalibration, Probe, ProbeManifest
from tests.unit.fake_engine import FakeEngine, publish_probs, sse_event

MODEL = "test-model"
LABELS = ("true", "false", "neither")
CAL = (np.arange(1, 20) / 20).tolist()  # calibration nonconformity scores of each class: 0.05 .. 0.95
# probabilities clear of the calibration scores, so float32 rounding cannot move a p-value
GOOD = (0.92, 0.04, 0.04)  # p_true = 19/20; p_false = p_neither = 1/20: supported
BAD = (0.03, 0.92, 0.05)  # p_true = 1/20: flagged at alpha 0.1
EOS = 0
#: what a prompt position scores: strongly "false", so a server that took prompt scores for text would flag
PROMPT_PROBS = (0.01, 0.98, 0.01)


def make_gate(threshold_at_03: bool = True, answer_check: bool = False, sampled: bool = False) -> Probe:
    """A calibrated pre-generation gate over one layer: its stored split certifies 0.15 at alpha 0.3. With
    ``answer_check``, an on-policy gate whose answer combiner reads the answer's mean logit alone (``p(correct)`` of
    the answer rows' columns), with the same calibration split; with ``sampled`` also a sampled combiner (3 samples
    at temperature 0.7, 16 tokens) that reads the samples' agreement alone: ``sigmoid(12 * agreement - 6)``."""
    from guard.combiner import AnswerSampling, Combiner
    from guard.selective import SelectiveCalibration

    confidences = [0.9] * 100 + [0.1] * 100  # the confident half always right, the rest always wrong
    selective = SelectiveCalibration.fit(np.array(confidences), np.array([True] * 100 + [False] * 100),
                                         alpha=0.3, delta=0.1, label="correct")
    combiner = Combiner(signals=("gate", "answer", "logprob"), weights=(0.0, 1.0, 0.0), bias=0.0, means=(0.0,) * 3,
                        scales=(1.0,) * 3, selective=selective) if answer_check else None
    sampling = AnswerSampling(samples=3, temperature=0.7, max_tokens=16, combiner=Combiner(
        signals=("gate", "answer", "logprob", "agreement"), weights=(0.0, 0.0, 0.0, 12.0), bias=-6.0,
        means=(0.0,) * 4, scales=(1.0,) * 4, selective=selective)) if sampled else None
    manifest = ProbeManifest(kind="pre-generation-gate", labels=("incorrect", "correct"), layers=(0,), hidden_size=4,
                             num_layers=2, model_fingerprint="test", selective=selective, answer_combiner=combiner,
                             answer_sampling=sampling)
    zeros = np.zeros((1, 4), np.float32)
    return Probe(manifest, np.zeros((1, 2, 4), np.float32), np.zeros((1, 2), np.float32), zeros, zeros + 1)


def make_probe(with_scores: bool = True) -> Probe:
    """A calibrated true/false/neither probe over one layer (tensors unused: scores are synthetic)."""
    conformal = MondrianConformal.from_scores(0.1, [CAL] * 3)
    calibration = ConformalCalibration(
        alpha=0.1, thresholds=dict(zip(LABELS, conformal.thresholds.tolist())),
        n_cal={label: len(CAL) for label in LABELS},
        scores={label: CAL for label in LABELS} if with_scores else None)
    manifest = ProbeManifest(kind="test-probe", labels=LABELS, layers=(0,), hidden_size=4, num_layers=2,
                             model_fingerprint="test", conformal=calibration)
    zeros = np.zeros((1, 4), np.float32)
    return Probe(manifest, np.zeros((1, 3, 4), np.float32), np.zeros((1, 3), np.float32), zeros, zeros + 1)


@dataclass
class Script:
    """What the fake model answers to one prompt: token texts and each token's class probabilities."""

    tokens: list[tuple[str, tuple[float, float, float]]]
    n_prompt: int = 7
    fail_mid_stream: bool = False  #: send vLLM's error event after two tokens
    logprob: float = -0.25  #: every generated token's log-probability (sent when the request asks for them)

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.tokens)


@dataclass
class FakeUpstream(FakeEngine):
    """The fake server: ``scripts`` maps a prompt (or the last chat message) to its answer."""

    feed: ScoreFeed
    scripts: dict[str, Script]
    vocab: dict[int, str] = field(default_factory=lambda: {EOS: ""})
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  #: each generation request's headers
    chunks_sent: dict[str, int] = field(default_factory=dict)  #: guard key -> chunks produced
    closed_early: set[str] = field(default_factory=set)  #: guard keys whose stream the client closed
    down: bool = False
    #: prompt -> the pre-generation gate's (p_incorrect, p_correct), appended as two columns to every score row
    gate: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: prompt -> the gate's columns on the *generated* positions instead (an on-policy gate read on the answer)
    answer_gate: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: what a steered request (token-id prompt with ``guard_steer``) answers; its prompt is its token ids
    steered: Script | None = None
    #: whether the server honours a request's ``logprobs`` (a vLLM server does)
    honours_logprobs: bool = True
    #: prompt -> what an unguarded request for ``n`` answers gets (the answer check's samples), in order
    samples: dict[str, list[str]] = field(default_factory=dict)
    sample_requests: list[dict[str, Any]] = field(default_factory=list)  #: the bodies of those requests
    _gate_of: dict[str, tuple[float, float]] = field(default_factory=dict)
    _answer_gate_of: dict[str, tuple[float, float]] = field(default_factory=dict)

    def token_id(self, text: str) -> int:
        for tid, known in self.vocab.items():
            if known == text and tid != EOS:
                return tid
        tid = len(self.vocab) + 100
        self.vocab[tid] = text
        return tid

    def pieces(self, token_ids: list[int]) -> list[str]:
        """The :class:`adapters.http.tokens.TokenTexts` of this fake model."""
        return [self.vocab[t] for t in token_ids]

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        chat = request.url.path == "/v1/chat/completions"
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if isinstance(prompt, list) and "guard_steer" in body["vllm_xargs"] and self.steered is not None:
            script, key = replace(self.steered, n_prompt=len(prompt)), body["vllm_xargs"]["guard_key"]
            self._publish(key, 0, [PROMPT_PROBS] * script.n_prompt)  # prefill scores the kept tokens again
            if body.get("stream"):
                return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                      stream=_AsyncBody(self._stream(False, script, key, _usage(body),
                                                                     _honoured(self, body))))
            return self._complete(False, script, key, _honoured(self, body))
        if prompt == "CRASH":
            return httpx.Response(500, json={"error": {"message": "engine died", "type": "InternalServerError",
                                                       "param": None, "code": 500}})
        if prompt == "SLOW":
            raise httpx.ReadTimeout("timed out", request=request)
        if "guard_key" not in (body.get("vllm_xargs") or {}):  # unguarded: the answer check's samples
            return self._samples(chat, prompt, body)
        if prompt not in self.scripts:
            return httpx.Response(400, json={"error": {"message": "This model's maximum context length is 32 tokens",
                                                       "type": "BadRequestError", "param": None, "code": 400}})
        script, key = self.scripts[prompt], body["vllm_xargs"]["guard_key"]
        if prompt in self.gate:
            self._gate_of[key] = self.gate[prompt]
        if prompt in self.answer_gate:
            self._answer_gate_of[key] = self.answer_gate[prompt]
        self._publish(key, 0, [PROMPT_PROBS] * script.n_prompt)
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_AsyncBody(self._stream(chat, script, key, _usage(body),
                                                                 _honoured(self, body))))
        return self._complete(chat, script, key, _honoured(self, body))

    def _samples(self, chat: bool, prompt: str, body: dict[str, Any]) -> httpx.Response:
        self.sample_requests.append(body)
        texts = self.samples.get(prompt, [])[: body.get("n", 1)]
        if len(texts) < body.get("n", 1):
            return httpx.Response(400, json={"error": {"message": f"no samples for {prompt!r}", "param": None,
                                                       "type": "BadRequestError", "code": 400}})
        choices = [{"index": i, "finish_reason": "stop", "logprobs": None,
                    **({"message": {"role": "assistant", "content": t}} if chat else {"text": t})}
                   for i, t in enumerate(texts)]
        return httpx.Response(200, json={"id": "cmpl-s", "object": "chat.completion" if chat else "text_completion",
                                         "created": 1, "model": MODEL, "choices": choices})

    def _publish(self, key: str, start: int, probs: list[tuple[float, ...]]) -> None:
        if key in self._gate_of:  # a gate fused into the probe's matmul: its columns follow the probe's
            gate = self._answer_gate_of.get(key, self._gate_of[key]) if start > 0 else self._gate_of[key]
            probs = [(*p, *gate) for p in probs]
        publish_probs(self.feed, key, start, probs)

    def _ids(self, script: Script) -> list[int]:
        return [self.token_id(t) for t, _ in script.tokens] + [EOS]

    def _logprobs(self, chat: bool, script: Script, ids: list[int]) -> dict[str, Any]:
        """vLLM's ``logprobs`` of a choice: per token (chat: ``content``; completions: ``token_logprobs``)."""
        texts = [self.vocab[t] for t in ids]
        if chat:
            return {"content": [{"token": t, "logprob": script.logprob, "bytes": None, "top_logprobs": []}
                                for t in texts]}
        return {"tokens": texts, "token_logprobs": [script.logprob] * len(ids), "top_logprobs": None,
                "text_offset": [0] * len(ids)}

    def _complete(self, chat: bool, script: Script, key: str, logprobs: bool = False) -> httpx.Response:
        ids = self._ids(script)
        probs = [p for _, p in script.tokens]
        self._publish(key, script.n_prompt, probs[:-1])
        # the last content token's score comes with the next engine step: after the answer
        asyncio.get_running_loop().call_soon(self._publish, key, script.n_prompt + len(probs) - 1, probs[-1:])
        choice: dict[str, Any] = {"index": 0, "logprobs": self._logprobs(chat, script, ids) if logprobs else None,
                                  "finish_reason": "stop", "token_ids": ids}
        if chat:
            choice["message"] = {"role": "assistant", "content": script.text}
            top = {"object": "chat.completion", "prompt_token_ids": list(range(script.n_prompt))}
        else:
            choice["text"] = script.text
            choice["prompt_token_ids"] = list(range(script.n_prompt))
            top = {"object": "text_completion"}
        usage = {"prompt_tokens": script.n_prompt, "completion_tokens": len(ids),
                 "total_tokens": script.n_prompt + len(ids)}
        return httpx.Response(200, json={"id": "cmpl-1", "created": 1, "model": MODEL, **top, "choices": [choice],
                                         "usage": usage})

    async def _stream(self, chat: bool, script: Script, key: str, usage: bool = False, logprobs: bool = False):
        ids = self._ids(script)
        probs = [p for _, p in script.tokens]
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": "cmpl-2", "object": obj, "created": 1, "model": MODEL}
        sent = 0
        try:
            if chat:
                yield sse_event({**head, "prompt_token_ids": list(range(script.n_prompt)),
                              "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                           "logprobs": None, "finish_reason": None}]})
            for i, tid in enumerate(ids):
                if i == 2 and script.fail_mid_stream:
                    yield sse_event({"error": {"message": "engine died", "type": "InternalServerError", "param": None,
                                            "code": 500}})
                    yield b"data: [DONE]\n\n"
                    return
                if i > 0:  # generating token i feeds token i - 1 back: its score goes out now
                    self._publish(key, script.n_prompt + i - 1, [probs[i - 1]])
                text = self.vocab[tid]
                last = i == len(ids) - 1
                choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if last else None, "token_ids": [tid],
                                          "logprobs": self._logprobs(chat, script, [tid]) if logprobs else None}
                if chat:
                    choice["delta"] = {"content": text}
                    yield sse_event({**head, "choices": [choice]})
                else:
                    choice["text"] = text
                    if i == 0:
                        choice["prompt_token_ids"] = list(range(script.n_prompt))
                    yield sse_event({**head, "choices": [choice]})
                sent += 1
                self.chunks_sent[key] = sent
                await asyncio.sleep(0)  # let other requests' streams interleave
            if usage:
                yield sse_event({**head, "choices": [], "usage": {"prompt_tokens": script.n_prompt,
                                                                  "completion_tokens": len(ids),
                                                                  "total_tokens": script.n_prompt + len(ids)}})
            yield b"data: [DONE]\n\n"
        finally:
            if sent < len(ids):
                self.closed_early.add(key)


def _logprobs(body: dict[str, Any]) -> bool:
    return body.get("logprobs") is True or (isinstance(body.get("logprobs"), int) and body["logprobs"] is not False)


def _honoured(fake: FakeUpstream, body: dict[str, Any]) -> bool:
    return fake.honours_logprobs and _logprobs(body)


def _usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def run_app(fake: FakeUpstream, run: Any, *, probe: Probe | None = None, steering: Any = None, gate: Any = None,
            **settings: Any) -> FakeUpstream:
    """guard serve's app over ``fake`` (and its feed), driven by ``run(client, fake, app)`` in an event loop."""
    from adapters.http.serve.router import create_app
    from adapters.http.settings import ServeSettings

    upstream = httpx.AsyncClient(transport=fake.transport(), base_url="http://upstream")
    app = create_app(ServeSettings.build(served_model_name=MODEL, **settings), "http://upstream", fake.feed,
                     probe or make_probe(), fake, client=upstream, steering=steering, gate=gate)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard") as client:
            await run(client, fake, app)
        await upstream.aclose()

    asyncio.run(main())
    return fake


def events(body: str) -> list[Any]:
    """The ``data`` of each server-sent event (JSON, or the ``[DONE]`` string)."""
    out = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(chunks: list[Any]) -> str:
    """The text of a stream's chunks (``[DONE]`` and error events skipped)."""
    text = ""
    for chunk in chunks:
        for choice in chunk.get("choices", []) if isinstance(chunk, dict) else []:
            text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    return text


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, gen: Any) -> None:
        self._gen = gen

    async def __aiter__(self):
        async for part in self._gen:
            yield part

    async def aclose(self) -> None:
        await self._gen.aclose()

