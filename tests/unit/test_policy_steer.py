"""Mode "steer": hold text per token, ask for steering at the first flagged sentence, resume on the steered tokens."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.conformal import MondrianConformal
from guard.errors import AdapterError, RequestOptionError
from guard.policy import GuardEvent, GuardOptions, StreamGuard, parse_guard_options
from guard.sentences import SentenceSplitter
from guard.verdicts import VerdictRule

LABELS = ("true", "false", "neither")
CAL = np.arange(1, 20) / 20
GOOD = np.array([0.9, 0.05, 0.05])
BAD = np.array([0.05, 0.9, 0.05])
P = 100


def _guard(how: str = "continue", strength: float = 4.0) -> StreamGuard:
    rule = VerdictRule(LABELS, "last", MondrianConformal.from_scores(0.1, [CAL] * 3), name="test-probe")
    return StreamGuard(rule, GuardOptions(mode="steer", steer_how=how), steer_strength=strength)


def _feed(guard: StreamGuard, start: int, tokens: list[str], probs: list[np.ndarray | None]) -> list[GuardEvent]:
    """Feed as vLLM does (token i's score arrives with token i + 1); stop when the guard asks to steer."""
    events = []
    for i, token in enumerate(tokens):
        events.append(guard.add_text(start + i, token))
        if i > 0 and probs[i - 1] is not None:
            events.append(guard.add_probs(start + i - 1, probs[i - 1]))
        if guard.stopped:
            return events
    events.append(guard.finish())
    return events


def _text(events: list[GuardEvent]) -> str:
    return "".join(e.text for e in events)


def test_continue_keeps_the_verified_sentences_and_replaces_the_flagged_one_with_the_steered_text():
    guard = _guard("continue")
    before = _feed(guard, P, ["Good.", " Bad.", " More.", ""], [GOOD, BAD, GOOD, None])
    [steer] = [e.steer for e in before if e.steer]
    assert _text(before) == "Good." and guard.stopped  # the flagged sentence never leaves
    assert (steer.kind, steer.how, steer.position, steer.kept_chars, steer.strength) == ("sentence", "continue",
                                                                                         P + 1, 5, 4.0)
    assert steer.flagged.verdict == "flagged" and steer.flagged.index == 1
    resumed = guard.resume()
    after = _feed(guard, P + 1, [" Fine.", ""], [GOOD, None])
    assert _text(before) + resumed.text + _text(after) == "Good. Fine."
    summary = guard.summary()
    assert summary.decision == "steer" and summary.steered == steer
    assert [(v.index, v.verdict, v.first) for v in summary.sentences] == [(0, "supported", P), (1, "supported", P + 1)]
    assert summary.counts.tokens == 3 and summary.counts.flagged == 0


def test_scores_of_the_kept_tokens_sent_again_by_the_steered_request_are_ignored():
    guard = _guard("continue")
    _feed(guard, P, ["Good.", " Bad.", ""], [GOOD, BAD, None])
    guard.resume()
    assert guard.add_probs(P, GOOD) == GuardEvent()  # the continuation's prompt is re-scored in prefill


def test_regenerate_holds_the_whole_answer_and_replaces_it_by_the_steered_one():
    guard = _guard("regenerate")
    before = _feed(guard, P, ["Good.", " Bad.", " More.", ""], [GOOD, BAD, GOOD, None])
    assert _text(before) == "" and guard.steered.position is None and guard.steered.kept_chars == 0
    resumed = guard.resume()
    after = _feed(guard, P, ["Right.", " Also.", ""], [GOOD, GOOD, None])
    assert resumed.text + _text(after) == "Right. Also."
    summary = guard.summary()
    assert summary.decision == "steer" and [v.index for v in summary.sentences] == [0, 1]


def test_regenerate_sends_an_unflagged_answer_only_once_it_is_complete():
    guard = _guard("regenerate")
    events = _feed(guard, P, ["Good.", " Fine.", ""], [GOOD, GOOD, None])
    assert all(e.text == "" for e in events[:-1]) and events[-1].text == "Good. Fine."
    assert guard.summary().decision == "pass" and guard.steered is None


def test_the_gate_asks_for_steering_from_the_first_token_in_mode_steer():
    guard = _guard("continue")
    event = guard.gate_abstain("p_correct 0.1")
    assert event.steer.kind == "gate" and event.steer.position is None and event.text == "" and guard.stopped
    guard.resume()
    after = _feed(guard, P, ["Steered.", ""], [GOOD, None])
    assert _text(after) == "Steered." and guard.summary().decision == "steer"


def test_after_steering_the_guard_reports_like_flag_mode_and_never_steers_twice():
    guard = _guard("continue")
    _feed(guard, P, ["Bad.", ""], [BAD, None])
    guard.resume()
    after = _feed(guard, P, ["Still bad.", " X", ""], [BAD, GOOD, None])
    assert _text(after) == "Still bad. X" and not any(e.steer for e in after)
    assert guard.summary().counts.flagged == 1 and guard.summary().decision == "steer"


def test_resume_without_a_steering_request_is_refused():
    with pytest.raises(AdapterError, match="resume"):
        _guard().resume()


def test_steer_mode_without_a_steering_vector_is_refused_naming_guard_mode():
    rule = VerdictRule(LABELS, "last", MondrianConformal.from_scores(0.1, [CAL] * 3))
    with pytest.raises(RequestOptionError, match="steering vector") as info:
        StreamGuard(rule, GuardOptions(mode="steer"))
    assert info.value.param == "guard.mode"


@pytest.mark.parametrize("field", ["steer_alpha", "steer_how"])
def test_steer_fields_outside_steer_mode_are_refused_naming_the_field_and_the_fix(field):
    value = 2.0 if field == "steer_alpha" else "regenerate"
    with pytest.raises(RequestOptionError) as info:
        parse_guard_options({"mode": "flag", field: value})
    assert info.value.param == f"guard.{field}" and "mode to 'steer'" in str(info.value)
    assert parse_guard_options({"mode": "steer", field: value}).mode == "steer"


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[str], list[np.ndarray | None]]:
    words = st.sampled_from(["Paris", " is", " fine", ".", " It", "!", "?", "\n", " e.g.", "", " The", " end."])
    tokens = draw(st.lists(words, min_size=1, max_size=30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return tokens, [rng.dirichlet(np.ones(3) * 0.5) if rng.uniform() > 0.2 else None for _ in tokens]


@settings(max_examples=150, deadline=None)
@given(stream=_streams(), how=st.sampled_from(["continue", "regenerate"]))
def test_steer_mode_sends_only_token_prefixes_of_verified_text_and_stops_before_the_flagged_sentence(stream, how):
    tokens, probs = stream
    guard = _guard(how)
    events = _feed(guard, P, tokens, probs)
    sent = _text(events)
    starts = {sum(len(t) for t in tokens[:i]) for i in range(len(tokens) + 1)}
    assert "".join(tokens).startswith(sent) and len(sent) in starts  # whole tokens, in order
    point = guard.steered
    if point is None:
        assert sent == "".join(tokens) and guard.summary().counts.flagged == 0
        return
    assert point.flagged.verdict == "flagged"
    if how == "regenerate":
        assert sent == ""
    else:  # exactly the tokens before the flagged sentence's first token, at most
        kept = "".join(tokens[: point.position - P])
        assert kept.startswith(sent) and kept[len(sent):].strip() == "" and point.kept_chars == len(kept)
        splitter = SentenceSplitter()
        sentences = [s for i, t in enumerate(tokens) for s in splitter.feed(P + i, t)] + splitter.finish()
        assert sentences[point.flagged.index].first == point.position
        assert guard.resume().text + sent == kept


def test_always_steers_unconditionally_relays_text_as_it_arrives_and_reports_it():
    guard = _guard("always", strength=2.5)
    events = _feed(guard, P, ["Bad.", " More.", ""], [BAD, GOOD, None])
    assert [e.text for e in events][:1] == ["Bad."] and _text(events) == "Bad. More."
    assert guard.gate_abstain().text == "" and not guard.stopped  # already steered from the first token
    summary = guard.summary()
    assert summary.decision == "steer" and summary.counts.flagged == 1
    assert (summary.steered.kind, summary.steered.how, summary.steered.strength) == ("request", "always", 2.5)
