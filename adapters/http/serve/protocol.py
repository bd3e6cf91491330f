"""guard serve's wire format: validating a client's request and preparing it for the engine's vLLM server.

Before a request goes upstream the ``guard`` object is removed, a fresh guard key is merged into
``vllm_xargs`` (vLLM hands it to the engine workers, which publish the request's scores under it)
and ``return_token_ids`` is switched on (token positions map scores to text); token ids the
client did not ask for are removed from what it receives. The parts guard proxy shares (parsing,
guard options, the ``guard`` fields of answers) are in :mod:`adapters.http.protocol`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from adapters.http.errors import APIError, invalid_request
from adapters.http.protocol import Endpoint, guard_options
from adapters.http.request_shape import check_request, show
from guard.policy import GuardOptions
from guard.request_options import HIDDEN_FIELD, KEY_FIELD, STEER_FIELD, STEER_FROM_FIELD
from guard.verdicts import Mode

__all__ = ["GuardedRequest", "guarded_request", "prompt_length", "hide_token_ids", "choice_logprobs"]


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
        added_logprobs: whether the guard asked for the tokens' log-probabilities (the answer check reads
            them) when the client had not: they are removed from what it receives.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    options: GuardOptions
    key: str
    stream: bool
    wants_token_ids: bool
    added_logprobs: bool = False


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
        raise invalid_request(f"vllm_xargs={show(xargs)} is invalid: expected an object of strings and numbers",
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
    added = options.answer_check and options.mode != "pass" and _ask_logprobs(body, endpoint)
    return GuardedRequest(endpoint, body, options, key, body.get("stream") is True, wants, added)


def _ask_logprobs(body: dict[str, Any], endpoint: Endpoint) -> bool:
    """Ask the upstream for each generated token's log-probability; returns whether the client had not asked."""
    given = body.get("logprobs")
    if endpoint == "chat_completions":
        if given is True:
            return False
        body["logprobs"] = True
        if body.get("top_logprobs") is None:
            body["top_logprobs"] = 0  # vLLM sends no log-probabilities when top_logprobs is null
        return True
    if isinstance(given, int) and not isinstance(given, bool):
        return False
    body["logprobs"] = 0  # the sampled token's log-probability, no alternatives
    return True


def choice_logprobs(choice: dict[str, Any], endpoint: Endpoint) -> list[float] | None:
    """The sampled tokens' log-probabilities in an upstream choice or chunk choice (``None``: none sent)."""
    given = choice.get("logprobs")
    if not isinstance(given, dict):
        return None
    if endpoint == "chat_completions":
        content = given.get("content")
        values = [c.get("logprob") for c in content if isinstance(c, dict)] if isinstance(content, list) else None
    else:
        values = given.get("token_logprobs")
    if not isinstance(values, list):
        return None
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("-inf") for v in values]


def _check_model(model: object, served_name: str) -> None:
    if model is None:
        return
    if not isinstance(model, str):
        raise invalid_request(f"model={show(model)} is invalid: expected a string such as {served_name!r}", "model")
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
        raise invalid_request(f"best_of={show(best_of)} is not supported: the guard scores one sequence per "
                              "request; omit best_of", param="best_of")
    if body.get("echo") is True:
        raise invalid_request("echo=true is not supported: the guard scores generated text only; omit echo",
                              param="echo")
    prompt = body.get("prompt")
    if endpoint == "completions" and isinstance(prompt, list) and len(prompt) > 1 \
            and all(isinstance(p, (str, list)) for p in prompt):
        raise invalid_request(f"prompt holds {len(prompt)} prompts: the guard scores one prompt per request; send "
                              "one request per prompt", param="prompt")


def prompt_length(payload: dict[str, Any], endpoint: Endpoint) -> int | None:
    """Prompt token count from an upstream answer or chunk with ``return_token_ids`` (``None`` if absent)."""
    if endpoint == "chat_completions":
        ids = payload.get("prompt_token_ids")
    else:
        choices = payload.get("choices") or [{}]
        ids = choices[0].get("prompt_token_ids")
    return len(ids) if isinstance(ids, list) else None


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

