"""Asking the model again for the answer check (``guard.answer_samples``): the samples and their agreement.

When a request asks for ``answer_samples``, :class:`Samples` sends one more request upstream, at once and next
to the client's: the same conversation, unguarded (no guard key: the engine scores nothing for it), for as many
answers (``n``), at the temperature and length the gate's :class:`~guard.combiner.AnswerSampling` was
calibrated with — the client's own sampling settings are left out, since the certificate holds for answers
drawn that way only — and seeded by the conversation, so the same question gets the same samples and verdict.
The engine batches them with the client's answer (and shares the prompt's prefill where prefix caching is on),
so they are usually ready when the answer is. :meth:`Samples.agreement` waits for them
and says how many say what the answer says (:func:`guard.agreement.agreement`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from adapters.http.errors import APIError, UpstreamError
from adapters.http.forwarding import Forwarder
from adapters.http.protocol import ENDPOINT_PATHS, Endpoint
from adapters.http.request_log import trace_headers
from guard.agreement import agreement
from guard.combiner import AnswerSampling
from guard.request_options import KEY_FIELD

__all__ = ["Samples", "question_of", "sample_body"]

#: the client's settings left out of the samples' request: sampling, streaming, scoring and output shape
_LEFT_OUT = frozenset({"stream", "stream_options", "logprobs", "top_logprobs", "return_token_ids", "n", "best_of",
                       "seed", "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens",
                       "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "echo",
                       "use_beam_search", "prompt_logprobs"})


def sample_body(body: dict[str, Any], sampling: AnswerSampling) -> dict[str, Any]:
    """The samples' request: the guarded request's ``body`` unguarded, with the calibrated sampling settings."""
    out = {k: v for k, v in body.items() if k not in _LEFT_OUT}
    xargs = {k: v for k, v in (body.get("vllm_xargs") or {}).items() if k != KEY_FIELD}
    if xargs:
        out["vllm_xargs"] = xargs
    else:
        out.pop("vllm_xargs", None)
    return out | {"n": sampling.samples, "temperature": sampling.temperature, "max_tokens": sampling.max_tokens,
                  "stream": False, "seed": sampling.seed_for(_conversation(body))}


def _conversation(body: dict[str, Any]) -> str:
    """What the samples' seed is drawn from: the prompt, or the messages as canonical JSON."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    return json.dumps(body.get("messages", prompt), sort_keys=True, ensure_ascii=False)


def question_of(body: dict[str, Any], endpoint: Endpoint) -> str:
    """The question an answer answers: the last user message's text (chat), or the prompt (completions)."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict)
                                and isinstance(p.get("text"), str))
            return content if isinstance(content, str) else ""
    return ""


def _texts(payload: bytes, endpoint: Endpoint, expected: int) -> list[str]:
    """The sampled answers' texts in an upstream answer.

    Raises:
        UpstreamError: the answer is not what an OpenAI server sends for ``n`` choices.
    """
    try:
        choices = json.loads(payload).get("choices")
    except (ValueError, AttributeError) as exc:
        raise UpstreamError("protocol", f"the samples' answer is not a JSON object ({exc})") from exc
    if not isinstance(choices, list) or len(choices) != expected:
        count = len(choices) if isinstance(choices, list) else "no"
        raise UpstreamError("protocol", f"the samples' answer has {count} choices; {expected} were asked for")
    if endpoint == "chat_completions":
        texts = [(c.get("message") or {}).get("content") if isinstance(c, dict) else None for c in choices]
    else:
        texts = [c.get("text") if isinstance(c, dict) else None for c in choices]
    return [t if isinstance(t, str) else "" for t in texts]


class Samples:
    """One request's samples, drawn upstream while its answer is generated.

    Args:
        relay: the guarded relay (its client and error mapping).
        client: the HTTP client whose ``base_url`` is the upstream.
        endpoint / body: the guarded request's endpoint and upstream body.
        sampling: the gate's calibrated answer sampling.
    """

    def __init__(self, relay: Forwarder, client: Any, endpoint: Endpoint, body: dict[str, Any],
                 sampling: AnswerSampling) -> None:
        self.sampling, self.endpoint = sampling, endpoint
        self.question = question_of(body, endpoint)
        self._task = asyncio.ensure_future(self._draw(relay, client, ENDPOINT_PATHS[endpoint],
                                                      sample_body(body, sampling)))

    async def _draw(self, relay: Forwarder, client: Any, path: str, body: dict[str, Any]) -> list[str]:
        return _texts(await relay.read(await relay.post(client, path, body, trace_headers())), self.endpoint,
                      self.sampling.samples)

    async def agreement(self, answer: str, timeout: float) -> float:
        """Wait (at most ``timeout`` seconds) for the samples; the share that say what ``answer`` says.

        Raises:
            UpstreamError: the samples did not come in time, or their request failed.
        """
        try:
            texts = await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError as exc:
            raise UpstreamError("timeout", f"the answer check's {self.sampling.samples} samples did not come within "
                                f"{timeout:g} s") from exc
        except APIError as exc:
            raise UpstreamError("protocol", f"the answer check's samples were refused: {exc.message}") from exc
        return agreement(answer, texts, self.question)

    def cancel(self) -> None:
        """Stop drawing (the request ended without needing them); a failure nobody waited for is dropped."""
        if not self._task.done():
            self._task.cancel()
        elif not self._task.cancelled():
            self._task.exception()  # retrieved, so asyncio does not log it as never retrieved
