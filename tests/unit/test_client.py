"""guard.client: folding a stream's guard increments gives the non-streamed verdict of the same request (dicts and
the openai SDK's own objects), and the views accept fields they do not know."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.http.score_feed import ScoreFeed
from guard.client import GuardView, fold, verdict
from tests.unit.fake_upstream import BAD as WRONG
from tests.unit.fake_upstream import GOOD, MODEL, FakeUpstream, Script, run_app
from tests.unit.fake_upstream import events as _events

openai_types = pytest.importorskip("openai.types")

SCRIPTS = {
    "mixed": Script([("Good", GOOD), (" one", GOOD), (".", GOOD), (" Bad", WRONG), (" claim", WRONG), (".", WRONG),
                     (" More", GOOD), (" text", GOOD), (".", GOOD)], n_prompt=7),
    "clean": Script([("Paris", GOOD), (" is", GOOD), (" in", GOOD), (" France", GOOD), (".", GOOD)], n_prompt=3),
}


def _record(endpoint: str, prompt: str, mode: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The non-streamed answer and the streamed chunks of the same request, from guard serve's app."""
    recorded: dict[str, Any] = {}

    async def run(client: Any, fake: Any, app: Any) -> None:
        body: dict[str, Any] = {"model": MODEL, "guard": {"mode": mode}}
        if endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
        recorded["whole"] = (await client.post(path, json=body)).json()
        events = _events((await client.post(path, json={**body, "stream": True})).text)
        recorded["chunks"] = [e for e in events if e != "[DONE]"]

    run_app(FakeUpstream(ScoreFeed(), dict(SCRIPTS)), run)
    return recorded["whole"], recorded["chunks"]


@pytest.mark.parametrize("mode", ["flag", "pass", "abstain"])
@pytest.mark.parametrize("prompt", ["mixed", "clean"])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_folding_a_streams_chunks_gives_the_non_streamed_verdict_of_the_same_request(endpoint, prompt, mode):
    whole, chunks = _record(endpoint, prompt, mode)
    expected = verdict(whole)
    assert expected is not None and expected.decision in ("pass", "flag", "abstain")
    folded = fold(chunks)
    if expected.decision == "abstain":  # the stream stopped generating at the flagged sentence; the answer did not
        same = ("decision", "mode", "alpha", "score", "abstained", "sentences")
        assert folded.model_dump(include=set(same)) == expected.model_dump(include=set(same))
        assert folded.tokens and folded.counts is not None and expected.counts is not None
        assert folded.counts["tokens"] <= expected.counts["tokens"]
    else:
        assert folded == expected
        assert [t.position for t in folded.tokens] == [t.position for t in expected.tokens] and folded.tokens
    # the same through the openai SDK's own objects (guard fields in model_extra)
    sdk = (openai_types.chat.ChatCompletionChunk if endpoint == "chat" else openai_types.Completion)
    assert fold([sdk.construct(**c) for c in chunks]) == folded  # what the SDK builds from each event
    whole_sdk = (openai_types.chat.ChatCompletion if endpoint == "chat" else openai_types.Completion)
    assert verdict(whole_sdk.model_validate(whole)) == expected


def test_flagged_lists_the_flagged_sentences_and_unknown_fields_are_kept():
    whole, _ = _record("chat", "mixed", "flag")
    view = verdict(whole)
    assert view is not None and [s.verdict for s in view.flagged] == ["flagged"]
    newer = GuardView.model_validate({"decision": "pass", "from_a_newer_server": {"x": 1},
                                      "sentences": [{"index": 0, "verdict": "supported", "novel": True}]})
    assert newer.model_extra == {"from_a_newer_server": {"x": 1}}
    assert newer.sentences[0].model_extra == {"novel": True}


def test_a_choice_without_a_guard_field_has_no_verdict_and_folds_to_an_empty_view():
    plain = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
    assert verdict(plain) is None and verdict(plain, index=3) is None
    assert fold([{"choices": [{"index": 0, "delta": {"content": "hi"}}]}]) == GuardView()
