"""The decision layer: options, the verdict rule, and the per-choice streaming state machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.conformal import MondrianConformal
from guard.errors import AdapterError, ArtifactError, RequestOptionError
from guard.policy import (
    DEFAULT_ABSTAIN_MESSAGE,
    GuardEvent,
    GuardOptions,
    StreamGuard,
    parse_guard_options,
)
from guard.probe import ConformalCalibration, Probe, ProbeManifest
from guard.sentences import SentenceSplitter
from guard.verdicts import VerdictRule

LABELS = ("true", "false", "neither")
N_CAL = 19
CAL = np.arange(1, N_CAL + 1) / (N_CAL + 1)  # calibration nonconformity scores of every class: 0.05 .. 0.95
GOOD = np.array([0.9, 0.05, 0.05])  # p_true = 19/20
BAD = np.array([0.05, 0.9, 0.05])  # p_true = 2/20 = 0.1 <= alpha 0.1: flagged
P = 100  # first generated position (the prompt comes before)


def _rule(pooling: str = "last", layers: int = 1, with_scores: bool = True) -> VerdictRule:
    conformal = (MondrianConformal.from_scores(0.1, [CAL] * 3) if with_scores
                 else MondrianConformal.from_thresholds(0.1, MondrianConformal.from_scores(0.1, [CAL] * 3).thresholds))
    return VerdictRule(LABELS, pooling, conformal, layers=layers, name="test-probe")


def _p_true(prob_true: float) -> float:
    """The contract's p-value of 'true', computed independently of the implementation."""
    return (1 + np.sum(CAL >= 1 - prob_true)) / (N_CAL + 1)


def _run(guard: StreamGuard, tokens: list[str], probs: list[np.ndarray | None]) -> list[GuardEvent]:
    """Feed like vLLM does: the score of token i arrives with token i + 1; the last token is never scored."""
    events = []
    for i, token in enumerate(tokens):
        events.append(guard.add_text(P + i, token))
        if i > 0 and probs[i - 1] is not None:
            events.append(guard.add_probs(P + i - 1, probs[i - 1]))
    events.append(guard.finish())
    return events


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[str], list[np.ndarray | None]]:
    words = st.sampled_from(["Paris", " is", " the", " capital", ".", " It", "!", " 3.14", "?", "\n", " e.g.", " ok",
                             "", " The", "... ", " end."])
    tokens = draw(st.lists(words, min_size=1, max_size=40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dropped = draw(st.floats(0, 0.3))
    probs = [None if rng.uniform() < dropped else rng.dirichlet(np.ones(3) * 0.5) for _ in tokens]
    return tokens, probs


@settings(max_examples=150, deadline=None)
@given(stream=_streams(), mode=st.sampled_from(["flag", "pass"]))
def test_flag_and_pass_modes_never_change_the_text(stream, mode):
    tokens, probs = stream
    guard = StreamGuard(_rule(), GuardOptions(mode=mode))
    events = _run(guard, tokens, probs)
    assert "".join(e.text for e in events) == "".join(tokens)
    assert not any(e.abstained for e in events)
    released = [s.position for e in events for s in e.token_scores]
    assert released == sorted(set(released))  # each score once, in order
    summary = guard.summary()
    flagged = summary.counts.flagged
    assert summary.decision == ("flag" if mode == "flag" and flagged else "pass")


@settings(max_examples=150, deadline=None)
@given(stream=_streams())
def test_abstain_mode_emits_exactly_the_sentences_before_the_first_flagged_one_then_the_message(stream):
    tokens, probs = stream
    text = "".join(tokens)
    guard = StreamGuard(_rule(), GuardOptions(mode="abstain", abstain_message="[withheld]"))
    events = _run(guard, tokens, probs)
    verdicts = guard.summary().sentences
    # the verdicts follow the contract, computed here without the implementation
    splitter = SentenceSplitter()
    sentences = [s for i, t in enumerate(tokens) for s in splitter.feed(P + i, t)] + splitter.finish()
    for v, s in zip(verdicts, sentences):
        scored = [p for p in range(s.first, s.last + 1) if p - P < len(tokens) - 1 and probs[p - P] is not None]
        expected = "unscored" if not scored else "flagged" if _p_true(probs[scored[-1] - P][0]) <= 0.1 else v.verdict
        assert (v.start, v.end, v.verdict) == (s.start, s.end, expected)
    flagged = [v for v in verdicts if v.verdict == "flagged"]
    emitted = "".join(e.text for e in events)
    if flagged:
        assert emitted == text[: flagged[0].start] + "[withheld]"
        assert len(verdicts) == flagged[0].index + 1 and guard.summary().decision == "abstain"
    else:
        assert emitted == text and len(verdicts) == len(sentences)
    # nothing is sent before its sentence is decided: every prefix sent ends at a decided sentence's end
    sent, ends = "", {0} | {v.end for v in verdicts}
    for e in events:
        sent += e.text.removesuffix("[withheld]") if e.abstained else e.text
        assert len(sent) in ends


def test_scores_one_token_late_decide_a_sentence_when_its_last_token_is_scored_and_the_final_token_stays_unscored():
    guard = StreamGuard(_rule(), GuardOptions(mode="abstain"))
    assert guard.add_text(P, "Paris").text == ""
    assert guard.add_text(P + 1, " is").text == ""
    guard.add_probs(P, GOOD)
    guard.add_text(P + 2, ".")
    guard.add_probs(P + 1, GOOD)
    event = guard.add_text(P + 3, " Yes")  # closes "Paris is. " but "." (P + 2) has no score yet
    assert (event.text, event.sentences) == ("", ())
    event = guard.add_probs(P + 2, GOOD)
    assert event.text == "Paris is. " and [v.verdict for v in event.sentences] == ["supported"]
    assert [s.position for s in event.token_scores] == [P, P + 1, P + 2]
    event = guard.finish()  # " Yes" was the last token: never scored, so never flagged
    assert event.text == "Yes" and event.sentences[0].verdict == "unscored" and event.sentences[0].p_true is None
    assert guard.summary().decision == "pass" and guard.summary().counts.unscored == 1


def test_a_sentence_is_pooled_from_its_last_scored_token_when_its_last_token_has_no_score():
    guard = StreamGuard(_rule())
    guard.add_text(P, "Bad")
    guard.add_text(P + 1, " claim.")
    guard.add_probs(P, BAD)
    [verdict] = guard.finish().sentences  # the final token P + 1 never gets a score
    assert (verdict.verdict, verdict.tokens_scored, verdict.probs["false"]) == ("flagged", 1, 0.9)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.3])
def test_abstains_exactly_when_the_p_value_of_true_crosses_alpha(alpha):
    for j in range(40):
        prob_true = (j + 0.5) / 40  # never tied with a calibration score
        probs = np.array([prob_true, 1 - prob_true, 0.0])
        guard = StreamGuard(_rule(), GuardOptions(mode="abstain", alpha=alpha))
        events = _run(guard, ["A claim.", ""], [probs, None])  # "" is the end-of-sequence token
        abstained = [e.abstained for e in events if e.abstained]
        assert bool(abstained) == (_p_true(prob_true) <= alpha), (prob_true, alpha)
        if abstained:
            assert (abstained[0].kind, abstained[0].sentence, abstained[0].alpha) == ("sentence", 0, alpha)
            assert abstained[0].p_true == pytest.approx(_p_true(prob_true))
            assert "".join(e.text for e in events) == DEFAULT_ABSTAIN_MESSAGE


def test_verdict_labels_follow_the_prediction_set():
    guard = StreamGuard(_rule())
    uncertain = np.array([0.5, 0.5, 0.0])  # p_true = p_false = 11/20: both in the set
    verdicts = [v.verdict for e in _run(guard, ["One.", " Two.", " Three.", ""], [GOOD, BAD, uncertain, None])
                for v in e.sentences]
    assert verdicts == ["supported", "flagged", "uncertain"]
    summary = guard.summary()
    assert summary.score == pytest.approx(0.1) and summary.decision == "flag"
    assert json.loads(summary.model_dump_json())["sentences"][1]["prediction_set"] == ["false"]


def test_max_pooling_takes_per_layer_maxima_of_raw_scores_and_refuses_probabilities():
    rule = _rule(pooling="max", layers=2)
    guard = StreamGuard(rule)
    with pytest.raises(AdapterError, match="add_scores"):
        guard.add_probs(P, GOOD)
    raw = [np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), np.array([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])]
    guard.add_text(P, "A")
    guard.add_text(P + 1, " b.")
    guard.add_scores(P, raw[0])
    guard.add_text(P + 2, "")
    guard.add_scores(P + 1, raw[1])
    [verdict] = guard.finish().sentences
    z = np.array([[2.0, 3.0, 0.0], [1.0, 1.0, 0.0]]).mean(axis=0)
    np.testing.assert_allclose(list(verdict.probs.values()), np.exp(z) / np.exp(z).sum())


def test_the_gate_abstains_before_any_text_and_is_ignored_in_pass_mode():
    guard = StreamGuard(_rule(), GuardOptions(mode="flag", abstain_message="No."))
    event = guard.gate_abstain("out of scope")
    assert event.text == "No." and event.abstained.kind == "gate" and event.abstained.detail == "out of scope"
    assert guard.stopped and guard.add_text(P, "Text.") == GuardEvent()
    assert guard.summary().decision == "abstain"
    passive = StreamGuard(_rule(), GuardOptions(mode="pass"))
    assert passive.gate_abstain("x") == GuardEvent() and passive.summary().decision == "pass"


def test_abstain_mode_releases_token_scores_only_with_their_verified_text():
    guard = StreamGuard(_rule(), GuardOptions(mode="abstain"))
    events = _run(guard, ["Good.", " Bad.", " More.", ""], [GOOD, BAD, GOOD, None])
    assert "".join(e.text for e in events) == "Good. " + DEFAULT_ABSTAIN_MESSAGE
    assert [s.position for e in events for s in e.token_scores] == [P]


@pytest.mark.parametrize(("raw", "param", "shown"), [
    ({"mode": "redact"}, "guard.mode", 'guard.mode="redact"'),
    ({"mode": "steer", "steer_how": "rewind"}, "guard.steer_how", 'guard.steer_how="rewind"'),
    ({"mode": "steer", "steer_alpha": "big"}, "guard.steer_alpha", 'guard.steer_alpha="big"'),
    ({"alpha": 1.5}, "guard.alpha", "guard.alpha=1.5"),
    ({"alpha": 0}, "guard.alpha", "guard.alpha=0"),
    ({"alpha": "0.1"}, "guard.alpha", 'guard.alpha="0.1"'),
    ({"gate": "yes"}, "guard.gate", 'guard.gate="yes"'),
    ({"abstain_message": ""}, "guard.abstain_message", 'guard.abstain_message=""'),
    ({"colour": "red"}, "guard.colour", "no such field"),
    ({"answer_samples": True}, "guard.answer_samples", "guard.answer_samples=true"),
    ({"answer_check": True, "answer_samples": "yes"}, "guard.answer_samples", 'guard.answer_samples="yes"'),
    ("flag", "guard", 'guard="flag"'),
])
def test_bad_options_name_the_field_path_the_value_and_the_accepted_values(raw, param, shown):
    with pytest.raises(RequestOptionError) as info:
        parse_guard_options(raw)
    assert info.value.param == param and shown in str(info.value) and "expected" in str(info.value)
    if param == "guard.mode":
        assert "'pass', 'flag', 'abstain', 'steer'" in str(info.value)
    if param == "guard.alpha":
        assert "strictly between 0 and 1" in str(info.value)


def test_valid_options_parse_and_none_gives_the_defaults():
    assert parse_guard_options(None) == GuardOptions(mode="flag", alpha=None, abstain_message=None, gate=True)
    assert parse_guard_options({"mode": "abstain", "alpha": 0.05, "gate": False}).alpha == 0.05


def test_an_alpha_the_artefact_cannot_serve_is_refused_naming_guard_alpha_and_the_fix():
    rule = _rule(with_scores=False)
    with pytest.raises(RequestOptionError,
                       match=r"guard.alpha=0.05 .*calibrated at alpha=0.1.*guard calibrate") as info:
        StreamGuard(rule, GuardOptions(alpha=0.05))
    assert info.value.param == "guard.alpha"
    guard = StreamGuard(rule)  # its own alpha works, without p-values
    _run(guard, ["Bad.", ""], [BAD, None])
    summary = guard.summary()
    assert summary.sentences[0].verdict == "flagged" and summary.score is None


def test_a_rule_needs_a_true_label_and_a_calibrated_probe():
    conformal = MondrianConformal.from_scores(0.1, [CAL] * 2)
    with pytest.raises(ArtifactError, match="'true' label"):
        VerdictRule(("yes", "no"), "last", conformal)
    manifest = ProbeManifest(kind="bare", labels=LABELS, layers=(1,), hidden_size=2, num_layers=4,
                             model_fingerprint="x")
    zeros = np.zeros((1, 2), np.float32)
    bare = Probe(manifest, np.zeros((1, 3, 2), np.float32), np.zeros((1, 3), np.float32), zeros, zeros + 1)
    with pytest.raises(ArtifactError, match="no conformal calibration"):
        VerdictRule.from_probe(bare)
    scores = {label: CAL.tolist() for label in LABELS}
    calibrated = ConformalCalibration(alpha=0.1, thresholds={label: 0.9 for label in LABELS},
                                      n_cal={label: N_CAL for label in LABELS}, scores=scores)
    probe = Probe(manifest.model_copy(update={"conformal": calibrated}), bare.weight, bare.bias, bare.mean, bare.scale)
    assert VerdictRule.from_probe(probe).has_p_values


def test_misfed_scores_are_refused_with_the_expected_shape():
    guard = StreamGuard(_rule())
    with pytest.raises(AdapterError, match=r"shape \(2,\) per position; expected finite values of shape \(3,\)"):
        guard.add_probs(P, np.array([0.5, 0.5]))
    guard.add_probs(P, GOOD)
    with pytest.raises(AdapterError, match="scored twice"):
        guard.add_probs(P, GOOD)


def test_a_lost_score_holds_its_sentence_until_finish_which_decides_with_the_scores_there_are():
    guard = StreamGuard(_rule(), GuardOptions(mode="abstain"))
    events = _run(guard, ["Good.", " Lost", " score.", " Next.", ""], [GOOD, None, GOOD, GOOD, None])
    assert "".join(e.text for e in events[:-1]) == "Good. "  # " Lost score. " waits for position P + 1
    assert events[-1].text == "Lost score. Next." and [v.index for v in events[-1].sentences] == [1, 2]
    assert [s.position for s in events[-1].token_scores] == [P + 2, P + 3]  # P + 1 skipped, never invented
    assert guard.summary().sentences[1].tokens_scored == 1
