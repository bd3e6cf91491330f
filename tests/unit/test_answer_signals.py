"""Answer-level signals: where an answer probe reads, and the calibrated combiner's guarantee."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.onpolicy import OnPolicyAnswer
from calibration.readings import READINGS, reading, reading_features
from calibration.statements import QAItem
from guard.combiner import Combiner
from guard.errors import ArtifactError, ConfigError
from guard.selective import SelectiveCalibration


def _answer(rows: int, span: tuple[int, int] | None) -> OnPolicyAnswer:
    item = QAItem("Q?", ("a",), "d")
    prompt = np.full((2, 3), -1.0, np.float16)
    answer_rows = np.arange(rows * 6, dtype=np.float16).reshape(rows, 2, 3)
    return OnPolicyAnswer(item, "text", tuple(range(rows + 1)), True, np.zeros(rows + 1, np.float32), prompt,
                          answer_rows, span)


def test_each_reading_takes_the_rows_it_names():
    a = _answer(5, (1, 3))
    rows = a.answer_rows.astype(np.float32)
    expected = {"prompt": a.prompt_row, "last": rows[4], "mean": rows.mean(0), "exact": rows[1:3].mean(0),
                "exact_last": rows[2], "before": rows[0]}
    assert set(expected) == set(READINGS)
    for how, want in expected.items():
        got, fell = reading(a, how)
        assert not fell and np.array_equal(got, want.astype(np.float32)), how


def test_readings_fall_back_when_the_answer_names_nothing_and_say_so():
    no_span = _answer(4, None)
    for how in ("exact", "exact_last", "before"):
        got, fell = reading(no_span, how)
        assert fell and np.array_equal(got, no_span.answer_rows[-1].astype(np.float32))
    clipped = _answer(3, (2, 9))  # the span runs past the fed-back rows: clipped to them
    assert np.array_equal(reading(clipped, "exact")[0], clipped.answer_rows[2].astype(np.float32))
    features, share = reading_features([no_span, _answer(4, (0, 1))], "exact")
    assert features.shape == (2, 2, 3) and share == 0.5
    with pytest.raises(ConfigError, match="'middle' is unknown"):
        reading(no_span, "middle")


def _combiner(confidence: np.ndarray, correct: np.ndarray, alpha: float = 0.2) -> Combiner:
    return Combiner(signals=("probe", "logprob"), weights=(1.5, 0.5), bias=0.2, means=(0.0, -1.0), scales=(1.0, 0.5),
                    selective=SelectiveCalibration.fit(confidence, correct, alpha, 0.1, label="correct"))


def test_combiner_is_a_logistic_read_out_of_standardised_signals():
    comb = _combiner(np.linspace(0, 1, 50), np.linspace(0, 1, 50) > 0.3)
    z = 0.2 + 1.5 * (0.4 - 0.0) / 1.0 + 0.5 * (-2.0 + 1.0) / 0.5
    assert comb.confidence({"probe": 0.4, "logprob": -2.0}) == pytest.approx(1 / (1 + np.exp(-z)))
    cols = np.array([[0.4, -2.0], [3.0, 0.0]])
    assert comb.confidences(cols)[0] == pytest.approx(comb.confidence({"probe": 0.4, "logprob": -2.0}))
    with pytest.raises(ArtifactError, match="'logprob'"):
        comb.confidence({"probe": 0.4})
    with pytest.raises(ArtifactError, match="do not match"):
        comb.confidences(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one weight, mean and scale per signal"):
        Combiner(signals=("a",), weights=(1.0, 2.0), bias=0.0, means=(0.0,), scales=(1.0,),
                 selective=comb.selective)


def test_combined_threshold_keeps_risk_below_alpha_over_many_random_splits():
    rng = np.random.default_rng(0)
    alpha, violations, answered = 0.2, 0, []
    for _ in range(200):
        n = 400
        signal = rng.normal(size=(n, 2))
        truth = rng.random(n) < 1 / (1 + np.exp(-(3.0 * signal[:, 0] + 2.0 * signal[:, 1])))
        base = Combiner(signals=("probe", "logprob"), weights=(3.0, 2.0), bias=0.0, means=(0.0, 0.0),
                        scales=(1.0, 1.0), selective=SelectiveCalibration.fit(np.ones(2) * 0.5, np.ones(2, bool), alpha,
                                                                             0.1, "correct"))
        conf = base.confidences(signal)
        cal, test = np.arange(200), np.arange(200, 400)
        comb = base.model_copy(update={"selective": SelectiveCalibration.fit(conf[cal], truth[cal], alpha, 0.1,
                                                                            "correct")})
        lam = comb.threshold_at(alpha)
        keep = conf[test] >= lam
        if keep.any():
            answered.append(keep.mean())
            violations += (~truth[test][keep]).mean() > alpha + 0.05
    assert len(answered) >= 180 and np.mean(answered) > 0.3  # it certifies a real share, not nothing
    assert violations / 200 <= 0.1
