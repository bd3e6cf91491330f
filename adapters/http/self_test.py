"""The start-up self-test of guard serve and guard proxy: one guarded request through the built app, in process.

Before the port is handed to the app (:mod:`adapters.http.starting`) the server sends itself one request the
way a client would, through the whole app (API key, routes, relay, engine, capture hooks, score channel,
verdicts): guard serve a short completion in mode ``flag``, guard proxy a judge request
(``POST /v1/guard/check``, no upstream call). It passes when every token of the answer has its scores and the
guard reports no failure; otherwise the server stops with what was missing, instead of serving answers it
cannot judge. ``/readyz`` answers 200 only after it (until then the port answers "starting"). The request is
counted in the metrics like any other.
"""

from __future__ import annotations

from typing import Any

import httpx

from adapters.http.settings import ServeSettings
from guard.errors import AdapterError

__all__ = ["SELF_TEST_TEXT", "self_test"]

#: what the server asks itself
SELF_TEST_TEXT = "guard self-test: Paris is the capital of France."
_TIMEOUT_S = 300.0


async def self_test(app: Any, settings: ServeSettings, who: str, judge: bool) -> None:
    """Send ``app`` one guarded request (``judge``: guard proxy's judge endpoint) and check its verdict.

    Raises:
        AdapterError: the request failed, or its tokens lack scores (the capture did not deliver), naming what.
    """
    headers = {} if settings.api_key is None else {"authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    body: dict[str, Any]
    if judge:
        path, body = "/v1/guard/check", {"prompt": SELF_TEST_TEXT, "answer": "Paris is in France."}
    else:
        path, body = "/v1/completions", {"model": settings.served_name, "prompt": SELF_TEST_TEXT, "max_tokens": 4,
                                         "temperature": 0.0, "guard": {"mode": "flag"}}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://self-test", timeout=_TIMEOUT_S) as client:
        try:
            answer = await client.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise AdapterError(f"{who}'s start-up self-test could not reach its own app ({exc})") from exc
    problem = _problem(answer, judge)
    if problem is not None:
        raise AdapterError(f"{who}'s start-up self-test failed: {problem}; it will not serve answers it cannot "
                           "judge (run `guard selftest` with the same model for the engine's own check)")


def _problem(answer: httpx.Response, judge: bool) -> str | None:
    """What is wrong with the self-test's answer, or ``None``."""
    if answer.status_code != 200:
        return f"POST answered {answer.status_code}: {answer.text[:300]}"
    payload = answer.json()
    guard = payload.get("guard") if judge else (payload.get("choices") or [{}])[0].get("guard")
    if not isinstance(guard, dict):
        return f"the answer carries no guard field: {answer.text[:300]}"
    if guard.get("error"):
        return f"the guard failed: {guard['error']}"
    tokens = guard.get("tokens") or []
    if not tokens or any(not t.get("p") for t in tokens):
        return f"{sum(1 for t in tokens if t.get('p'))} of {len(tokens)} answer tokens have scores"
    return None
