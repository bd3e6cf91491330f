"""Serving a guarded request: validate, forward to the upstream vLLM server, guard the answer.

No web framework here: :meth:`Relay.handle` turns a request body into a :class:`JSONReply` or a
:class:`StreamReply` (server-sent events, :mod:`adapters.http.serve.streaming`), and
``adapters.http.serve.router`` turns those into HTTP responses. Every POST to a completions endpoint is counted once in
``guard_requests_total``: with its decision, or ``error`` when it was refused or failed (a client
that disconnects mid-stream is not counted).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from adapters.http.errors import APIError, UpstreamError, invalid_request
from adapters.http.failure import mark, record
from adapters.http.forwarding import Forwarder, JSONReply, StreamReply
from adapters.http.protocol import (
    ENDPOINT_PATHS,
    Endpoint,
    parse_body,
    set_choice_text,
    summary_payload,
    token_payload,
)
from adapters.http.request_log import trace_headers
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.protocol import (
    GuardedRequest,
    choice_logprobs,
    guarded_request,
    hide_token_ids,
    prompt_length,
)
from adapters.http.serve.sampling import Samples, question_of
from adapters.http.serve.session import GuardSession
from adapters.http.serve.steer import Steering, steer_always, steer_answer
from adapters.http.serve.streaming import open_stream
from adapters.http.settings import ServeSettings
from adapters.http.tokens import TokenTexts
from guard.errors import AdapterError, RequestOptionError
from guard.gating import GateRule
from guard.metrics import GuardMetrics
from guard.verdicts import VerdictRule

__all__ = ["Relay"]


class Relay(Forwarder):
    """Guarded forwarding of OpenAI requests to one upstream vLLM OpenAI server.

    Args:
        settings: server settings (served model name, default mode, timeouts).
        client: the shared HTTP client, whose ``base_url`` is the upstream.
        rule: the probe's verdict rule.
        feed: where the engine's scores arrive.
        texts: splits a non-streamed answer's tokens into texts.
        metrics: where requests are recorded.
        gate: the pre-generation gate (``None``: none loaded).
        steering: the engine's steering vector (``None``: mode "steer" is refused).
    """

    def __init__(self, settings: ServeSettings, client: httpx.AsyncClient, rule: VerdictRule, feed: ScoreFeed,
                 texts: TokenTexts, metrics: GuardMetrics, gate: GateRule | None = None,
                 steering: Steering | None = None) -> None:
        self.settings, self.client, self.rule, self.feed = settings, client, rule, feed
        self.texts, self.metrics, self.gate, self.steering = texts, metrics, gate, steering
        self.who = "the upstream vLLM server"

    async def handle(self, endpoint: Endpoint, read_body: Callable[[], Awaitable[bytes]]) -> JSONReply | StreamReply:
        """Serve one POST; every failure becomes an OpenAI-shaped error reply."""
        mode = self.settings.mode
        session: GuardSession | None = None
        streaming = False
        self.metrics.in_flight.inc()
        try:
            raw = await read_body()
            started = time.perf_counter()
            request = guarded_request(parse_body(raw), endpoint, self.settings.served_name, self.settings.mode,
                                      self.settings.abstain_message)
            mode = request.options.mode
            request, session = self._session(request)
            session.clock.busy += time.perf_counter() - started
            if request.stream:
                events = await open_stream(self, request, session)
                streaming = True  # the stream closes the session and counts the request when it ends
                return StreamReply(events)
            return await self._complete(request, session)
        except (APIError, AdapterError) as exc:  # AdapterError: the engine's scores do not fit this server's probe
            return self.error_reply(endpoint, mode, exc)
        finally:
            if not streaming:
                if session is not None:
                    session.close()
                self.metrics.in_flight.dec()

    def _session(self, request: GuardedRequest) -> tuple[GuardedRequest, GuardSession]:
        strength = None
        if request.options.mode == "steer":
            strength = Steering.strength_for(self.steering, request.options)
            if request.options.steer_how == "always":
                request = steer_always(request, strength)
        try:
            session = GuardSession(self.rule, request.options, request.key, self.feed, self.metrics,
                                   self.settings.score_timeout, streamed=request.stream, gate=self.gate,
                                   on_failure=self.settings.on_guard_failure, steer_strength=strength,
                                   upstream_timeout=self.settings.upstream_timeout,
                                   question=question_of(request.body, request.endpoint))
        except RequestOptionError as exc:
            raise invalid_request(str(exc), param=exc.param) from exc
        if request.options.answer_samples and session.answers is not None and session.answers.sampling is not None:
            session.samples = Samples(self, self.client, request.endpoint, request.body, session.answers.sampling)
        return request, session

    async def send(self, request: GuardedRequest) -> httpx.Response:
        """Send the request upstream (streamed body); the caller closes the response.

        Raises:
            UpstreamError: unreachable (502), timed out (504) or broke the protocol (502).
            APIError: the upstream's own error answer (its 4xx status, OpenAI's shape).
        """
        return await self.post(self.client, ENDPOINT_PATHS[request.endpoint], request.body, trace_headers())

    async def _complete(self, request: GuardedRequest, session: GuardSession) -> JSONReply:
        payload = _json_object(await self.read(await self.send(request)))
        choice = _first_choice(payload)
        with session.clock.timed():
            n_prompt = prompt_length(payload, request.endpoint)
            if n_prompt is None or not isinstance(choice.get("token_ids"), list):
                raise UpstreamError("protocol", "the upstream answer lacks prompt_token_ids/token_ids; guard serve "
                                    "needs a vLLM OpenAI server that honours return_token_ids")
            session.start(n_prompt)
        await session.check_gate()
        with session.clock.timed():
            session.add_pieces(self.texts.pieces(choice["token_ids"]))
            session.add_logprobs(choice_logprobs(choice, request.endpoint), len(choice["token_ids"]))
            session.pull()
        await session.finish()
        if session.wants_steering:
            await steer_answer(self, request, session, payload, choice, _prompt_ids(payload, request.endpoint))
        with session.clock.timed():
            summary = session.summary()
            if summary.decision == "abstain":
                set_choice_text(choice, request.endpoint, False, request.options.message)
                choice.update(finish_reason="stop", logprobs=None)
                hide_token_ids(payload, stream=False)  # they would spell out the withheld answer
            elif not request.wants_token_ids:
                hide_token_ids(payload, stream=False)
            if request.added_logprobs:
                choice["logprobs"] = None  # the answer check asked for them, not the client
            choice["guard"] = summary_payload(summary, token_payload(session.released, self.rule.labels),
                                              gate=session.gate_decision,
                                              answer=session.answer_decision)
            mark(choice["guard"], session.failure)
        self.finish_request(request, session)
        return JSONReply(200, payload)

    def finish_request(self, request: GuardedRequest, session: GuardSession) -> None:
        """Record a request that completed: its summary, the scores it missed and the guard's latency (which
        counts this recording too, all but the latency's own observation)."""
        with session.clock.timed():
            self.metrics.record_summary(request.endpoint, session.summary())
            record(self.metrics, session.failure, self.settings.on_guard_failure)
        self.metrics.observe_guard_latency(session.clock.busy, session.clock.waited, session.clock.cpu)


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        return parse_body(content)
    except APIError as exc:
        raise UpstreamError("protocol", f"the upstream answered 200 with a body that is not a JSON object "
                            f"({exc.message[:120]})") from exc


def _prompt_ids(payload: dict[str, Any], endpoint: Endpoint) -> list[int]:
    holder = payload if endpoint == "chat_completions" else (payload.get("choices") or [{}])[0]
    return list(holder.get("prompt_token_ids") or [])


def _first_choice(payload: dict[str, Any]) -> dict[str, Any]:
    choices = payload.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        count = len(choices) if isinstance(choices, list) else "no"
        raise UpstreamError("protocol", f"the upstream answer has {count} "
                            "choices; the guard expects exactly one per request")
    return choices[0]
