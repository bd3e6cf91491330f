"""guard proxy's server-sent events: relay (or hold) the foreign stream, read the answers when it ends.

Modes "flag" and "pass": every upstream event's ``data`` is relayed as it arrives, byte for byte
(comments and other SSE fields are dropped), except chunks without choices (the usage chunk), which
are held. When the upstream's stream ends (``[DONE]``), each choice's whole answer is read and one
extra chunk carries every read choice's full ``guard`` summary (``delta: {}`` or ``text: ""``,
``finish_reason: null``), then the usage chunk (last, as OpenAI sends it), then ``data: [DONE]``.

Mode "abstain" with one choice: sentence by sentence. Events are held; each time the upstream's
text closes a sentence, the answer so far (up to that sentence's end) is read, and if no sentence
is flagged the held events before the one that closed it are sent (that one already holds the next
sentence's start). At the first flagged sentence the upstream stream is closed and one chunk with
the abstain message (``finish_reason: "stop"``) follows the sentences already sent. The reader is
causal, so a sentence's verdict does not depend on the text after it: reading prefixes gives the
verdicts a reading of the whole answer gives. Mode "abstain" with several choices: nothing is sent
while the upstream streams; when it ends the answers are read, and the held events are sent
unchanged, except that a choice whose reading abstains loses its events and gets the abstain
message chunk instead. Either way the summary chunk follows, then chunks without choices (the usage
chunk) and ``[DONE]``, and a client never sees text the reader has not judged.

Choices that carry ``guard`` themselves (the upstream is a guarded engine) are relayed and not read.
Failures after the first event are sent as one error event, then ``[DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.http.errors import UpstreamError
from adapters.http.keepalive import with_keepalive
from adapters.http.protocol import choice_text
from adapters.http.proxy.ports import ProxyRelayPort
from adapters.http.proxy.protocol import ProxyRequest, choice_index
from adapters.http.proxy.reader import Reading
from adapters.http.sse import (
    EventSource,
    PassedOnError,
    chunk_head,
    chunk_ids,
    encode,
    encode_data,
    guarded_events,
    parse_chunk,
)
from guard.sentences import SentenceSplitter

__all__ = ["open_proxy_stream"]


@dataclass
class _Stream:
    """What the proxy remembers while one stream passes through."""

    relay: ProxyRelayPort
    request: ProxyRequest
    busy: float  #: seconds the guard added so far
    ids: dict[str, Any] = field(default_factory=dict)  # id, object, created, model of the upstream's chunks
    texts: dict[int, list[str]] = field(default_factory=dict)  # choice index -> text pieces
    guarded: dict[int, Any] = field(default_factory=dict)  # choice index -> the upstream's own guard field
    unfinished: set[int] = field(default_factory=set)
    held: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # abstain mode: (data, chunk)
    done: bool = False
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)  # one-choice abstain: sentence by sentence
    pieces: int = 0  # text pieces fed to the splitter (its positions)
    stopped: Reading | None = None  # the reading that abstained mid-stream


async def open_proxy_stream(relay: ProxyRelayPort, request: ProxyRequest, busy: float,
                            keepalive: float = 15.0) -> AsyncGenerator[bytes, None]:
    """Open the upstream's stream and return the guarded events (in mode "abstain", which holds them, with an SSE
    keep-alive comment after every ``keepalive`` seconds without an event: :mod:`adapters.http.keepalive`).

    Raises:
        APIError: before any event, when the upstream refuses the request or cannot be reached.
    """
    response = await relay.send(request)
    events = _guarded(_Stream(relay, request, busy), response)
    if request.options.mode == "abstain":
        events = with_keepalive(events, keepalive)
    return guarded_events(events, response, relay, request.endpoint, request.options.mode)


async def _guarded(stream: _Stream, response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The relayed events (none in abstain mode, which holds them), then those that follow the reading."""
    hold, who = stream.request.options.mode == "abstain", stream.relay.who
    source = EventSource(response, who)
    async with aclosing(source.payloads()) as payloads:
        async for data in payloads:
            chunk = parse_chunk(data, who)
            if "error" in chunk:  # the upstream failed mid-stream: its own error event, passed on
                yield encode_data(data)
                raise PassedOnError(who)
            _track(stream, chunk)
            if not hold:
                if chunk.get("choices"):
                    yield encode_data(data)
                else:  # the usage chunk goes last, after the summary
                    stream.held.append((data, chunk))
                continue
            stream.held.append((data, chunk))
            for event in await _verify_sentences(stream, chunk):
                yield event
            if stream.stopped is not None:
                break  # a flagged sentence: closing the upstream stream stops its generation
    stream.done = source.done
    await response.aclose()
    for event in (await _finish(stream) if stream.stopped is None else _stop(stream)):
        yield event


async def _verify_sentences(stream: _Stream, chunk: dict[str, Any]) -> list[bytes]:
    """One-choice abstain mode: read the answer up to each sentence the chunk closed; the events now verified."""
    request = stream.request
    if request.n != 1 or len(request.prefixes) != 1 or stream.guarded or not (chunk.get("choices") or []):
        return []
    closed = stream.splitter.feed(stream.pieces, stream.texts.get(0, [""])[-1])
    stream.pieces += 1
    if not closed:
        return []
    started = time.perf_counter()
    reading = (await stream.relay.read_all(request, {0: "".join(stream.texts[0])[: closed[-1].end]}))[0]
    stream.busy += time.perf_counter() - started
    if reading.summary.decision == "abstain":  # a flagged sentence, or a reader failure under fail_closed
        stream.stopped = reading
        return []
    verified, stream.held = stream.held[:-1], stream.held[-1:]  # the last chunk holds the next sentence's start
    return [encode_data(data) for data, _ in verified]


def _stop(stream: _Stream) -> list[bytes]:
    """The events after a sentence flagged mid-stream: the abstain message, the summary (of the text read)."""
    assert stream.stopped is not None
    trailing = [encode_data(data) for data, chunk in stream.held if not chunk.get("choices")]
    events = [encode(_chunk_with(stream, 0, stream.request.options.message, "stop")),
              encode(_summary_chunk(stream, {0: stream.stopped})), *trailing]
    stream.relay.finish_request(stream.request, [stream.stopped], [], stream.busy)
    return events


def _track(stream: _Stream, chunk: dict[str, Any]) -> None:
    stream.ids = chunk_ids(chunk) or stream.ids
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise UpstreamError("protocol", f"{stream.relay.who} sent a chunk whose choices are not a list")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise UpstreamError("protocol", f"{stream.relay.who} sent a chunk with a choice that is not an object")
        index = choice_index(choice, i)
        if "guard" in choice:
            stream.guarded[index] = choice["guard"]
        text = choice_text(choice, stream.request.endpoint, stream=True)
        stream.texts.setdefault(index, []).append(text if isinstance(text, str) else "")  # only text is read
        if choice.get("finish_reason") is None:
            stream.unfinished.add(index)
        else:
            stream.unfinished.discard(index)


async def _finish(stream: _Stream) -> list[bytes]:
    """Read the answers; the events that follow the relayed ones (before ``[DONE]``)."""
    if not stream.done and stream.unfinished:
        raise UpstreamError("protocol", f"{stream.relay.who}'s stream ended before its choices finished")
    started = time.perf_counter()
    answers = {i: "".join(parts) for i, parts in stream.texts.items() if i not in stream.guarded}
    readings = await stream.relay.read_all(stream.request, answers)
    events = _release(stream, readings) if stream.request.options.mode == "abstain" else []
    if readings:
        events.append(encode(_summary_chunk(stream, readings)))
    events += [encode_data(data) for data, chunk in stream.held if not chunk.get("choices")]  # usage: last
    stream.relay.finish_request(stream.request, list(readings.values()), list(stream.guarded.values()),
                                stream.busy + time.perf_counter() - started)
    return events


def _release(stream: _Stream, readings: dict[int, Reading]) -> list[bytes]:
    """Abstain mode: the held events, with abstaining choices' events replaced by the abstain message."""
    withheld = {i for i, r in readings.items() if r.summary.decision == "abstain"}
    events = []
    for data, chunk in stream.held:
        choices = chunk.get("choices") or []
        if not choices:
            continue  # the usage chunk follows the summary (_finish)
        if not withheld:
            events.append(encode_data(data))
        elif kept := [c for i, c in enumerate(choices) if choice_index(c, i) not in withheld]:
            events.append(encode({**chunk, "choices": kept}))
    for index in sorted(withheld):
        events.append(encode(_chunk_with(stream, index, stream.request.options.message, "stop")))
    return events  # the usage chunk follows the summary (_finish)


def _chunk_with(stream: _Stream, index: int, text: str, finish_reason: str | None,
                guard: dict[str, Any] | None = None) -> dict[str, Any]:
    chat = stream.request.endpoint == "chat_completions"
    if chat:
        delta = {"role": "assistant", "content": text} if text else {}
        choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None}
    else:
        choice = {"index": index, "text": text, "logprobs": None}
    choice["finish_reason"] = finish_reason
    if guard is not None:
        choice["guard"] = guard
    return {**chunk_head(stream.ids, stream.request.endpoint, stream.request.body.get("model")), "choices": [choice]}


def _summary_chunk(stream: _Stream, readings: dict[int, Reading]) -> dict[str, Any]:
    chunks = [_chunk_with(stream, i, "", None, stream.relay.guard_field(readings[i])) for i in sorted(readings)]
    return {**chunks[0], "choices": [c["choices"][0] for c in chunks]}
