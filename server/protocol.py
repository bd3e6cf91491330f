"""The wire format: validating a client's OpenAI request, and the guard's extension fields in answers.

A request body is an OpenAI chat or completions request plus an optional ``guard`` object
(:class:`guard.policy.GuardOptions`). Before it goes upstream the ``guard`` object is removed, a
fresh guard key is merged into ``vllm_xargs`` (vLLM hands it to the engine workers, which publish
the request's scores under it) and ``return_token_ids`` is switched on (token positions map
scores to text); token ids the client did not ask for are removed from what it receives.

Answers carry the guard's results in an extra field ``guard`` on each choice (see docs/serving.md).
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from guard.errors import RequestOptionError
from guard.gating import GateDecision
from guard.policy import GuardOptions, TokenScore, parse_guard_options
from guard.request_options import HIDDEN_FIELD, KEY_FIELD, STEER_FIELD, STEER_FROM_FIELD
from guard.verdicts import GuardSummary, Mode, SentenceVerdict
from server.errors import APIError, invalid_request
from server.json_body import JSONBodyError, load_json
from server.request_shape import check_request

__all__ = ["DEFAULT_MODE_HEADER", "Endpoint", "ENDPOINT_PATHS", "GuardedRequest", "parse_body", "guarded_request", "guard_options", "prompt_length",
           "choice_text", "set_choice_text", "hide_token_ids", "token_payload", "sentence_payload",
           "summary_payload"]

Endpoint = Literal["chat_completions", "completions"]
ENDPOINT_PATHS: dict[str, str] = {"chat_completions": "/v1/chat/completions", "completions": "/v1/completions"}
#: what a guarded answer's ``guard.source`` says: scores came from inside the engine
SOURCE = "engine"
#: the response header naming the mode guard serve applies to requests without a ``guard`` object: a
#: guard proxy in front of it learns from it, before any body, that it cannot apply another mode itself
DEFAULT_MODE_HEADER = "x-guard-default-mode"


@dataclass(frozen=True)
class GuardedRequest:
    """A validated request, ready to go upstream.

    Attributes:
        endpoint: which OpenAI endpoint.
        body: the body to send upstream (``guard`` removed, key and ``return_token_ids`` added).
        options: the request's guard options (server defaults filled in).
        key: the guard key its scores arrive under.
        stream: whether the client asked for server-sent events.
        wants_token_ids: whether the client itself asked for ``return_token_ids``.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    options: GuardOptions
    key: str
    stream: bool
    wants_token_ids: bool


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (strict JSON: :func:`server.json_body.load_json`).

    Raises:
        APIError: 400 when it is not valid UTF-8 JSON, nests more than
            :data:`~server.json_body.MAX_DEPTH` levels, holds a non-finite number (``param`` names
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


def guarded_request(body: dict[str, Any], endpoint: Endpoint, served_name: str, default_mode: Mode,
                    abstain_message: str | None = None) -> GuardedRequest:
    """Validate a request body and prepare it for the upstream.

    Args:
        body: the client's JSON object (not modified).
        endpoint: which endpoint received it.
        served_name: the only model name served.
        default_mode / abstain_message: server defaults for ``guard.mode`` / ``guard.abstain_message``.

    Raises:
        APIError: 400 for bad guard options or a request the guard cannot score (``n`` > 1, ``best_of``,
            several prompts, ``echo``, reserved ``vllm_xargs`` keys); 404 ``model_not_found``.
    """
    body = dict(body)
    options = guard_options(body.pop("guard", None), default_mode, abstain_message)
    check_request(body, endpoint)
    _check_model(body.get("model"), served_name)
    _check_single_sequence(body, endpoint)
    xargs = body.get("vllm_xargs")
    if xargs is not None and not isinstance(xargs, dict):
        raise invalid_request(f"vllm_xargs={_show(xargs)} is invalid: expected an object of strings and numbers",
                              param="vllm_xargs")
    reserved = sorted({KEY_FIELD, HIDDEN_FIELD, STEER_FIELD, STEER_FROM_FIELD} & set(xargs or {}))
    if reserved:
        fix = ("steer with the guard object instead: guard.mode='steer' (and guard.steer_how, guard.steer_alpha)"
               if reserved[0] in (STEER_FIELD, STEER_FROM_FIELD) else "the guard sets it for every request")
        raise invalid_request(f"vllm_xargs.{reserved[0]} is reserved: {fix}; remove it",
                              param=f"vllm_xargs.{reserved[0]}")
    key = uuid.uuid4().hex
    body["vllm_xargs"] = {**(xargs or {}), KEY_FIELD: key}
    wants = body.get("return_token_ids") is True
    body["return_token_ids"] = True
    return GuardedRequest(endpoint, body, options, key, body.get("stream") is True, wants)


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


def _check_model(model: object, served_name: str) -> None:
    if model is None:
        return
    if not isinstance(model, str):
        raise invalid_request(f"model={_show(model)} is invalid: expected a string such as {served_name!r}", "model")
    if model != served_name:
        raise APIError(404, f"The model `{model}` does not exist: this server serves {served_name!r} "
                            "(GET /v1/models lists it)", param="model", code="model_not_found")


def _check_single_sequence(body: dict[str, Any], endpoint: Endpoint) -> None:
    """Scores are keyed per request, so one request must be one generated sequence."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        raise invalid_request(f"n={n} is not supported: the guard scores one choice per request; send {n} separate "
                              "requests with n=1", param="n")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise invalid_request(f"best_of={_show(best_of)} is not supported: the guard scores one sequence per "
                              "request; omit best_of", param="best_of")
    if body.get("echo") is True:
        raise invalid_request("echo=true is not supported: the guard scores generated text only; omit echo",
                              param="echo")
    prompt = body.get("prompt")
    if endpoint == "completions" and isinstance(prompt, list) and len(prompt) > 1 \
            and all(isinstance(p, (str, list)) for p in prompt):
        raise invalid_request(f"prompt holds {len(prompt)} prompts: the guard scores one prompt per request; send "
                              "one request per prompt", param="prompt")


def _show(value: object) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def prompt_length(payload: dict[str, Any], endpoint: Endpoint) -> int | None:
    """Prompt token count from an upstream answer or chunk with ``return_token_ids`` (``None`` if absent)."""
    if endpoint == "chat_completions":
        ids = payload.get("prompt_token_ids")
    else:
        choices = payload.get("choices") or [{}]
        ids = choices[0].get("prompt_token_ids")
    return len(ids) if isinstance(ids, list) else None


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


def hide_token_ids(payload: dict[str, Any], stream: bool) -> None:
    """Remove the token ids the guard asked for: as the upstream would have answered without them."""
    targets = [payload, *(payload.get("choices") or [])]
    for target in targets:
        for field in ("prompt_token_ids", "token_ids"):
            if field in target:
                if stream:
                    del target[field]  # vLLM leaves unset fields out of chunks
                else:
                    target[field] = None


def token_payload(scores: tuple[TokenScore, ...] | list[TokenScore], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Token scores as ``[{"position": p, "p": {label: probability}}]``."""
    return [{"position": s.position, "p": dict(zip(labels, s.probs))} for s in scores]


def sentence_payload(verdicts: tuple[SentenceVerdict, ...] | list[SentenceVerdict]) -> list[dict[str, Any]]:
    """Sentence verdicts as JSON objects."""
    return [v.model_dump(mode="json") for v in verdicts]


def summary_payload(summary: GuardSummary, tokens: list[dict[str, Any]] | None = None,
                    gate: GateDecision | None = None, source: str = SOURCE) -> dict[str, Any]:
    """A choice's ``guard`` field: the summary, ``source`` (``engine``; guard proxy's ``reader``), the
    pre-generation gate's decision (``null`` when no gate ran) and (non-streamed answers) every token score."""
    payload = {**summary.model_dump(mode="json"), "source": source,
               "gate": None if gate is None else gate.model_dump(mode="json")}
    if tokens is not None:
        payload["tokens"] = tokens
    return payload
