"""guard proxy: forward OpenAI requests to a foreign API, read its answers with the local reader.

No web framework here: :meth:`ProxyRelay.handle` turns a request into a :class:`JSONReply` or a
:class:`StreamReply` (:mod:`adapters.http.proxy.streaming`). Every choice's answer text is read by the
reader (each choice its own reader request, concurrently) and gets ``guard`` with ``source:
"reader"``; a choice that already carries ``guard`` (the upstream is itself guarded) keeps it and
is not read. A guarded upstream (guard serve says so in the ``x-guard-default-mode`` header) that
applies another mode than the request's, while the guard object is not passed on
(``upstream_guarded`` off), gets the request refused with 400 ``mode_unavailable``: never a
silent downgrade. Every POST is counted once in ``guard_requests_total``: with the most severe
decision of its choices (abstain > flag > pass), or ``error``. A reader failure does not fail the
request: the choice is a guard failure, handled by ``on_guard_failure`` (:mod:`adapters.http.failure`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from adapters.http.errors import APIError, ReaderError, UpstreamError, invalid_request
from adapters.http.failure import GuardFailure, fail, mark, reader_failed, record
from adapters.http.forwarding import Forwarder, JSONReply, StreamReply
from adapters.http.protocol import (
    DEFAULT_MODE_HEADER,
    Endpoint,
    choice_text,
    parse_body,
    set_choice_text,
    summary_payload,
    token_payload,
)
from adapters.http.proxy.protocol import ProxyRequest, choice_index, proxy_request
from adapters.http.proxy.reader import Reader, Reading
from adapters.http.proxy.streaming import open_proxy_stream
from adapters.http.settings import ProxySettings
from guard.errors import AdapterError
from guard.metrics import DECISIONS, GuardMetrics
from guard.policy import GuardOptions, StreamGuard
from guard.verdicts import VerdictRule

__all__ = ["ProxyRelay", "SOURCE"]

#: what a read answer's ``guard.source`` says
SOURCE = "reader"
_PATHS: dict[str, str] = {"chat_completions": "chat/completions", "completions": "completions"}
_SEVERITY = {"abstain": 2, "flag": 1, "pass": 0}


class ProxyRelay(Forwarder):
    """Guarded forwarding of OpenAI requests to a foreign OpenAI-compatible API.

    Args:
        settings: proxy settings (default mode, abstain message, timeouts).
        upstream: HTTP client whose ``base_url`` is the foreign API's base URL (``.../v1``).
        reader: reads answers with the local reader engine.
        rule: the probe's verdict rule.
        metrics: where requests are recorded.
    """

    def __init__(self, settings: ProxySettings, upstream: httpx.AsyncClient, reader: Reader, rule: VerdictRule,
                 metrics: GuardMetrics) -> None:
        self.settings, self.upstream, self.reader, self.rule, self.metrics = settings, upstream, reader, rule, metrics
        self.who = f"the upstream API at {settings.upstream}"

    async def handle(self, endpoint: Endpoint, read_body: Callable[[], Awaitable[bytes]],
                     headers: Mapping[str, str]) -> JSONReply | StreamReply:
        """Serve one POST; every failure becomes an OpenAI-shaped error reply."""
        mode = self.settings.mode
        streaming = False
        self.metrics.in_flight.inc()
        try:
            raw = await read_body()
            started = time.perf_counter()
            request = proxy_request(parse_body(raw), endpoint, headers, self.settings.mode,
                                    self.settings.abstain_message, self.rule, self.reader.prompts,
                                    self.settings.upstream_guarded)
            mode = request.options.mode
            busy = time.perf_counter() - started
            if request.stream:
                events = await open_proxy_stream(self, request, busy, self.settings.sse_keepalive)
                streaming = True  # the stream counts the request and the gauge when it ends
                return StreamReply(events)
            return await self._complete(request, busy)
        except (APIError, AdapterError) as exc:  # AdapterError: the reader's scores do not fit this server's probe
            return self.error_reply(endpoint, mode, exc)
        finally:
            if not streaming:
                self.metrics.in_flight.dec()

    async def send(self, request: ProxyRequest) -> httpx.Response:
        """Send the request to the foreign API (streamed body); the caller closes the response.

        Raises:
            UpstreamError: unreachable (502), timed out (504), failed with a 5xx (502).
            APIError: the upstream's own 4xx, with its status, in OpenAI's shape.
        """
        response = await self.post(self.upstream, _PATHS[request.endpoint], request.body, request.headers)
        applied = response.headers.get(DEFAULT_MODE_HEADER)
        if applied is not None and not self.settings.upstream_guarded and applied != request.options.mode:
            await response.aclose()  # a stream's generation stops; nothing reached the client
            raise self.mode_unavailable(request.options.mode, applied)
        return response

    def mode_unavailable(self, asked: str, applied: str) -> APIError:
        """400 for a mode this proxy cannot honour: its upstream is guard serve, which applies ``applied``."""
        return invalid_request(
            f"guard.mode={asked!r} cannot be honoured: {self.who} is itself guard serve and judges its answers in "
            f"mode {applied!r}, and this proxy does not pass the guard object on; start guard proxy with "
            "--upstream-guarded (GUARD_UPSTREAM_GUARDED=1) so the upstream applies the request's guard options, or "
            f"send guard.mode={applied!r}", param="guard.mode", code="mode_unavailable")

    async def read_all(self, request: ProxyRequest, answers: dict[int, str]) -> dict[int, Reading]:
        """Read every choice's answer (choice index -> text), each in its own reader request, concurrently."""
        indices = list(answers)
        readings = await asyncio.gather(*(self._read(request, i, answers[i]) for i in indices))
        return dict(zip(indices, readings))

    @property
    def prompts(self) -> Any:
        """The reader's prompt builder (the judge endpoint builds its questions with it)."""
        return self.reader.prompts

    async def read_one(self, request: ProxyRequest, answer: str) -> Reading:
        """Read one answer to the request's first question (the judge endpoint); a reader failure is a guard
        failure with the policy applied, as for a proxied answer."""
        return await self._read(request, 0, answer)

    async def _read(self, request: ProxyRequest, index: int, answer: str) -> Reading:
        """One choice's reading; a reader failure is a guard failure, not a failed request."""
        try:
            return await self.reader.read(request.prefix(index), answer, request.options)
        except ReaderError as exc:
            return self._unread(request.options, reader_failed(exc.message))

    def _unread(self, options: GuardOptions, failure: GuardFailure) -> Reading:
        """The reading of an answer the reader could not read: nothing judged, the policy applied."""
        guard = StreamGuard(self.rule, options)
        fail(guard, failure, self.settings.on_guard_failure)
        guard.finish()
        return Reading(guard.summary(), (), False, 0.0, failure)

    def guard_field(self, reading: Reading) -> dict[str, Any]:
        """A read choice's ``guard`` field: the summary, ``source: "reader"``, ``reader_model`` and the tokens."""
        payload = summary_payload(reading.summary, token_payload(reading.tokens, self.rule.labels), source=SOURCE)
        payload["reader_model"] = self.reader.model
        return mark(payload, reading.failure)

    def finish_request(self, request: ProxyRequest, readings: list[Reading], passed: list[Any], busy: float) -> None:
        """Record a completed request: one count with its most severe decision, then every read choice.

        Args:
            readings: the choices the reader read.
            passed: the ``guard`` fields of choices that came guarded from the upstream.
            busy: seconds the guard added (its own work and the readings).
        """
        decisions: list[str] = [r.summary.decision for r in readings]
        decisions += [str(g["decision"]) for g in passed if isinstance(g, dict) and g.get("decision") in DECISIONS]
        decision = max(decisions, key=lambda d: _SEVERITY.get(d, 0), default="pass")
        self.metrics.record_request(request.endpoint, request.options.mode, decision)
        for reading in readings:
            self.metrics.record_choice(reading.summary)
        for reading in readings:
            record(self.metrics, reading.failure, self.settings.on_guard_failure)
        self.metrics.observe_guard_latency(busy)

    async def _complete(self, request: ProxyRequest, busy: float) -> JSONReply:
        payload = self._answer(await self.read(await self.send(request)))
        choices = payload["choices"]
        passed = [c["guard"] for c in choices if "guard" in c]  # the upstream is itself guarded: not read
        applied = {g.get("mode") for g in passed if isinstance(g, dict)} - {request.options.mode}
        if applied and not self.settings.upstream_guarded:  # a guarded upstream that sent no mode header
            raise self.mode_unavailable(request.options.mode, str(sorted(map(str, applied))[0]))
        answers = {choice_index(c, i): _text(choice_text(c, request.endpoint, False))
                   for i, c in enumerate(choices) if "guard" not in c}
        started = time.perf_counter()
        readings = await self.read_all(request, answers)
        for i, choice in enumerate(choices):
            reading = readings.get(choice_index(choice, i))
            if reading is None or "guard" in choice:
                continue
            if reading.summary.decision == "abstain":
                set_choice_text(choice, request.endpoint, False, request.options.message)
                choice.update(finish_reason="stop", logprobs=None)
            choice["guard"] = self.guard_field(reading)
        self.finish_request(request, list(readings.values()), passed, busy + time.perf_counter() - started)
        return JSONReply(200, payload)

    def _answer(self, content: bytes) -> dict[str, Any]:
        try:
            payload = parse_body(content)
        except APIError as exc:
            raise UpstreamError("protocol", f"{self.who} answered 200 with a body that is not a JSON object "
                                f"({exc.message[:120]})") from exc
        choices = payload.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise UpstreamError("protocol", f"{self.who} answered 200 without a list of choices; expected OpenAI's "
                                "completion object")
        return payload


def _text(content: object) -> str:
    """An answer's text; content that is not a string (e.g. a list of parts) is not read."""
    return content if isinstance(content, str) else ""
