"""Learn-then-Test selective answering: the guarantee, monotonicity, and the stored calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.errors import ConfigError
from guard.selective import SelectiveCalibration, binomial_cdf, selective_threshold


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    conf = rng.uniform(0, 1, n)
    return conf, rng.uniform(0, 1, n) < 0.45 + 0.55 * conf  # more confident -> more often right


def test_selective_threshold_keeps_risk_below_alpha_with_probability_one_minus_delta():
    alpha, delta, violations, coverages = 0.2, 0.1, 0, []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        conf, correct = _draw(rng, 600)
        lam = selective_threshold(conf[:300], correct[:300], alpha, delta)
        # the guarantee is about the true risk of the threshold: estimate it on a large fresh draw
        fresh_conf, fresh_correct = _draw(rng, 20_000)
        answered = fresh_conf >= lam
        coverages.append(answered.mean())
        if answered.any() and (~fresh_correct[answered]).mean() > alpha:
            violations += 1
    assert violations / 300 <= delta + 0.03  # s.e. of the rate ~0.017
    assert np.mean(coverages) > 0.3  # it answers a useful share, not nothing


def test_the_fallback_procedure_certifies_at_least_what_a_bonferroni_grid_does():
    rng = np.random.default_rng(3)
    conf, correct = _draw(rng, 300)
    lam = selective_threshold(conf, correct, 0.2, 0.1)
    # the same test at delta / grid on every point (Bonferroni) is never less conservative
    bonferroni = min((j / 20 for j in range(1, 21) if (conf >= j / 20).any() and binomial_cdf(
        int((~correct[conf >= j / 20]).sum()), int((conf >= j / 20).sum()), 0.2) <= 0.1 / 20), default=math.inf)
    assert lam <= bonferroni


def test_selective_threshold_abstains_everywhere_when_nothing_can_be_certified():
    conf = np.linspace(0, 1, 50)
    assert selective_threshold(conf, np.zeros(50, bool), alpha=0.1) == np.inf


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), a1=st.floats(0.05, 0.5), a2=st.floats(0.05, 0.5))
def test_selective_threshold_is_monotone_in_alpha(seed, a1, a2):
    lo, hi = sorted((a1, a2))
    rng = np.random.default_rng(seed)
    conf = np.round(rng.uniform(0, 1, 300), 2)  # many ties
    correct = rng.uniform(0, 1, 300) < conf
    assert selective_threshold(conf, correct, hi) <= selective_threshold(conf, correct, lo)


@pytest.mark.parametrize("alpha, delta", [(0, 0.1), (1, 0.1), (0.1, 0), (0.1, 1.5)])
def test_invalid_alpha_or_delta_is_refused_with_the_value(alpha, delta):
    with pytest.raises(ConfigError, match="alpha=|delta="):
        selective_threshold(np.array([0.5]), np.array([True]), alpha, delta)


def test_confidences_outside_the_unit_interval_are_refused():
    with pytest.raises(ConfigError, match="expected probabilities in"):
        selective_threshold(np.array([1.5]), np.array([True]), 0.1)


def test_binomial_cdf_matches_direct_sum():
    n, p = 30, 0.2
    for k in (0, 3, 10, 29):
        direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        assert abs(binomial_cdf(k, n, p) - direct) < 1e-12


def test_stored_calibration_reproduces_its_threshold_and_serves_other_alphas():
    rng = np.random.default_rng(0)
    conf, correct = _draw(rng, 400)
    cal = SelectiveCalibration.fit(conf, correct, alpha=0.2, delta=0.1, label="correct")
    again = SelectiveCalibration.model_validate_json(cal.model_dump_json())
    assert again.threshold is not None and again.threshold_at() == again.threshold
    assert again.threshold_at(0.3) <= again.threshold <= again.threshold_at(0.1)


def test_an_uncertifiable_calibration_is_stored_as_no_threshold():
    cal = SelectiveCalibration.fit(np.linspace(0, 1, 40), np.zeros(40, bool), alpha=0.1, delta=0.1, label="correct")
    assert cal.threshold is None and cal.threshold_at() == math.inf


def test_a_calibration_with_mismatched_lists_is_refused():
    with pytest.raises(ValueError, match="equal length"):
        SelectiveCalibration(alpha=0.1, delta=0.1, label="correct", threshold=None, confidences=[0.5], correct=[])
