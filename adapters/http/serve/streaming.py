"""Guarded server-sent events: relay the upstream's chunks as they come, with the guard's increments.

Each outgoing chunk keeps OpenAI's schema. A chunk's choice may carry ``guard``: the token scores
released since the previous chunk (``tokens``), the sentence verdicts decided since then
(``sentences``) and, on abstention, ``abstained``. The chunk that ends the choice is held until the
last scores arrived (at most ``score_timeout``). A final chunk before ``data: [DONE]`` carries the
full summary, then the usage chunk (when the request asked for it; last, as OpenAI sends it). Modes "flag"
and "pass" relay the text unchanged. Mode "abstain" sends the text the
:class:`~guard.policy.StreamGuard` releases (a sentence once it is decided), drops ``logprobs`` and
``token_ids`` (they would reveal held text), and at the first flagged sentence sends the abstain
message with ``finish_reason: "stop"`` and closes the upstream stream, which makes vLLM abort the
request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.http.errors import UpstreamError
from adapters.http.failure import mark
from adapters.http.protocol import (
    choice_text,
    sentence_payload,
    set_choice_text,
    summary_payload,
    token_payload,
)
from adapters.http.serve.ports import RelayPort
from adapters.http.serve.protocol import GuardedRequest, choice_logprobs, hide_token_ids, prompt_length
from adapters.http.serve.session import GuardSession
from adapters.http.serve.steer import steered_chunks
from adapters.http.sse import (
    EventSource,
    PassedOnError,
    chunk_head,
    chunk_ids,
    encode,
    guarded_events,
    parse_chunk,
)

__all__ = ["open_stream"]


@dataclass
class _Stream:
    """What the relay remembers while one stream passes through."""

    relay: RelayPort
    request: GuardedRequest
    session: GuardSession
    ids: dict[str, Any] = field(default_factory=dict)  # id, object, created, model of the upstream's chunks
    finished: bool = False
    prompt_ids: list[int] = field(default_factory=list)  # mode "steer": what a steered request starts from
    generated: list[int] = field(default_factory=list)
    usage: dict[str, Any] | None = None  #: the usage chunk, sent after the summary
    held: bool = field(init=False)  #: whether the guard holds text until it is decided

    def __post_init__(self) -> None:
        self.held = _held(self.request)


async def open_stream(relay: RelayPort, request: GuardedRequest, session: GuardSession) -> AsyncGenerator[bytes, None]:
    """Open the upstream stream and return the guarded events.

    Raises:
        APIError: before any event, when the upstream refuses the request or cannot be reached.
    """
    response = await relay.send(request)
    return guarded_events(_guarded(_Stream(relay, request, session), response), response, relay, request.endpoint,
                          request.options.mode, session.close)


async def _guarded(stream: _Stream, response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The upstream's chunks with the guard's increments, then the summary chunk."""
    relay, session = stream.relay, stream.session
    async with aclosing(EventSource(response, relay.who).payloads()) as payloads:
        async for data in payloads:
            chunk = parse_chunk(data, relay.who)
            if "error" in chunk:  # the engine failed mid-stream; vLLM's error event, passed on
                yield encode(chunk)
                raise PassedOnError(relay.who)
            shaped = await _guard_chunk(stream, chunk)
            if shaped.get("choices"):
                yield encode(shaped)
            else:  # the usage chunk goes last, after the summary
                stream.usage = shaped
            if session.stopped:
                break  # abstained or steering: closing the upstream stream makes vLLM abort the request
    if session.wants_steering:
        await response.aclose()
        async for event in steered_chunks(relay, stream.request, session, stream.ids, stream.prompt_ids,
                                          stream.generated, lambda c: _guard_chunk(stream, c),
                                          lambda usage: setattr(stream, "usage", usage)):
            yield event
    if not (stream.finished or session.stopped):
        raise UpstreamError("protocol", "the upstream stream ended before the choice finished")
    await response.aclose()  # at once: after an abstention this is what stops generation upstream
    with session.clock.timed():
        summary = _summary_chunk(stream)
    relay.finish_request(stream.request, session)
    yield encode(summary)
    if stream.usage is not None:
        yield encode(stream.usage)


async def _guard_chunk(stream: _Stream, chunk: dict[str, Any]) -> dict[str, Any]:
    """Feed one upstream chunk to the guard and shape what the client receives.

    Hot path: one timed block per chunk; it awaits only on the first chunk (the gate's row) and
    the last (the last scores).
    """
    request, session = stream.request, stream.session
    if (n_prompt := prompt_length(chunk, request.endpoint)) is not None:
        with session.clock.timed():
            session.start(n_prompt)
        await session.check_gate()  # before any text leaves: the gate may abstain on the question alone
    with session.clock.timed():
        if not stream.ids:  # every chunk of a stream carries the same
            stream.ids = chunk_ids(chunk)
        choices = chunk.get("choices")
        if not choices:  # the usage chunk
            hide_token_ids(chunk, stream=True)
            return chunk
        choice = choices[0]
        token_ids = choice.get("token_ids") or ()
        if request.options.mode == "steer":
            _remember(stream, chunk, choice, token_ids)
        text = choice_text(choice, request.endpoint, stream=True)
        if token_ids or text:
            session.add_chunk(token_ids, text)
            session.add_logprobs(choice_logprobs(choice, request.endpoint), len(token_ids))
        session.pull()
        if choice.get("finish_reason") is None:
            _shape(stream, chunk, choice)
            return chunk
    stream.finished = True
    await session.finish()
    with session.clock.timed():
        _shape(stream, chunk, choice)
    return chunk


def _remember(stream: _Stream, chunk: dict[str, Any], choice: dict[str, Any], token_ids: Sequence[int]) -> None:
    """Mode "steer": the prompt's and the generated token ids, which a steered request starts from."""
    holder = chunk if stream.request.endpoint == "chat_completions" else choice
    if not stream.prompt_ids and isinstance(holder.get("prompt_token_ids"), list):
        stream.prompt_ids = list(holder["prompt_token_ids"])
    stream.generated.extend(token_ids)


def _shape(stream: _Stream, chunk: dict[str, Any], choice: dict[str, Any]) -> None:
    """The guard's increment into the chunk's choice; the text it holds and the token ids the client did not
    ask for out of it."""
    request, session = stream.request, stream.session
    held = stream.held
    if held or not request.wants_token_ids:
        hide_token_ids(chunk, stream=True)
    event = session.drain()
    if held or event.abstained is not None:  # a gate abstains in any mode but pass
        set_choice_text(choice, request.endpoint, True, event.text)
        if "logprobs" in choice:
            choice["logprobs"] = None
    elif request.added_logprobs and "logprobs" in choice:
        choice["logprobs"] = None  # the answer check asked for them, not the client
    increment: dict[str, Any] = {}
    if event.token_scores:
        increment["tokens"] = token_payload(event.token_scores, session.guard.rule.labels)
    if event.sentences:
        increment["sentences"] = sentence_payload(event.sentences)
    if event.abstained is not None:
        increment["abstained"] = event.abstained.model_dump(mode="json")
        choice["finish_reason"] = "stop"
        hide_token_ids(choice, stream=True)
    if event.steer is not None:  # the steered text follows in the next chunks
        increment["steered"] = event.steer.model_dump(mode="json")
        choice["finish_reason"] = None
    if increment:
        choice["guard"] = increment


def _held(request: GuardedRequest) -> bool:
    """Whether the guard holds text until it is decided (the client gets the text it releases)."""
    return request.options.mode == "abstain" or (request.options.mode == "steer" and
                                                 request.options.steer_how != "always")


def _summary_chunk(stream: _Stream) -> dict[str, Any]:
    request = stream.request
    chat = request.endpoint == "chat_completions"
    choice: dict[str, Any] = {"index": 0, "delta": {}} if chat else {"index": 0, "text": "", "logprobs": None}
    choice["finish_reason"] = None
    choice["guard"] = mark(summary_payload(stream.session.summary(), gate=stream.session.gate_decision,
                                           answer=stream.session.answer_decision),
                           stream.session.failure)
    return {**chunk_head(stream.ids, request.endpoint, request.body.get("model")), "choices": [choice]}
