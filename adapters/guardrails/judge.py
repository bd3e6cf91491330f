"""A client of guard proxy's judge endpoint (``POST /v1/guard/check``), shared by the guardrail adapters.

A gateway that already holds an answer sends the question and the answer; guard proxy's reader reads the
answer exactly as it would read a relayed one and returns the ``guard`` field. :class:`GuardJudge` makes that
call and gives a :class:`Judgement`: whether the answer passed, which sentences were flagged (as text), and the
whole verdict as a :class:`guard.client.GuardView`.

Example::

    judge = GuardJudge("http://127.0.0.1:8000")
    judgement = await judge.check("The capital of France is Berlin.",
                                  messages=[{"role": "user", "content": "Capital of France?"}])
    judgement.passed, judgement.flagged_text     # (False, ['The capital of France is Berlin.'])
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from guard.client import GuardView
from guard.errors import AdapterError, ConfigError

__all__ = ["DEFAULT_URL", "URL_ENV", "KEY_ENV", "JudgeError", "Judgement", "GuardJudge"]

#: where guard proxy listens by default
DEFAULT_URL = "http://127.0.0.1:8000"
#: environment variables read when no URL or key is given
URL_ENV, KEY_ENV = "GUARD_URL", "GUARD_API_KEY"
CHECK_PATH = "/v1/guard/check"


class JudgeError(AdapterError):
    """The judge gave no verdict: guard proxy was unreachable, timed out, refused the check, answered
    something that is not a check, or could not read the answer itself (``verified: false``)."""


@dataclass(frozen=True)
class Judgement:
    """guard's verdict on one answer.

    Attributes:
        answer: the text judged.
        view: the ``guard`` field guard proxy returned (decision, sentences with offsets, token scores, ...).
    """

    answer: str
    view: GuardView

    @property
    def passed(self) -> bool:
        """Whether guard let the answer through (decision ``pass``: no sentence flagged)."""
        return self.view.decision == "pass"

    @property
    def flagged_text(self) -> list[str]:
        """The flagged sentences' text, in order."""
        return [self.answer[s.start:s.end].strip() for s in self.view.flagged]

    def reason(self) -> str:
        """One line naming what guard flagged (empty when it passed), for a block message or a log."""
        if self.passed:
            return ""
        total = len(self.view.sentences)
        quoted = "; ".join(repr(text) for text in self.flagged_text) or "(no sentence named)"
        return (f"guard flagged {len(self.view.flagged)} of {total} sentence(s) as likely false "
                f"(decision {self.view.decision!r}): {quoted}")

    def summary(self) -> dict[str, Any]:
        """The verdict without token scores: small enough for request metadata and logs."""
        return self.view.model_dump(exclude={"tokens"}, exclude_none=True)


class GuardJudge:
    """Asks guard proxy's judge endpoint for verdicts.

    Args:
        url: guard proxy's base URL (``http(s)://host:port``; a trailing ``/v1`` is accepted); default
            ``$GUARD_URL``, else :data:`DEFAULT_URL`.
        api_key: guard proxy's API key, when it has one; default ``$GUARD_API_KEY``.
        timeout_s: the most one check may take (the reader's prefill of question + answer), > 0.
        alpha: the conformal error rate for these checks (0 < alpha < 1); default: the server's.

    Raises:
        ConfigError: naming the bad value.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout_s: float = 30.0,
                 alpha: float | None = None) -> None:
        base = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"guard url={base!r} is not an http(s) URL: expected guard proxy's address such as "
                              f"{DEFAULT_URL!r} (set it in the guardrail's config or ${URL_ENV})")
        if not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ConfigError(f"guard timeout_s={timeout_s!r} is invalid: expected seconds > 0, such as 30")
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ConfigError(f"guard alpha={alpha!r} is invalid: expected a number strictly between 0 and 1, "
                              "such as 0.1 (or leave it out for the server's)")
        self.url = base.removesuffix("/v1") + CHECK_PATH
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        self._timeout = float(timeout_s)
        self._guard: dict[str, Any] = {"mode": "flag", **({"alpha": alpha} if alpha is not None else {})}

    async def check(self, answer: str, *, messages: Sequence[Mapping[str, Any]] | None = None,
                    prompt: str | None = None, headers: Mapping[str, str] | None = None) -> Judgement:
        """Judge ``answer`` to the question (``messages``, a chat, or ``prompt``, a text: exactly one).

        Args:
            headers: extra headers for the call, such as ``x-request-id`` or ``traceparent``.

        Raises:
            JudgeError: no verdict; the message names guard's URL and what went wrong.
        """
        if (messages is None) == (prompt is None):
            raise ConfigError("a guard check needs exactly one question: messages (a chat) or prompt (a text)")
        body: dict[str, Any] = {"answer": answer, "guard": self._guard}
        body.update({"messages": [dict(m) for m in messages]} if messages is not None else {"prompt": prompt})
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:  # and the whole call within it:
                reply = await asyncio.wait_for(  # httpx's timeout bounds each phase, not their sum
                    client.post(self.url, json=body, headers={**self._headers, **(headers or {})}), self._timeout)
        except (httpx.TimeoutException, asyncio.TimeoutError) as e:
            raise JudgeError(f"guard at {self.url} gave no verdict within {self._timeout:g} s ({type(e).__name__}): "
                             "raise timeout_s or check the reader's load") from e
        except httpx.HTTPError as e:
            raise JudgeError(f"guard at {self.url} could not be reached ({type(e).__name__}: {e}): is guard proxy "
                             f"running there? (set its address in the guardrail's config or ${URL_ENV})") from e
        return self._judgement(answer, reply)

    def _judgement(self, answer: str, reply: httpx.Response) -> Judgement:
        try:
            payload = reply.json()
        except ValueError:
            payload = None
        if reply.status_code != 200:
            error = payload.get("error") if isinstance(payload, dict) else None
            said = error.get("message") if isinstance(error, dict) else reply.text[:200]
            hint = " (set the guardrail's api_key or $GUARD_API_KEY)" if reply.status_code == 401 else ""
            raise JudgeError(f"guard at {self.url} refused the check with HTTP {reply.status_code}: {said}{hint}")
        field = payload.get("guard") if isinstance(payload, dict) else None
        try:
            view = GuardView.model_validate(field)
        except ValidationError as e:
            raise JudgeError(f"guard at {self.url} answered 200 without a verdict (expected {{'object': "
                             f"'guard.check', 'guard': {{...}}}}, got {reply.text[:200]!r}): is that guard proxy?"
                             ) from e
        if view.verified is False:
            error = (view.model_extra or {}).get("error") or {}
            raise JudgeError(f"guard at {self.url} could not read the answer ({error.get('kind', 'unknown')}: "
                             f"{error.get('message', 'no reason given')})")
        return Judgement(answer=answer, view=view)
