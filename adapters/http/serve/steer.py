"""guard serve's mode "steer": the steered generation that follows a steering request, as the upstream sees it.

Contract (see docs/serving.md, "Steering"). When a choice's :class:`~guard.policy.StreamGuard`
asks to steer, the relay stops the unsteered generation and sends one more request to the same
vLLM server: a *completions* request whose ``prompt`` is token ids — the first request's prompt
ids, then the kept generated ids (``continue``; none for ``regenerate`` and the gate) — with the
client's sampling parameters, ``max_tokens`` reduced by the kept tokens, a fresh guard key,
``guard_steer`` = the strength and ``guard_steer_from: -1`` in ``vllm_xargs`` (the engine steers
from the last prompt row on, whose state produces the first steered token, so every token it
generates comes out steered). Its generated tokens take the positions that follow the kept ones, so
the choice's guard reads on where it stopped. The client gets one answer: the kept text, then
the steered text, in its own endpoint's shape, with ``guard.steered`` saying where and how.
``steer_how="always"`` needs no second request: the first one carries ``guard_steer``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from adapters.http.errors import UpstreamError, invalid_request
from adapters.http.protocol import Endpoint, parse_body, set_choice_text
from adapters.http.serve.ports import RelayPort
from adapters.http.serve.protocol import GuardedRequest
from adapters.http.serve.session import GuardSession
from adapters.http.sse import EventSource, PassedOnError, encode, parse_chunk
from guard.errors import ConfigError
from guard.options import GuardOptions
from guard.request_options import KEY_FIELD, STEER_FIELD, STEER_FROM_FIELD
from guard.steering import SteeringVector, strength_limit, within_bound

__all__ = ["SAMPLING_FIELDS", "Steering", "steer_always", "steered_body", "steer_answer", "steered_chunks"]

#: request fields the steered request keeps: sampling parameters that mean the same in both endpoints
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "presence_penalty",
                   "frequency_penalty", "repetition_penalty", "ignore_eos", "min_tokens", "skip_special_tokens",
                   "spaces_between_special_tokens", "include_stop_str_in_output", "logit_bias", "stream_options",
                   "user")
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's (and vLLM's) completions default
#: ``guard_steer_from``: steer from the last prompt row on, whose state produces the first generated token
FROM_LAST_PROMPT_TOKEN = -1


@dataclass(frozen=True)
class Steering:
    """What guard serve knows of its engine's steering vector.

    Attributes:
        default_strength: the strength of requests that send no ``guard.steer_alpha`` (``None``: they must).
        source: the vector's path, for messages.
        max_strength: the largest ``|alpha|`` the vector allows (:attr:`guard.steering.SteeringVector.max_alpha`).

    Raises:
        ConfigError: the default strength is out of range (names the limit).
    """

    default_strength: float | None
    source: str
    max_strength: float = math.inf

    def __post_init__(self) -> None:
        if self.default_strength is not None and not within_bound(self.default_strength, self.max_strength):
            raise ConfigError(f"steer_alpha={self.default_strength!r} is out of range: "
                              f"{strength_limit(self.max_strength)}; set a smaller "
                              "--steer-alpha (GUARD_STEER_ALPHA)")

    @classmethod
    def of(cls, vector: SteeringVector, source: str, default_strength: float | None = None) -> Steering:
        """The server's view of ``vector``; ``default_strength`` overrides the vector's default."""
        default = default_strength if default_strength is not None else vector.manifest.default_alpha
        return cls(default, source, vector.max_alpha)

    @staticmethod
    def strength_for(steering: Steering | None, options: GuardOptions) -> float:
        """The strength a mode-"steer" request gets.

        Raises:
            APIError: 400 when the server has no steering vector (param ``guard.mode``), neither the
                request nor the vector gives a strength, or the request's is out of range (param
                ``guard.steer_alpha``, naming the limit).
        """
        if steering is None:
            raise invalid_request("guard.mode='steer' needs a steering vector and this server has none: start guard "
                                  "serve with --steering PATH (`guard steer build` makes one), or use mode 'flag' "
                                  "or 'abstain'", param="guard.mode")
        if options.steer_alpha is not None:
            if not within_bound(options.steer_alpha, steering.max_strength):
                raise invalid_request(f"guard.steer_alpha={options.steer_alpha!r} is out of range: "
                                      f"{strength_limit(steering.max_strength)}; "
                                      "send a smaller guard.steer_alpha", param="guard.steer_alpha",
                                      code="steer_alpha_out_of_range")
            return options.steer_alpha
        if steering.default_strength is None:
            raise invalid_request(f"guard.steer_alpha is missing and the server's steering vector {steering.source!r} "
                                  "has no default strength; send guard.steer_alpha (a number, e.g. 0.2) or set the "
                                  "server's steer_alpha setting", param="guard.steer_alpha")
        return steering.default_strength


def steer_always(request: GuardedRequest, strength: float) -> GuardedRequest:
    """The request with ``guard_steer`` set, for ``steer_how="always"``: every generated token is steered."""
    body = dict(request.body)
    body["vllm_xargs"] = {**body["vllm_xargs"], STEER_FIELD: strength, STEER_FROM_FIELD: FROM_LAST_PROMPT_TOKEN}
    return replace(request, body=body)


def steered_body(request: GuardedRequest, prompt_ids: list[int], kept_ids: list[int], strength: float,
                 key: str) -> dict[str, Any] | None:
    """The steered completions request (see the module's contract); ``None`` when no token budget is left."""
    body = request.body
    limit = body.get("max_completion_tokens", body.get("max_tokens")) if request.endpoint == "chat_completions" \
        else body.get("max_tokens", _COMPLETIONS_DEFAULT_MAX_TOKENS)
    out: dict[str, Any] = {k: body[k] for k in SAMPLING_FIELDS if k in body}
    if isinstance(limit, int) and not isinstance(limit, bool):
        if limit - len(kept_ids) <= 0:
            return None
        out["max_tokens"] = limit - len(kept_ids)
    xargs = {k: v for k, v in body["vllm_xargs"].items() if k != KEY_FIELD}
    out.update(model=body.get("model"), prompt=[*prompt_ids, *kept_ids], stream=request.stream,
               return_token_ids=True, vllm_xargs={**xargs, KEY_FIELD: key, STEER_FIELD: strength,
                                                   STEER_FROM_FIELD: FROM_LAST_PROMPT_TOKEN})
    if not request.stream:
        out.pop("stream_options", None)
    return out


def _begin(session: GuardSession, prompt_ids: list[int], generated: list[int],
           request: GuardedRequest) -> tuple[list[int], dict[str, Any] | None]:
    """Kept ids and the steered request's body; switches the session over to the steered request."""
    point = session.guard.steered
    assert point is not None and session.n_prompt is not None
    kept = generated[: point.position - session.n_prompt] if point.position is not None else []
    key = uuid.uuid4().hex
    body = steered_body(request, prompt_ids, kept, point.strength, key)
    session.restart(key, session.n_prompt + len(kept))
    return kept, body


async def steer_answer(relay: RelayPort, request: GuardedRequest, session: GuardSession, payload: dict[str, Any],
                       choice: dict[str, Any], prompt_ids: list[int]) -> None:
    """Non-streamed: generate the steered part and rewrite ``payload``'s choice as one answer (text, token
    ids, ``finish_reason``, usage)."""
    kept, body = _begin(session, prompt_ids, list(choice["token_ids"]), request)
    steered_ids: list[int] = []
    finish_reason = "length"
    if body is not None:
        answer = parse_body(await relay.read(await relay.post(relay.client, "/v1/completions", body)))
        choices = answer.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0].get("token_ids"), list):
            raise UpstreamError("protocol", "the steered completion lacks exactly one choice with token_ids")
        steered_ids, finish_reason = list(choices[0]["token_ids"]), choices[0].get("finish_reason")
        with session.clock.timed():
            session.add_pieces(relay.texts.pieces(steered_ids))
            session.pull()
    await session.finish()
    with session.clock.timed():
        set_choice_text(choice, request.endpoint, False, session.drain().text)
        choice.update(finish_reason=finish_reason, logprobs=None, token_ids=[*kept, *steered_ids])
        _fix_usage(payload.get("usage"), len(kept) + len(steered_ids))


async def steered_chunks(relay: RelayPort, request: GuardedRequest, session: GuardSession, ids: dict[str, Any],
                         prompt_ids: list[int], generated: list[int],
                         guard_chunk: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                         keep_usage: Callable[[dict[str, Any]], None]) -> AsyncGenerator[bytes, None]:
    """Streamed: the steered request's chunks, in the client's endpoint's shape, each through ``guard_chunk``
    (the stream's own guarding of one chunk); the last one carries ``finish_reason``. The usage chunk (its counts
    including the kept tokens) goes to ``keep_usage``: the stream sends it last."""
    kept, body = _begin(session, prompt_ids, generated, request)
    if body is None:  # no token budget left: the kept text is the answer
        yield encode(await guard_chunk(_client_chunk({"text": "", "finish_reason": "length"}, ids, request.endpoint)))
        return
    response = await relay.post(relay.client, "/v1/completions", body)
    try:
        async with aclosing(EventSource(response, relay.who).payloads()) as payloads:
            async for data in payloads:
                chunk = parse_chunk(data, relay.who)
                if "error" in chunk:
                    yield encode(chunk)
                    raise PassedOnError(relay.who)
                if not chunk.get("choices"):  # the usage chunk
                    usage = chunk.get("usage")
                    if isinstance(usage, dict):  # the steered request's own counts: add the kept tokens
                        _fix_usage(usage, int(usage.get("completion_tokens") or 0) + len(kept), session.n_prompt_first)
                    keep_usage({**chunk, **_head(ids, request.endpoint)})
                    continue
                yield encode(await guard_chunk(_client_chunk(chunk["choices"][0], ids, request.endpoint)))
    finally:
        await response.aclose()


def _client_chunk(steered: dict[str, Any], ids: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """A steered completions chunk's choice as a chunk of the client's endpoint, under the first stream's ids."""
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": steered.get("finish_reason")}
    set_choice_text(choice, endpoint, True, steered.get("text") or "")
    if endpoint == "chat_completions" and "delta" not in choice:
        choice["delta"] = {}
    if isinstance(steered.get("token_ids"), list):
        choice["token_ids"] = steered["token_ids"]
    return {**_head(ids, endpoint), "choices": [choice]}


def _head(ids: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """The first stream's ``id``, ``object``, ``created`` and ``model``: the steered chunks continue it."""
    kind = "chat.completion.chunk" if endpoint == "chat_completions" else "text_completion"
    return {"id": ids.get("id", ""), "object": ids.get("object", kind), "created": ids.get("created", 0),
            "model": ids.get("model")}


def _fix_usage(usage: Any, completion: int, prompt: int | None = None) -> None:
    """Usage of the whole answer: ``completion`` (kept plus steered) tokens, the first request's ``prompt``."""
    if not isinstance(usage, dict):
        return
    usage["completion_tokens"] = completion
    if prompt is not None:
        usage["prompt_tokens"] = prompt
    usage["total_tokens"] = int(usage.get("prompt_tokens") or 0) + completion
