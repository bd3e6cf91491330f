"""The server's per-chunk fast paths give exactly what the general paths give.

Plain-Python probabilities and conformal sets for one row, batched text feeding, copy-free score
takes and the shared empty event exist for speed only (docs: benchmarks/README.md, "Proxy
overhead"); each is held here to the numpy or token-by-token result it replaces.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.conformal import MondrianConformal
from guard.errors import AdapterError, ConfigError
from guard.outbox import NOTHING, Outbox
from guard.policy import GuardOptions, StreamGuard
from guard.probabilities import class_probabilities, row_probabilities
from guard.scores import ScoreSegment, ScoreStore
from guard.verdicts import AbstainReason, GuardEvent, TokenScore, VerdictRule

LABELS = ("true", "false", "neither")
CAL = [i / 20 for i in range(1, 20)]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 6), layers=st.integers(1, 5), k=st.integers(2, 5), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.1, 3.0, 60.0]))
def test_plain_python_probabilities_equal_the_numpy_formula(n, layers, k, seed, scale):
    scores = (np.random.default_rng(seed).normal(size=(n, layers, k)) * scale).astype(np.float32)
    rows = row_probabilities(scores.tolist())
    assert rows is not None
    np.testing.assert_allclose(np.array(rows), class_probabilities(scores), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n", [1, 8])  # the plain-Python path and the numpy one
def test_rows_with_nan_or_infinity_are_refused_naming_their_positions(bad, n):
    rule = VerdictRule(LABELS, "last", MondrianConformal.from_scores(0.1, [CAL] * 3), layers=2)
    scores = np.zeros((n, 2, 3), np.float32)
    scores[-1, 1, 2] = bad
    with pytest.raises(AdapterError, match=r"positions \[7.*NaN or infinite values; expected finite values of shape"):
        rule.row_probabilities(list(range(7, 7 + n)), scores)
    assert row_probabilities(scores[-1:].tolist()) is None
    with pytest.raises(AdapterError, match=r"shape \(2, 2\) per position"):
        rule.row_probabilities([7], np.zeros((1, 2, 2), np.float32))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), alpha=st.sampled_from([None, 0.1, 0.05, 0.2, 0.33, 0.5]),
       on_calibration=st.booleans())
def test_one_row_conformal_sets_and_p_values_equal_the_batched_ones_at_any_alpha(seed, alpha, on_calibration):
    rng = np.random.default_rng(seed)
    cal = [np.sort(rng.uniform(size=int(rng.integers(10, 60)))) for _ in range(3)]
    conformal = MondrianConformal.from_scores(0.1, cal)
    probs = rng.dirichlet(np.ones(3), size=20)
    if on_calibration:  # ties: 1 - p exactly on calibration scores and thresholds
        probs[:, 0] = 1.0 - rng.choice(cal[0], size=20)
    for row in probs:
        assert conformal.row_set(row.tolist(), alpha) == tuple(conformal.predict_sets(row[None], alpha)[0].tolist())
        assert conformal.row_p_values(row.tolist()) == tuple(conformal.p_values(row[None])[0].tolist())


def test_a_conformal_rebuilt_from_thresholds_gives_row_sets_at_its_alpha_only():
    thresholds = MondrianConformal.from_scores(0.1, [CAL] * 3).thresholds
    conformal = MondrianConformal.from_thresholds(0.1, thresholds)
    assert conformal.row_set([0.9, 0.05, 0.05]) == tuple(conformal.predict_sets(np.array([[0.9, 0.05, 0.05]]))[0])
    with pytest.raises(ConfigError, match="calibration scores"):
        conformal.row_p_values([0.9, 0.05, 0.05])
    with pytest.raises(ConfigError, match="calibration scores"):
        conformal.row_set([0.9, 0.05, 0.05], 0.2)


def _rule() -> VerdictRule:
    return VerdictRule(LABELS, "last", MondrianConformal.from_scores(0.1, [CAL] * 3))


@settings(max_examples=150, deadline=None)
@given(tokens=st.lists(st.sampled_from(["Paris", " is", " big", ".", " It", "!", " 3.14", "\n", "", " ok", "?"]),
                       min_size=1, max_size=30),
       seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(["flag", "abstain", "pass"]),
       batch=st.integers(1, 6))
def test_feeding_texts_in_batches_gives_the_events_of_one_token_at_a_time_joined(tokens, seed, mode, batch):
    """Scores come for every token but the last; a batch's scores may arrive before its texts (text held
    back upstream, as for stop strings), so a sentence can close and be decided in the middle of a batch."""
    rng = np.random.default_rng(seed)
    probs = [rng.dirichlet(np.ones(3) * 0.5) for _ in tokens]
    one, many = StreamGuard(_rule(), GuardOptions(mode=mode)), StreamGuard(_rule(), GuardOptions(mode=mode))
    singles, batched = Outbox(), Outbox()

    def scores(positions: range) -> None:
        for p in positions:
            if p < 100 + len(tokens) - 1:
                singles.add(one.add_probs(p, probs[p - 100]))
                batched.add(many.add_probs(p, probs[p - 100]))

    for start in range(0, len(tokens), batch):
        positions = range(100 + start, 100 + min(start + batch, len(tokens)))
        early = rng.uniform() < 0.5
        if early:
            scores(positions)
        for p in positions:
            singles.add(one.add_text(p, tokens[p - 100]))
        batched.add(many.add_texts(positions, [tokens[p - 100] for p in positions]))
        if not early:
            scores(positions)
    singles.add(one.finish())
    batched.add(many.finish())
    assert batched.take() == singles.take()
    assert many.summary() == one.summary()


def test_a_take_of_segments_cuts_the_first_at_start_without_copying_and_discard_forgets():
    store = ScoreStore()
    rows = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    store.publish([ScoreSegment("k", 0, rows[:4]), ScoreSegment("other", 0, rows[:1])])
    store.publish([ScoreSegment("k", 4, rows[4:])])
    assert [(s.start, s.n) for s in store.take_segments("k", 2)] == [(2, 2), (4, 2)]
    first = store.take_segments("k", 2)[0]
    assert np.shares_memory(first.scores, rows) and np.array_equal(first.scores, rows[2:4])
    assert store.take_segments("k", 6) == [] and store.take_segments("missing") == []
    assert store.take("k", 3).positions.tolist() == [3, 4, 5]
    store.discard("k")
    assert store.take_segments("k") == [] and store.take("other").positions.tolist() == [0]


def test_an_outbox_gathers_events_in_order_and_an_empty_one_gives_the_shared_empty_event():
    box = Outbox()
    assert box.take() is NOTHING and not NOTHING
    first = AbstainReason(kind="gate", alpha=0.1)
    box.add(GuardEvent("a", (TokenScore(1, (0.5, 0.5)),)))
    box.add(GuardEvent("b", (TokenScore(2, (0.1, 0.9)),), abstained=first))
    box.add(GuardEvent("", abstained=AbstainReason(kind="sentence", alpha=0.1)))
    event = box.take()
    assert event and event.text == "ab" and [s.position for s in event.token_scores] == [1, 2]
    assert event.abstained is first  # the first abstention stands
    assert box.take() is NOTHING


def test_the_gate_decides_from_one_row_as_the_numpy_formula_and_its_decision_serialises():
    from guard.gating import GateRule
    from guard.probe import Probe
    from guard.shipped import SHIPPED_DIR

    gate = Probe.load(SHIPPED_DIR / "smollm2-135m-instruct-gate.safetensors")
    rule = GateRule(gate, offset=3)
    rows = np.random.default_rng(0).normal(size=(20, len(gate.manifest.layers), 5)).astype(np.float32)
    for row in rows:
        decision = rule.decide(row)
        expected = gate.probabilities(row[None, :, 3:])[0, list(gate.labels).index("correct")]
        assert decision.p_correct == round(float(expected), 6)
        dumped = decision.model_dump(mode="json")
        assert type(dumped["answer"]) is bool and type(dumped["alpha"]) is float
        assert decision.answer == (not decision.certified or float(expected) >= rule.threshold())
    bad = rows[0].copy()
    bad[0, 4] = np.nan
    with pytest.raises(AdapterError, match="NaN or infinite"):
        rule.decide(bad)
