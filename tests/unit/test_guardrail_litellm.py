"""guard as a LiteLLM guardrail (adapters/guardrails/litellm_guardrail.py), run by the real LiteLLM library: the
guardrail class is loaded the way LiteLLM's proxy loads a custom guardrail from deploy/litellm/config.yaml, the
answer comes from ``litellm.acompletion`` against a fake OpenAI-compatible LLM on a real port, and LiteLLM's
unified post-call hook hands it to the guardrail, which asks guard proxy's real app (over the fake reader) on
another port. A flagged answer is blocked, replaced or logged as configured; a pass goes through unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
import yaml
from fastapi import HTTPException
from litellm import get_secret
from litellm.exceptions import GuardrailRaisedException
from litellm.integrations.custom_guardrail import ModifyResponseException, is_guardrail_intervention
from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.guardrails.guardrail_hooks.unified_guardrail.unified_guardrail import UnifiedLLMGuardrails
from litellm.proxy.types_utils.utils import get_instance_fn
from litellm.types.guardrails import LitellmParams

from adapters.guardrails.litellm_guardrail import DEFAULT_ABSTAIN, GuardGuardrail
from guard.errors import ConfigError
from tests.unit.fake_proxy import ANSWERS
from tests.unit.live_server import judge_and_model, refusing

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "litellm" / "config.yaml"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    with judge_and_model() as running:
        yield running


def _guardrail(judge: str, **overrides: Any) -> GuardGuardrail:
    """The guardrail as LiteLLM's proxy builds it from the shipped config (guard's URL pointed at the test's), step
    by step as its registry does (``initialize_guardrail`` / ``initialize_custom_guardrail``, whose module needs the
    proxy's own packages): the entry parsed as ``LitellmParams``, ``os.environ/`` keys read with ``get_secret``
    (an unset one becomes the text "None"), the class loaded by ``get_instance_fn`` and given every other
    non-None parameter, LiteLLM's defaults for other guardrails included."""
    (entry,) = yaml.safe_load(CONFIG.read_text())["guardrails"]
    params = LitellmParams(**{**entry["litellm_params"], "api_base": judge, **overrides})
    assert params.api_key == "os.environ/GUARD_API_KEY"
    params.api_key = str(get_secret(params.api_key))  # GUARD_API_KEY is unset here: "None"
    cls = get_instance_fn(params.guardrail, config_file_path=str(CONFIG))
    extra = {k: v for k, v in params.model_dump(exclude_none=True).items()
             if k not in ("guardrail", "mode", "default_on", "stream_scope")}
    guardrail = cls(guardrail_name=entry["guardrail_name"], event_hook=params.mode, default_on=params.default_on,
                    **extra)
    assert isinstance(guardrail, GuardGuardrail)
    return guardrail


async def _call(servers: dict[str, Any], guardrail: GuardGuardrail, question: str, stream: bool = False,
                chunks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """One chat call through LiteLLM, then LiteLLM's post-call guardrail hook (its streaming one for a stream): the
    (possibly changed) answer, or the list of chunks the client gets (also appended to ``chunks`` as they come),
    and the request data the guardrail saw."""
    messages = [{"role": "user", "content": question}]
    data = {"model": "default", "messages": messages, "guardrail_to_apply": guardrail, "metadata": {}}
    try:
        answer = await litellm.acompletion(model="openai/foreign-model", api_base=f"{servers['llm']}/v1",
                                           api_key="sk-test", messages=messages, stream=stream)
        if stream:
            hook = UnifiedLLMGuardrails().async_post_call_streaming_iterator_hook(UserAPIKeyAuth(), answer, data)
            got = [] if chunks is None else chunks
            async for chunk in hook:
                got.append(chunk)
            return got, data
        return await UnifiedLLMGuardrails().async_post_call_success_hook(data, UserAPIKeyAuth(), answer), data
    finally:  # LiteLLM caches its HTTP clients across event loops; each test call runs in a loop of its own
        await close_litellm_async_clients()
        litellm.in_memory_llm_clients_cache.flush_cache()


def _streamed_text(chunks: list[Any]) -> str:
    return "".join((getattr(c.choices[0].delta, "content", None) or "") for c in chunks if getattr(c, "choices", None))


def test_a_true_answer_passes_unchanged_with_guards_verdict_in_the_request_metadata(servers):
    answer, data = asyncio.run(_call(servers, _guardrail(servers["judge"]), "capital"))
    assert answer.choices[0].message.content == ANSWERS["capital"]
    (verdict,) = data["metadata"]["guard"]
    assert verdict["decision"] == "pass" and verdict["source"] == "reader" and "tokens" not in verdict


def test_a_flagged_answer_is_blocked_naming_the_flagged_sentence(servers):
    with pytest.raises(GuardrailRaisedException) as blocked:
        asyncio.run(_call(servers, _guardrail(servers["judge"]), "wrong"))
    assert blocked.value.blocked_content and blocked.value.status_code == 400
    assert blocked.value.guardrail_name == "guard-hallucination"
    message = blocked.value.message
    assert "'The capital of France is Berlin.'" in message and "Paris is nice" not in message


def test_a_flagged_answer_is_replaced_by_the_abstain_message_with_on_flag_replace(servers):
    with pytest.raises(ModifyResponseException) as replaced:
        asyncio.run(_call(servers, _guardrail(servers["judge"], on_flag="replace"), "wrong"))
    assert replaced.value.message == DEFAULT_ABSTAIN
    assert replaced.value.original_response.choices[0].message.content == ANSWERS["wrong"]  # its usage is kept
    assert replaced.value.detection_info["guard"][0]["decision"] == "flag"


def test_a_flagged_answer_goes_through_with_on_flag_log_and_its_verdict_is_kept(servers, caplog):
    answer, data = asyncio.run(_call(servers, _guardrail(servers["judge"], on_flag="log"), "wrong"))
    assert answer.choices[0].message.content == ANSWERS["wrong"]
    (verdict,) = data["metadata"]["guard"]
    assert [s["verdict"] for s in verdict["sentences"]] == ["supported", "flagged"]
    assert "let a flagged answer through" in caplog.text


def test_requests_are_not_judged_only_answers(servers):
    guardrail, proxy = _guardrail(servers["judge"]), servers["proxy"]
    read = len(proxy.reader.requests)
    inputs = {"texts": ["Is Berlin the capital of France?"]}
    assert asyncio.run(guardrail.apply_guardrail(inputs, {"messages": []}, "request")) is inputs
    assert len(proxy.reader.requests) == read


def test_without_a_verdict_on_error_decides_between_a_503_and_letting_the_answer_through(servers):
    with refusing() as gone:
        with pytest.raises(HTTPException) as failed:
            asyncio.run(_call(servers, _guardrail(gone), "capital"))
        assert failed.value.status_code == 503 and not is_guardrail_intervention(failed.value)  # a failure, no block
        error = failed.value.detail["error"]
        assert "could not be reached" in error and "on_error: block" in error
        answer, data = asyncio.run(_call(servers, _guardrail(gone, on_error="allow"), "capital"))
    assert answer.choices[0].message.content == ANSWERS["capital"]
    assert "could not be reached" in data["metadata"]["guard"]["error"]


def test_a_streamed_answer_is_held_and_judged_whole_once(servers):
    guardrail, reader = _guardrail(servers["judge"]), servers["proxy"].reader
    read = len(reader.requests)
    chunks, data = asyncio.run(_call(servers, guardrail, "capital", stream=True))
    assert _streamed_text(chunks) == ANSWERS["capital"] and len(reader.requests) == read + 1
    assert data["metadata"]["guard"][0]["decision"] == "pass"
    sent: list[Any] = []
    with pytest.raises(GuardrailRaisedException, match="Berlin"):  # the stream ends with the block (LiteLLM's
        asyncio.run(_call(servers, guardrail, "wrong", stream=True, chunks=sent))  # proxy sends it as an error)
    assert _streamed_text(sent) == ""  # not one word of the flagged answer reached the client
    assert len(reader.requests) == read + 2


def test_a_one_prompt_completion_is_judged_and_an_unsupported_request_passes_with_a_warning(servers, caplog):
    guardrail, reader = _guardrail(servers["judge"]), servers["proxy"].reader
    with pytest.raises(GuardrailRaisedException):
        asyncio.run(guardrail.apply_guardrail({"texts": [ANSWERS["wrong"]]}, {"prompt": ["wrong"]}, "response"))
    read = len(reader.requests)
    inputs = {"texts": ["Berlin."]}
    request: dict[str, Any] = {"input": "a /v1/responses request"}
    assert asyncio.run(guardrail.apply_guardrail(inputs, request, "response")) is inputs
    assert len(reader.requests) == read and "unjudged" in caplog.text
    assert request["metadata"]["guard"] == {"error": "unsupported request: no question"}


def test_an_unset_api_key_variable_sends_no_key(servers, monkeypatch):
    monkeypatch.delenv("GUARD_API_KEY", raising=False)
    assert _guardrail(servers["judge"]).judge._headers == {}  # not "Bearer None"


def test_litellm_refuses_the_guardrail_in_a_mode_other_than_post_call(servers):
    with pytest.raises(ValueError, match="pre_call"):
        _guardrail(servers["judge"], mode="pre_call")


@pytest.mark.parametrize(("overrides", "words"), [
    ({"on_flag": "drop"}, "on_flag='drop'"),
    ({"on_error": "ignore"}, "on_error='ignore'"),
    ({"abstain_message": " "}, "abstain_message=' '"),
    ({"timeout_s": -1}, "timeout_s=-1"),
    ({"api_base": "guard:8000"}, "not an http(s) URL"),
])
def test_bad_guardrail_settings_are_refused_naming_the_value(servers, overrides, words):
    with pytest.raises(ConfigError) as refused:
        _guardrail(servers["judge"], **overrides)
    assert words in str(refused.value)
