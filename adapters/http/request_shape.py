"""The shape of a client's request: the OpenAI fields the guard relies on, checked at the HTTP edge.

Both relays (guard serve, guard proxy) check these before anything goes upstream, so a malformed
request gets a 400 naming the field, what was expected and the fix, instead of a confusing answer
from the upstream (or, worse, a guard that reads a field of the wrong type). Checked: ``model``,
``messages`` (chat) or ``prompt`` (completions), ``stream``, ``stream_options``, ``n``,
``max_tokens``, ``max_completion_tokens``, and that no string holds a lone UTF-16 surrogate
(``"\\ud800"`` is valid JSON but not text; it cannot be encoded as UTF-8 for the upstream or the
reader). Every other field is the upstream's to judge; its 4xx passes through.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.http.errors import invalid_request

__all__ = ["check_request", "show"]

_CHAT_EXAMPLE = '[{"role": "user", "content": "..."}]'


def check_request(body: dict[str, Any], endpoint: str) -> None:
    """Refuse a body whose core fields have the wrong shape.

    Args:
        body: the client's JSON object (``guard`` is checked elsewhere).
        endpoint: ``chat_completions`` or ``completions``.

    Raises:
        APIError: 400 ``invalid_request_error``; ``param`` names the field (``messages[2].role``).

    Example:
        >>> check_request({"model": "m", "messages": []}, "chat_completions")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        adapters.http.errors.APIError: messages=[] is invalid: expected a non-empty list of messages such as ...
    """
    _check_text(body)
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise invalid_request(f"model={show(model)} is invalid: expected a string such as the name GET /v1/models "
                              "lists", param="model")
    if endpoint == "chat_completions":
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request(f"stream={show(stream)} is invalid: expected true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request(f"stream_options={show(options)} is invalid: expected an object such as "
                              '{"include_usage": true}', param="stream_options")
    for name in ("n", "max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise invalid_request(f"{name}={show(value)} is invalid: expected a positive integer (or leave it out)",
                                  param=name)


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid_request(f"messages={show(messages)} is invalid: expected a non-empty list of messages such as "
                              f"{_CHAT_EXAMPLE}", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"messages[{i}]={show(message)} is invalid: expected an object such as "
                                  '{"role": "user", "content": "..."}', param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise invalid_request(f"messages[{i}].role={show(role)} is invalid: expected a string such as \"user\"",
                                  param=f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise invalid_request(f"messages[{i}].content={show(content)} is invalid: expected a string, a list of "
                                  "content parts, or null", param=f"messages[{i}].content")
        if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
            raise invalid_request(f"messages[{i}].content={show(content)} is invalid: every content part must be an "
                                  'object such as {"type": "text", "text": "..."}', param=f"messages[{i}].content")


def _check_prompt(prompt: object) -> None:
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt and (all(isinstance(p, str) for p in prompt) or _token_ids(prompt)
                                               or all(isinstance(p, list) and p and _token_ids(p) for p in prompt)):
        return
    raise invalid_request(f"prompt={show(prompt)} is invalid: expected a string, a non-empty list of strings, or "
                          "token ids (a list of integers, or a list of such lists)", param="prompt")


def _token_ids(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _check_text(body: dict[str, Any]) -> None:
    """Every string (keys too) must be encodable as UTF-8: no lone surrogates. Iterative: no recursion limit."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            _encodable(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _encodable(key, path or "body")
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))


def _encodable(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid_request(f"{path} holds a lone UTF-16 surrogate ({text[exc.start:exc.end]!a} at character "
                              f"{exc.start}), which is not text; send valid Unicode (escape characters outside the "
                              "BMP as a surrogate pair)", param=path) from exc


def show(value: object) -> str:
    """A value as JSON, shortened: messages name it without echoing long user text."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
