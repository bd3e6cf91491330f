"""Opt-in logging of prompts and completions (the ``log_content`` setting; off by default).

By default guard logs nothing per request: no prompt, no completion, no header (``Authorization``
is passed on and never written anywhere). With ``log_content: true`` every guarded request's body
and its answer's text are logged at INFO on the ``guard.content`` logger (to stderr unless the
embedding application configured that logger), and a warning says so at start-up, because the log
then holds user data. Headers are never logged, on or off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

__all__ = ["ContentLog", "LOGGER"]

#: the logger prompts and completions go to when ``log_content`` is on
LOGGER = "guard.content"
_MAX_CHARS = 20_000  # per logged body or answer: a log line, not an archive


class ContentLog:
    """Logs request bodies and answer texts when enabled; does nothing (and costs nothing) when not.

    Args:
        enabled: the ``log_content`` setting.

    Example:
        >>> ContentLog(False).request("completions", b'{"prompt": "secret"}')  # logs nothing
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.logger = logging.getLogger(LOGGER)
        if enabled:
            if not (self.logger.handlers or logging.getLogger("guard").handlers or logging.getLogger().handlers):
                self.logger.addHandler(logging.StreamHandler())  # stderr, like the server's own messages
            if self.logger.level == logging.NOTSET:
                self.logger.setLevel(logging.INFO)
            self.logger.warning("log_content is on: prompts and completions are written to the log (logger %r); "
                                "treat the log as user data, or set log_content to false", LOGGER)

    def request(self, endpoint: str, raw: bytes) -> None:
        """Log a request's body (never its headers)."""
        if self.enabled:
            self.logger.info("request %s: %s", endpoint, raw[:_MAX_CHARS].decode("utf-8", errors="replace"))

    def answer(self, endpoint: str, status: int, body: dict[str, Any]) -> None:
        """Log a JSON answer's choice texts (or its error message)."""
        if self.enabled:
            self.logger.info("answer %s (HTTP %d): %s", endpoint, status, _texts(body)[:_MAX_CHARS])

    def stream(self, endpoint: str, events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """``events`` (itself when disabled); when enabled, the streamed text is logged once the stream ends."""
        return self._logged(endpoint, events) if self.enabled else events

    async def _logged(self, endpoint: str, events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        pieces: list[str] = []
        try:
            async for event in events:
                pieces.append(_event_text(event))
                yield event
        finally:
            await events.aclose()
            self.logger.info("answer %s (stream): %s", endpoint, "".join(pieces)[:_MAX_CHARS])


def _texts(body: dict[str, Any]) -> str:
    if "error" in body:
        return json.dumps(body["error"], ensure_ascii=False)
    return json.dumps([_choice_text(c) for c in body.get("choices") or [] if isinstance(c, dict)], ensure_ascii=False)


def _choice_text(choice: dict[str, Any]) -> Any:
    if "text" in choice:
        return choice["text"]
    return ((choice.get("message") or choice.get("delta") or {}).get("content")
            if isinstance(choice.get("message") or choice.get("delta") or {}, dict) else None)


def _event_text(event: bytes) -> str:
    data = event.removeprefix(b"data: ").strip()
    try:
        chunk = json.loads(data)
    except ValueError:
        return ""
    if not isinstance(chunk, dict):
        return ""
    if "error" in chunk:
        return f"[error: {json.dumps(chunk['error'], ensure_ascii=False)}]"
    texts = [_choice_text(c) for c in chunk.get("choices") or [] if isinstance(c, dict)]
    return "".join(t for t in texts if isinstance(t, str))
