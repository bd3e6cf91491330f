"""guard proxy's wire format: what goes to the foreign upstream, and what the reader will read.

A client's request goes to the foreign OpenAI-compatible API unchanged except that the ``guard``
object is removed; no ``vllm_xargs`` or ``return_token_ids`` are added (a foreign API may refuse
unknown fields). Of the client's headers only :data:`FORWARDED_HEADERS` are passed on (the
``Authorization`` header among them), never logged and never put in metrics. Before anything is
sent, the request is checked for what the reader needs: text messages its chat template can
render, or text prompts (token-id prompts are in the upstream's vocabulary, not the reader's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.http.errors import invalid_request
from adapters.http.protocol import Endpoint, guard_options
from adapters.http.proxy.reader_prompt import ReaderPrompts
from adapters.http.request_shape import check_request, show
from guard.errors import RequestOptionError
from guard.policy import GuardOptions, StreamGuard
from guard.verdicts import Mode, VerdictRule

__all__ = ["FORWARDED_HEADERS", "NO_STEERING", "ProxyRequest", "proxy_request", "choice_index"]

#: client headers passed on to the upstream (lower case): credentials and OpenAI's account scoping
FORWARDED_HEADERS = ("authorization", "openai-organization", "openai-project", "x-request-id", "traceparent",
                     "tracestate")


@dataclass(frozen=True)
class ProxyRequest:
    """A validated request, ready for the foreign upstream and the reader.

    Attributes:
        endpoint: which OpenAI endpoint.
        body: the body sent upstream (the client's, ``guard`` removed).
        headers: the client headers passed on (see :data:`FORWARDED_HEADERS`).
        options: the request's guard options (server defaults filled in).
        stream: whether the client asked for server-sent events.
        prefixes: the reader's token ids of each prompt (chat: one, the rendered messages).
        n: choices per prompt (OpenAI numbers choices prompt by prompt: index = prompt * n + j).
    """

    endpoint: Endpoint
    body: dict[str, Any]
    headers: dict[str, str]
    options: GuardOptions
    stream: bool
    prefixes: tuple[list[int], ...]
    n: int

    def prefix(self, index: int) -> list[int]:
        """The reader's question tokens for choice ``index``."""
        return self.prefixes[min(max(index, 0) // self.n, len(self.prefixes) - 1)]


#: why guard proxy cannot steer
NO_STEERING = "it reads a foreign model's answers and cannot reach that model's hidden states to steer them"


def proxy_request(body: dict[str, Any], endpoint: Endpoint, headers: Mapping[str, str], default_mode: Mode,
                  abstain_message: str | None, rule: VerdictRule, prompts: ReaderPrompts,
                  upstream_guarded: bool = False) -> ProxyRequest:
    """Validate a request body for guard proxy.

    Args:
        body: the client's JSON object (not modified).
        endpoint: which endpoint received it.
        headers: the client's request headers.
        default_mode / abstain_message: server defaults for the guard options.
        rule: the probe's verdict rule (checks that ``guard.alpha`` can be served).
        prompts: builds the reader's question tokens.
        upstream_guarded: the upstream is itself guard serve: the client's ``guard`` object goes upstream
            too (so mode ``steer`` is served by the upstream's engine).

    Raises:
        APIError: 400 for bad guard options (``param`` names the field), ``echo``, or a question the
            reader cannot read (non-text message parts, token-id prompts, no messages or prompt).
    """
    body = dict(body)
    raw_guard = body.pop("guard", None)
    options = guard_options(raw_guard, default_mode, abstain_message)
    check_request(body, endpoint)
    if options.mode == "steer" and not upstream_guarded:
        raise invalid_request(f"guard.mode='steer' is not available in guard proxy: {NO_STEERING}; use guard serve, "
                              "which steers its own engine (guard proxy passes the guard object to a guard serve "
                              "upstream with upstream_guarded on), or mode 'flag' or 'abstain'", param="guard.mode")
    if options.answer_check and not upstream_guarded:
        raise invalid_request("guard.answer_check=true is not available in guard proxy: the answer check is calibrated "
                              "on the serving model's own answers and reads its hidden states; use guard serve (or "
                              "put guard proxy in front of one with upstream_guarded on), or drop guard.answer_check",
                              param="guard.answer_check")
    if upstream_guarded and raw_guard is not None:
        body["guard"] = raw_guard  # the upstream guard serve applies it; its answers come back judged
    try:
        if options.mode != "steer":  # the upstream steers and judges; the reader has no steering vector
            StreamGuard(rule, options)  # refuses an alpha the probe cannot serve before the upstream is paid
    except RequestOptionError as exc:
        raise invalid_request(str(exc), param=exc.param) from exc
    if body.get("echo") is True:
        raise invalid_request("echo=true is not supported: the reader reads the generated text only; omit echo",
                              param="echo")
    prefixes: tuple[list[int], ...]
    if endpoint == "chat_completions":
        prefixes = (prompts.chat_prefix(_reader_messages(body.get("messages"))),)
    else:
        prefixes = tuple(prompts.completion_prefix(p) for p in _text_prompts(body.get("prompt")))
    n = body.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1
    forwarded = {name: value for name, value in headers.items() if name.lower() in FORWARDED_HEADERS}
    return ProxyRequest(endpoint, body, forwarded, options, body.get("stream") is True, prefixes, n)


def choice_index(choice: dict[str, Any], default: int) -> int:
    """A choice's ``index`` (``default``, its place in the list, when it has none)."""
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else default


def _reader_messages(messages: object) -> list[dict[str, str]]:
    """The messages as the reader's chat template takes them: role and text content."""
    if not isinstance(messages, list) or not messages:
        raise invalid_request(f"messages={show(messages)} is invalid: expected a non-empty list of messages such as "
                              '[{"role": "user", "content": "..."}]', param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid_request(f"messages[{i}]={show(message)} is invalid: expected an object with a string "
                                  "role", param=f"messages[{i}]")
        out.append({"role": message["role"], "content": _text(message.get("content"), i)})
    return out


def _text(content: object, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise invalid_request(f"messages[{i}].content={show(content)} is invalid: expected a string or a list of "
                              "content parts", param=f"messages[{i}].content")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise invalid_request(f"messages[{i}].content[{j}] has type {kind!r}: the reader reads text only; send "
                                  "text parts (guard proxy cannot judge answers about images or audio)",
                                  param=f"messages[{i}].content[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def _text_prompts(prompt: object) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise invalid_request(f"prompt={show(prompt)} is invalid for guard proxy: expected a string or a list of strings "
                          "(token-id prompts are in the upstream's vocabulary, which the reader cannot read)",
                          param="prompt")

