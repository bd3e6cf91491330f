"""The guardrail adapters' judge client (adapters/guardrails/judge.py) against guard proxy's real app on a real
port (over the fake foreign API and reader): verdicts equal the judge endpoint's, flagged sentences come back as
text, and every way of getting no verdict is a JudgeError naming guard's URL and the fix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from starlette.responses import JSONResponse

from adapters.guardrails.judge import GuardJudge, JudgeError
from adapters.http.api_key import ApiKey
from guard.client import GuardView
from guard.errors import ConfigError
from tests.unit.fake_proxy import ANSWERS, Proxy
from tests.unit.live_server import live

KEY = "sk-guard-judge"


def _ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def judged() -> Iterator[tuple[str, Proxy]]:
    proxy = Proxy()
    app, _, _ = proxy.build()
    with live(app) as url:
        yield url, proxy


def test_a_judgement_is_the_judge_endpoints_verdict_with_the_flagged_sentences_as_text(judged):
    url, _ = judged
    wrong = asyncio.run(GuardJudge(url).check(ANSWERS["wrong"], messages=_ask("wrong")))
    expected = httpx.post(f"{url}/v1/guard/check", json={"messages": _ask("wrong"), "answer": ANSWERS["wrong"],
                                                         "guard": {"mode": "flag"}}).json()["guard"]
    assert wrong.view == GuardView.model_validate(expected)
    assert not wrong.passed and wrong.flagged_text == ["The capital of France is Berlin."]
    assert "1 of 2 sentence(s)" in wrong.reason() and "'The capital of France is Berlin.'" in wrong.reason()
    assert "tokens" not in wrong.summary() and wrong.summary()["decision"] == "flag"
    right = asyncio.run(GuardJudge(f"{url}/v1").check(ANSWERS["capital"], prompt="capital"))  # /v1 is accepted
    assert right.passed and right.flagged_text == [] and right.reason() == ""


def test_the_judges_alpha_reaches_the_verdict(judged):
    url, _ = judged
    judgement = asyncio.run(GuardJudge(url, alpha=0.25).check(ANSWERS["capital"], messages=_ask("capital")))
    assert judgement.view.alpha == 0.25


def test_the_api_key_comes_from_the_argument_or_the_environment_and_a_missing_one_says_where_to_set_it(monkeypatch):
    app, _, _ = Proxy().build()
    with live(ApiKey(app, KEY)) as url:  # as guard proxy wraps its app when it has a key (adapters/http/launch.py)
        with pytest.raises(JudgeError, match=r"HTTP 401.*GUARD_API_KEY"):
            asyncio.run(GuardJudge(url).check("Paris.", messages=_ask("capital")))
        assert asyncio.run(GuardJudge(url, api_key=KEY).check("Paris.", messages=_ask("capital"))).passed
        monkeypatch.setenv("GUARD_API_KEY", KEY)
        monkeypatch.setenv("GUARD_URL", url)
        assert asyncio.run(GuardJudge().check("Paris.", messages=_ask("capital"))).passed


def test_no_verdict_is_a_judge_error_naming_the_url_and_what_went_wrong(judged):
    url, proxy = judged
    with live(JSONResponse({"ok": True})) as other:
        with pytest.raises(JudgeError, match=r"answered 200 without a verdict.*is that guard proxy"):
            asyncio.run(GuardJudge(other).check("Paris.", messages=_ask("capital")))
    with pytest.raises(JudgeError, match=r"could not be reached.*is guard proxy running there"):
        asyncio.run(GuardJudge(other).check("Paris.", messages=_ask("capital")))  # that server is gone now
    with pytest.raises(JudgeError, match=r"HTTP 400: messages=\[\] is invalid"):
        asyncio.run(GuardJudge(url).check("Paris.", messages=[]))
    proxy.reader.status = 500  # guard's reader fails: guard answers, unverified
    try:
        with pytest.raises(JudgeError, match=r"could not read the answer \(reader: "):
            asyncio.run(GuardJudge(url).check("Paris.", messages=_ask("capital")))
    finally:
        proxy.reader.status = 200


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"url": "localhost:8000"}, "not an http(s) URL"),
    ({"url": "ftp://guard"}, "not an http(s) URL"),
    ({"timeout_s": 0}, "timeout_s=0"),
    ({"timeout_s": float("nan")}, "timeout_s=nan"),
    ({"alpha": 1.5}, "alpha=1.5"),
])
def test_bad_judge_settings_are_refused_naming_the_value(kwargs, words):
    with pytest.raises(ConfigError) as refused:
        GuardJudge(**kwargs)
    assert words in str(refused.value)


def test_a_check_needs_exactly_one_question():
    with pytest.raises(ConfigError, match="exactly one question"):
        asyncio.run(GuardJudge().check("Paris."))
