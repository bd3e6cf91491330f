"""The wire format both servers share: parsing a body, the ``guard`` object, and the guard's fields in answers.

A request body is an OpenAI chat or completions request plus an optional ``guard`` object
(:class:`guard.policy.GuardOptions`). Answers carry the guard's results in an extra field
``guard`` on each choice (see docs/serving.md). What each server does to a request before it goes
upstream: :mod:`adapters.http.serve.protocol` (guard serve) and :mod:`adapters.http.proxy.protocol`
(guard proxy).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from adapters.http.errors import invalid_request
from adapters.http.json_body import JSONBodyError, load_json
from guard.answer_check import AnswerDecision
from guard.errors import RequestOptionError
from guard.gating import GateDecision
from guard.policy import GuardOptions, TokenScore, parse_guard_options
from guard.verdicts import GuardSummary, Mode, SentenceVerdict

__all__ = ["DEFAULT_MODE_HEADER", "Endpoint", "ENDPOINT_PATHS", "parse_body", "guard_options", "choice_text",
           "set_choice_text", "token_payload", "sentence_payload", "summary_payload"]

Endpoint = Literal["chat_completions", "completions"]
ENDPOINT_PATHS: dict[Endpoint, str] = {"chat_completions": "/v1/chat/completions", "completions": "/v1/completions"}
#: what a guarded answer's ``guard.source`` says: scores came from inside the engine
SOURCE = "engine"
#: the response header naming the mode guard serve applies to requests without a ``guard`` object: a
#: guard proxy in front of it learns from it, before any body, that it cannot apply another mode itself
DEFAULT_MODE_HEADER = "x-guard-default-mode"


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (strict JSON: :func:`adapters.http.json_body.load_json`).

    Raises:
        APIError: 400 when it is not valid UTF-8 JSON, nests more than
            :data:`~adapters.http.json_body.MAX_DEPTH` levels, holds a non-finite number (``param`` names
            the field), or is not an object.
    """
    try:
        body = load_json(raw)
    except JSONBodyError as exc:
        raise invalid_request(str(exc), param=exc.param) from exc
    except UnicodeDecodeError as exc:
        raise invalid_request(f"the request body is not valid UTF-8 ({exc.reason} at byte {exc.start}); send the JSON "
                              "body encoded as UTF-8") from exc
    except ValueError as exc:
        raise invalid_request(f"the request body is not valid JSON ({exc}); send a JSON object such as "
                              '{"model": "...", "messages": [...]}') from exc
    if not isinstance(body, dict):
        raise invalid_request(f"the request body is a JSON {type(body).__name__}; expected a JSON object such as "
                              '{"model": "...", "messages": [...]}')
    return body


def guard_options(raw: object, default_mode: Mode, abstain_message: str | None) -> GuardOptions:
    """A request's ``guard`` object with the server's defaults filled in.

    Raises:
        APIError: 400 naming the bad field (``param``: e.g. ``guard.alpha``).
    """
    if isinstance(raw, dict):
        defaults: dict[str, Any] = {"mode": default_mode}
        if abstain_message is not None:
            defaults["abstain_message"] = abstain_message
        raw = {**defaults, **raw}
    elif raw is None:
        return _defaults(default_mode, abstain_message)
    try:
        return parse_guard_options(raw)
    except RequestOptionError as exc:
        raise invalid_request(str(exc), param=exc.param) from exc


@functools.lru_cache(maxsize=8)
def _defaults(mode: Mode, abstain_message: str | None) -> GuardOptions:
    """The options of a request without ``guard`` (validated once per server setting; they are frozen)."""
    return GuardOptions(mode=mode, abstain_message=abstain_message)


def choice_text(choice: dict[str, Any], endpoint: Endpoint, stream: bool) -> str:
    """The generated text of a choice (a chunk's delta when ``stream``)."""
    if endpoint == "completions":
        return choice.get("text") or ""
    holder = choice.get("delta" if stream else "message") or {}
    return holder.get("content") or ""


def set_choice_text(choice: dict[str, Any], endpoint: Endpoint, stream: bool, text: str) -> None:
    """Replace the generated text of a choice (a chunk's delta when ``stream``)."""
    if endpoint == "completions":
        choice["text"] = text
        return
    holder = choice.setdefault("delta" if stream else "message", {})
    if text or holder.get("content") is not None:
        holder["content"] = text


def token_payload(scores: tuple[TokenScore, ...] | list[TokenScore], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Token scores as ``[{"position": p, "p": {label: probability}}]``."""
    return [{"position": s.position, "p": dict(zip(labels, s.probs))} for s in scores]


def sentence_payload(verdicts: tuple[SentenceVerdict, ...] | list[SentenceVerdict]) -> list[dict[str, Any]]:
    """Sentence verdicts as JSON objects."""
    return [v.model_dump(mode="json") for v in verdicts]


def summary_payload(summary: GuardSummary, tokens: list[dict[str, Any]] | None = None,
                    gate: GateDecision | None = None, source: str = SOURCE,
                    answer: AnswerDecision | None = None) -> dict[str, Any]:
    """A choice's ``guard`` field: the summary, ``source`` (``engine``; guard proxy's ``reader``), the
    pre-generation gate's decision (``null`` when no gate ran), the answer check's (``answer_check``; present
    when it ran) and (non-streamed answers) every token score."""
    payload = {**summary.model_dump(mode="json"), "source": source,
               "gate": None if gate is None else gate.model_dump(mode="json")}
    if answer is not None:
        payload["answer_check"] = answer.model_dump(mode="json")
    if tokens is not None:
        payload["tokens"] = tokens
    return payload
