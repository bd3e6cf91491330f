"""guard proxy's reader: a local guarded engine reads a foreign answer, and the probe judges its states.

Cross-process contract: the reader is vLLM's OpenAI server started by
:class:`adapters.http.upstream.UpstreamServer` (capture on, prefix caching off). For each answer the
reader gets one completions request whose ``prompt`` is token ids (question then answer, see
:mod:`adapters.http.proxy.reader_prompt`), with ``max_tokens: 1``, ``temperature: 0``, a fresh guard key in
``vllm_xargs`` and ``return_token_ids: true``. The engine computes every prompt position in
prefill and its workers publish each position's probe scores under the key, so — unlike
``guard serve``, whose scores lag the text by one token — every answer token has a score, the
last one included. The reader waits (on the event loop) until position ``len(prompt) - 1`` has
arrived, at most ``score_timeout``, then feeds a :class:`~guard.policy.StreamGuard` the answer
tokens' texts and scores in position order. Missing scores are a guard failure
(:attr:`Reading.failure`), handled by the ``on_guard_failure`` policy (:mod:`adapters.http.failure`):
``fail_open`` decides with the scores there are, ``fail_closed`` abstains.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import httpx

from adapters.http.errors import ReaderError, from_upstream
from adapters.http.failure import FailurePolicy, GuardFailure, fail, scores_missing
from adapters.http.proxy.reader_prompt import ReaderPrompts
from adapters.http.score_feed import ScoreFeed
from guard.policy import GuardEvent, GuardOptions, StreamGuard, TokenScore
from guard.request_options import KEY_FIELD
from guard.verdicts import GuardSummary, VerdictRule

__all__ = ["Reading", "Reader"]


@dataclass(frozen=True)
class Reading:
    """The guard's verdict on one answer, as the reader read it.

    Attributes:
        summary: sentence verdicts and the decision (positions are reader-prompt positions).
        tokens: every released token score, in position order.
        scores_complete: whether every answer token's score arrived in time.
        seconds: wall time of the reading (reader request, wait for scores, verdicts).
        failure: why the guard could not judge the answer (``None``: it could).
    """

    summary: GuardSummary
    tokens: tuple[TokenScore, ...]
    scores_complete: bool
    seconds: float
    failure: GuardFailure | None = None


class Reader:
    """Reads answers through the reader's vLLM server and turns its scores into verdicts.

    Args:
        client: HTTP client whose ``base_url`` is the reader's vLLM server (loopback).
        model: the name the reader's server serves (``guard.reader_model`` in answers).
        prompts: builds the reader's token ids.
        feed: where the reader engine's scores arrive.
        rule: the probe's verdict rule.
        score_timeout: seconds to wait for the last prompt position's scores.
        max_model_len: the reader's context; a longer question + answer is refused.
        on_failure: ``on_guard_failure``: what a reading whose scores do not all arrive does.

    Example:
        >>> reading = await reader.read(prompts.chat_prefix(messages), "Paris is in France.", options)  # doctest: +SKIP
        >>> reading.summary.sentences[0].verdict
        'supported'
    """

    def __init__(self, client: httpx.AsyncClient, model: str, prompts: ReaderPrompts, feed: ScoreFeed,
                 rule: VerdictRule, score_timeout: float, max_model_len: int,
                 on_failure: FailurePolicy = "fail_open") -> None:
        self.client, self.model, self.prompts, self.feed, self.rule = client, model, prompts, feed, rule
        self.score_timeout, self.max_model_len, self.on_failure = score_timeout, max_model_len, on_failure
        self._k = rule.columns  # the probe's label and shift columns of a score row

    async def read(self, prefix: list[int], answer: str, options: GuardOptions) -> Reading:
        """Read ``answer`` after the question's token ids ``prefix``.

        Raises:
            ReaderError: the reader cannot take the input, is unreachable, fails or answers unexpectedly.
            AdapterError: the reader's scores do not fit the probe.
        """
        started = time.perf_counter()
        guard = StreamGuard(self.rule, options)
        ids, pieces = self.prompts.answer(answer)
        if not ids:
            return Reading(guard.summary(), _released([guard.finish()]), True, time.perf_counter() - started)
        prompt, start = prefix + ids, len(prefix)
        if len(prompt) >= self.max_model_len:
            raise ReaderError(f"the reader cannot read this answer: question and answer take {len(prompt)} of the "
                              f"reader's tokens and it reads at most max_model_len - 1 = {self.max_model_len - 1}; "
                              "raise max_model_len (GUARD_MAX_MODEL_LEN) or send shorter requests")
        key = uuid.uuid4().hex
        try:
            await self._send(prompt, key)
            complete = await self.feed.wait_for(key, len(prompt), self.score_timeout)
            got = self.feed.take(key, start)
        finally:
            self.feed.close(key)
        rows = dict(zip(got.positions.tolist(), got.scores))
        events = []
        for offset, piece in enumerate(pieces):  # text, then its score: position order
            position = start + offset
            events.append(guard.add_text(position, piece))
            if (row := rows.get(position)) is not None:
                events.append(guard.add_scores(position, row[:, : self._k]))
        failure = None
        if not complete:
            failure = scores_missing(sum(p in rows for p in range(start, len(prompt))), len(ids), self.score_timeout,
                                     "reader")
            events.append(fail(guard, failure, self.on_failure))
        events.append(guard.finish())
        return Reading(guard.summary(), _released(events), complete, time.perf_counter() - started, failure)

    async def _send(self, prompt: list[int], key: str) -> None:
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                "vllm_xargs": {KEY_FIELD: key}, "return_token_ids": True}
        try:
            response = await self.client.post("/v1/completions", json=body)
        except httpx.HTTPError as exc:
            raise ReaderError(f"the reader ({self.model!r}, guard proxy's local vLLM server) failed: "
                              f"{type(exc).__name__}: {exc}; check GET /healthz and the log") from exc
        if response.status_code != 200:
            detail = from_upstream(response.status_code, response.content, "the reader").message
            raise ReaderError(f"the reader ({self.model!r}) refused the answer (HTTP {response.status_code}): {detail}")
        try:
            payload = json.loads(response.content)
            read = payload["choices"][0]["prompt_token_ids"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ReaderError(f"the reader ({self.model!r}) answered without choices[0].prompt_token_ids ({exc!r}); "
                              "guard proxy needs a vLLM OpenAI server that honours return_token_ids") from exc
        if not isinstance(read, list) or len(read) != len(prompt):
            raise ReaderError(f"the reader ({self.model!r}) read {len(read) if isinstance(read, list) else 'no'} "
                              f"tokens, expected {len(prompt)}; its scores cannot be mapped to the answer")


def _released(events: list[GuardEvent]) -> tuple[TokenScore, ...]:
    return tuple(score for event in events for score in event.token_scores)
