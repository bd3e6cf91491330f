"""guard proxy end to end: one real `guard proxy` (real reader engine, real model, shipped probe) in front
of a small foreign OpenAI-compatible API on loopback, driven by the official openai client; and guard's LiteLLM
guardrail and NeMo Guardrails rail (their real libraries, the shipped configurations) judging the same fake
API's answers through it.

The foreign API answers "What is the capital of France?" truthfully ("... Paris.") under model
``truthful`` and falsely ("... Berlin.") under model ``liar``. The shipped probe, reading with the
default model, gives the true answer's sentence a far higher p(true) than the false one's (about
0.999 against 0.29 for chat, 0.9999 against 0.11 for completions, on CPU), so the test asserts
that ordering, and for abstention uses alpha 0.5, far from both sentences' p-values.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
import yaml
from litellm.exceptions import GuardrailRaisedException
from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.guardrails.guardrail_hooks.unified_guardrail.unified_guardrail import UnifiedLLMGuardrails
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.llm.frameworks.registry import get_framework
from prometheus_client.parser import text_string_to_metric_families

from adapters.guardrails.litellm_guardrail import GuardGuardrail
from tests.e2e.fake_openai import CHAT_ANSWERS, COMPLETION_ANSWERS, FakeOpenAI
from tests.e2e.launch import free_port, running_guard

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"
KEY = "sk-proxy-test-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The fake foreign API and one `guard proxy` in front of it; yields the proxy's URL and the fake."""
    tmp = tmp_path_factory.mktemp("proxy")
    config = tmp / "proxy.yaml"
    config.write_text("max_model_len: 512\nmax_num_seqs: 8\nscore_timeout: 10\n")
    log_path = tmp / "proxy.log"
    with FakeOpenAI() as fake:
        port = free_port()
        args = ["proxy", "--eager", "--upstream", fake.url, "--port", str(port), "--config", str(config),
                "--upstream-timeout", "60"]
        with running_guard(args, log_path, "proxying"):
            yield {"url": f"http://127.0.0.1:{port}", "fake": fake, "log": log_path}
    assert KEY not in log_path.read_text()  # the client's key is never logged


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def _p_true(guard: dict[str, Any]) -> float:
    (sentence,) = guard["sentences"]
    return sentence["probs"]["true"]


def _checked(guard: dict[str, Any]) -> dict[str, Any]:
    assert guard["source"] == "reader" and guard["reader_model"] == "default"
    assert guard["sentences"] and all(s["verdict"] in ("supported", "uncertain", "flagged") for s in guard["sentences"])
    assert guard["counts"]["tokens_scored"] == guard["counts"]["tokens"] > 0  # the reader scores every answer token
    return guard


def test_chat_answers_keep_the_upstreams_text_and_the_true_one_reads_truer(proxied):
    client = _client(proxied["url"])
    guards = {}
    for model, text in CHAT_ANSWERS.items():
        answer = client.chat.completions.create(model=model, messages=QUESTION)
        assert answer.choices[0].message.content == text
        guards[model] = _checked(answer.choices[0].model_extra["guard"])
    assert _p_true(guards["truthful"]) > _p_true(guards["liar"])
    sent = proxied["fake"].seen[-1]
    assert sent["authorization"] == f"Bearer {KEY}"  # passed on unchanged
    assert sent["body"] == {"model": "liar", "messages": QUESTION}  # nothing added for a foreign API


def test_streamed_answers_are_relayed_unchanged_and_end_with_the_same_summary(proxied):
    client = _client(proxied["url"])
    for model, text in CHAT_ANSWERS.items():
        whole = client.chat.completions.create(model=model, messages=QUESTION).choices[0].model_extra["guard"]
        chunks = list(client.chat.completions.create(model=model, messages=QUESTION, stream=True,
                                                     extra_body={"guard": {"mode": "flag"}}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == text
        summary = chunks[-1].choices[0].model_extra["guard"]
        assert [(s["start"], s["end"], s["verdict"]) for s in summary["sentences"]] == \
            [(s["start"], s["end"], s["verdict"]) for s in whole["sentences"]]
        assert _p_true(summary) == pytest.approx(_p_true(whole), abs=1e-5)
    assert "guard" not in proxied["fake"].seen[-1]["body"]


def test_completions_are_read_as_prompt_plus_answer_and_the_true_one_reads_truer(proxied):
    client = _client(proxied["url"])
    guards = {}
    for model, text in COMPLETION_ANSWERS.items():
        answer = client.completions.create(model=model, prompt=PROMPT)
        assert answer.choices[0].text == text
        guards[model] = _checked(answer.choices[0].model_extra["guard"])
    assert _p_true(guards["truthful"]) > _p_true(guards["liar"])


def test_abstain_mode_withholds_the_false_answer_and_keeps_the_true_one(proxied):
    client = _client(proxied["url"])
    options = {"guard": {"mode": "abstain", "alpha": 0.5, "abstain_message": "[withheld]"}}
    for model, text in CHAT_ANSWERS.items():
        answer = client.chat.completions.create(model=model, messages=QUESTION, extra_body=options)
        guard = answer.choices[0].model_extra["guard"]
        flagged = any(s["p_true"] <= 0.5 and not s["shifted"] for s in guard["sentences"])  # a capital: familiar
        assert guard["decision"] == ("abstain" if flagged else "pass")
        assert answer.choices[0].message.content == ("[withheld]" if flagged else text)
        assert flagged is (model == "liar")
        chunks = list(client.chat.completions.create(model=model, messages=QUESTION, stream=True, extra_body=options))
        assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == ("[withheld]" if flagged else text)


def test_healthz_reports_upstream_and_reader_and_models_come_from_the_upstream(proxied):
    health = httpx.get(f"{proxied['url']}/healthz", timeout=10)
    body = health.json()
    assert health.status_code == 200 and body["upstream"]["url"] == proxied["fake"].url
    assert body["upstream"]["healthy"] and body["reader"]["healthy"]
    assert body["reader"]["url"].startswith("http://127.0.0.1:") and body["scores"]["malformed_batches"] == 0
    models = _client(proxied["url"]).models.list()
    assert sorted(m.id for m in models.data) == sorted(CHAT_ANSWERS)


def test_metrics_carry_the_guards_families_and_its_readers_vllm_families_on_one_page(proxied):
    page = httpx.get(f"{proxied['url']}/metrics", timeout=10).text
    names = {f.name for f in text_string_to_metric_families(page)}
    assert {"guard_requests", "guard_build_info"} <= names
    assert "vllm:num_requests_running" in names and "vllm:prompt_tokens" in names  # the reader engine's own


def test_the_judge_endpoint_gives_the_relayed_answers_verdict_without_calling_the_upstream(proxied):
    client, url = _client(proxied["url"]), proxied["url"]
    for model, text in CHAT_ANSWERS.items():
        relayed = client.chat.completions.create(model=model, messages=QUESTION).choices[0].model_extra["guard"]
        calls = len(proxied["fake"].seen)
        answer = httpx.post(f"{url}/v1/guard/check", json={"messages": QUESTION, "answer": text}, timeout=120)
        assert answer.status_code == 200, answer.text
        checked = _checked(answer.json()["guard"])
        assert len(proxied["fake"].seen) == calls  # judged without the upstream
        assert checked["decision"] == relayed["decision"]
        assert [(s["start"], s["end"], s["verdict"]) for s in checked["sentences"]] == \
            [(s["start"], s["end"], s["verdict"]) for s in relayed["sentences"]]
        assert _p_true(checked) == pytest.approx(_p_true(relayed), abs=1e-5)


def test_the_litellm_guardrail_blocks_the_false_answer_read_by_the_real_reader(proxied):
    # LiteLLM calls the fake API itself; its post-call hook hands each answer to guard's guardrail (shipped config)
    (entry,) = yaml.safe_load((ROOT / "deploy" / "litellm" / "config.yaml").read_text())["guardrails"]
    params = {k: v for k, v in entry["litellm_params"].items() if k not in ("guardrail", "mode", "api_key")}
    guardrail = GuardGuardrail(**{**params, "api_base": proxied["url"], "alpha": 0.5},
                               guardrail_name=entry["guardrail_name"], event_hook="post_call")

    async def call(model: str) -> Any:
        try:
            answer = await litellm.acompletion(model=f"openai/{model}", api_base=proxied["fake"].url,
                                               api_key="sk-fake", messages=QUESTION)
        finally:
            await close_litellm_async_clients()
            litellm.in_memory_llm_clients_cache.flush_cache()
        data = {"model": model, "messages": QUESTION, "guardrail_to_apply": guardrail, "metadata": {}}
        return await UnifiedLLMGuardrails().async_post_call_success_hook(data, UserAPIKeyAuth(), answer)

    assert asyncio.run(call("truthful")).choices[0].message.content == CHAT_ANSWERS["truthful"]
    with pytest.raises(GuardrailRaisedException, match="'The capital of France is Berlin.'") as blocked:
        asyncio.run(call("liar"))
    assert blocked.value.blocked_content


def test_the_nemo_output_rail_withholds_the_false_answer_read_by_the_real_reader(proxied, tmp_path):
    answers = {}
    for model in CHAT_ANSWERS:
        folder = tmp_path / model
        shutil.copytree(ROOT / "deploy" / "nemo", folder)
        config = yaml.safe_load((folder / "config.yml").read_text())
        config["models"][0].update(model=model, parameters={"base_url": proxied["fake"].url, "api_key": "sk-x"})
        config["custom_data"]["guard"].update(url=proxied["url"], alpha=0.5)
        (folder / "config.yml").write_text(yaml.safe_dump(config))

        async def ask(folder: Path = folder) -> Any:
            try:
                return await LLMRails(RailsConfig.from_path(str(folder))).generate_async(messages=QUESTION)
            finally:
                await get_framework("default").aclose()

        answers[model] = asyncio.run(ask())["content"]
    assert answers["truthful"] == CHAT_ANSWERS["truthful"]
    assert answers["liar"].startswith("I am not confident that this answer is correct")
