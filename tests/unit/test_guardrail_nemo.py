"""guard as a NeMo Guardrails action (adapters/guardrails/nemo_action.py), run by the real NeMo Guardrails library
on the shipped rails configuration (deploy/nemo/: config.py registers the action, rails.co defines the output rail,
config.yml turns it on): the main model is a fake OpenAI-compatible LLM on a real port, and the action asks guard
proxy's real app (over the fake reader) on another. A flagged answer is withheld; a true one goes through."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.llm.frameworks.registry import get_framework
from nemoguardrails.rails.llm.options import RailStatus, RailType

from adapters.guardrails.nemo_action import conversation
from guard.errors import ConfigError
from tests.unit.fake_proxy import ANSWERS
from tests.unit.live_server import judge_and_model, refusing

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nemo"
REFUSAL = "I am not confident that this answer is correct, so I will not give it."


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    with judge_and_model() as running:
        yield running


def _rails(tmp_path: Path, llm: str, guard: dict[str, Any]) -> RailsConfig:
    """The shipped configuration with its model and guard pointed at the test's servers."""
    folder = tmp_path / "rails"
    shutil.copytree(SHIPPED, folder)
    config = yaml.safe_load((folder / "config.yml").read_text())
    config["models"][0]["parameters"].update(base_url=f"{llm}/v1", api_key="sk-test")
    config["custom_data"]["guard"].update(guard)
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return RailsConfig.from_path(str(folder))


def _ask(config: RailsConfig, *questions: str, **options: Any) -> list[Any]:
    """Each question's answer, asked in turn in one event loop: NeMo's model client keeps to its first loop, and
    ``LLMRails`` built outside a running loop creates one it never closes."""
    async def main() -> list[Any]:
        rails = LLMRails(config)
        try:
            return [await rails.generate_async(messages=[{"role": "user", "content": q}], **options)
                    for q in questions]
        finally:  # NeMo pools its model clients process-wide: close them in the loop that opened them
            await get_framework("default").aclose()

    return asyncio.run(main())


def test_a_flagged_answer_is_withheld_and_a_true_one_goes_through(servers, tmp_path):
    config = _rails(tmp_path, servers["llm"], {"url": servers["judge"]})
    read = len(servers["proxy"].reader.requests)
    assert _ask(config, "wrong", "capital") == [{"role": "assistant", "content": REFUSAL},
                                               {"role": "assistant", "content": ANSWERS["capital"]}]
    assert len(servers["proxy"].reader.requests) == read + 2  # guard's reader read both answers
    asked = [r["body"]["messages"] for r in servers["proxy"].foreign.requests[-2:]]
    assert asked == [[{"role": "user", "content": "wrong"}], [{"role": "user", "content": "capital"}]]


def test_guard_reads_the_answer_in_its_conversation_system_message_and_earlier_turns_included(servers, tmp_path):
    config = _rails(tmp_path, servers["llm"], {"url": servers["judge"]})
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "capital"},
            {"role": "assistant", "content": ANSWERS["capital"]}, {"role": "user", "content": "wrong"}]

    async def main() -> Any:
        try:
            return await LLMRails(config).generate_async(messages=chat)
        finally:
            await get_framework("default").aclose()

    assert asyncio.run(main())["content"] == REFUSAL
    proxy = servers["proxy"]
    read = [proxy.prompts.words[t].strip() for t in proxy.reader.requests[-1]["prompt"]]
    question = read[:read.index("<assistant>", read.index("wrong"))]  # the question before the answer's mark
    assert question == ["<system>", "Be", "brief", ".", "<user>", "capital", "<assistant>", "The", "capital", "of",
                        "France", "is", "Paris", ".", "<user>", "wrong"]


def test_the_conversation_is_just_the_question_when_the_events_do_not_end_in_it():
    events = [{"type": "SystemMessage", "content": "s"}, {"type": "UserMessage", "text": "earlier"}]
    assert conversation(events, "now") == [{"role": "user", "content": "now"}]
    assert conversation(None, "now") == [{"role": "user", "content": "now"}]
    assert conversation([*events, {"type": "UserMessage", "text": "now"}, {"type": "BotMessage", "text": "a"}],
                        "now") == [{"role": "system", "content": "s"}, {"role": "user", "content": "earlier"},
                                   {"role": "user", "content": "now"}]


def test_the_rail_leaves_guards_verdict_and_the_flagged_sentences_in_the_context(servers, tmp_path):
    config = _rails(tmp_path, servers["llm"], {"url": servers["judge"]})
    (answer,) = _ask(config, "wrong", options={"output_vars": ["guard_verdict", "guard_flagged", "guard_error"]})
    assert answer.output_data["guard_flagged"] == ["The capital of France is Berlin."]
    assert answer.output_data["guard_verdict"]["decision"] == "flag" and answer.output_data["guard_error"] is None


def test_check_runs_the_output_rail_on_an_answer_already_held(servers, tmp_path):
    config = _rails(tmp_path, servers["llm"], {"url": servers["judge"]})
    asked = len(servers["proxy"].foreign.requests)

    async def main() -> Any:
        return await LLMRails(config).check_async([{"role": "user", "content": "wrong"},
                                                   {"role": "assistant", "content": ANSWERS["wrong"]}],
                                                  rail_types=[RailType.OUTPUT])

    result = asyncio.run(main())
    assert (result.status, result.rail, result.content) == (RailStatus.BLOCKED, "guard check answer", REFUSAL)
    assert len(servers["proxy"].foreign.requests) == asked  # the model was not called


@pytest.mark.parametrize(("on_error", "expected"), [("block", REFUSAL), ("allow", ANSWERS["capital"])])
def test_without_a_verdict_on_error_decides_whether_the_answer_goes_through(servers, tmp_path, on_error, expected):
    with refusing() as gone:
        config = _rails(tmp_path, servers["llm"], {"url": gone, "on_error": on_error})
        (answer,) = _ask(config, "capital", options={"output_vars": ["guard_error"]})
    assert answer.response[0]["content"] == expected
    assert "could not be reached" in answer.output_data["guard_error"]


@pytest.mark.parametrize(("guard", "words"), [
    ({"api_key": "sk-1"}, "unknown setting(s) ['api_key']"),
    ({"on_error": "ignore"}, "on_error='ignore'"),
    ({"url": "guard:8000"}, "not an http(s) URL"),
    ({"alpha": 2}, "alpha=2"),
])
def test_bad_guard_settings_stop_the_rails_from_being_built_naming_them(servers, tmp_path, guard, words):
    config = _rails(tmp_path, servers["llm"], guard)

    async def build() -> None:
        LLMRails(config)

    with pytest.raises(RuntimeError, match="Failed to initialize configuration module") as refused:
        asyncio.run(build())  # the shipped config.py's init registers the action, checking the settings
    assert isinstance(refused.value.__cause__, ConfigError) and words in str(refused.value.__cause__)
