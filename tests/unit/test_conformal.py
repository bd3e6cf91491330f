"""Statistical tests of the conformal guarantees, over many seeded splits of exchangeable data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.conformal import MondrianConformal, min_calibration_size
from guard.errors import ConfigError
from tests.unit.synthetic import noisy_softmax


def test_mondrian_sets_cover_each_class_at_least_one_minus_alpha_over_200_splits():
    alpha, k = 0.1, 3
    per_class = np.zeros((200, k))
    for seed in range(200):
        rng = np.random.default_rng(seed)
        probs, labels = noisy_softmax(rng, 600, k)
        cp = MondrianConformal(alpha).fit(probs[:300], labels[:300])
        sets = cp.predict_sets(probs[300:])
        hit = sets[np.arange(300), labels[300:]]
        per_class[seed] = [hit[labels[300:] == c].mean() for c in range(k)]
    # E[coverage] >= 1 - alpha for every class; the mean over 200 splits has s.e. ~0.003.
    assert np.all(per_class.mean(axis=0) >= 1 - alpha - 0.01), per_class.mean(axis=0)
    # ...and it is not trivially achieved by always returning every label.
    assert per_class.mean() < 0.99


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), a1=st.floats(0.05, 0.5), a2=st.floats(0.05, 0.5))
def test_prediction_sets_shrink_as_alpha_grows(seed, a1, a2):
    lo, hi = sorted((a1, a2))
    probs, labels = noisy_softmax(np.random.default_rng(seed), 400)
    small = MondrianConformal(hi).fit(probs, labels).predict_sets(probs)
    large = MondrianConformal(lo).fit(probs, labels).predict_sets(probs)
    assert np.all(large | ~small)  # small ⊆ large


def test_too_small_calibration_set_names_the_minimum():
    probs, labels = noisy_softmax(np.random.default_rng(0), 10, 2)
    with pytest.raises(ConfigError, match=f"needs at least {min_calibration_size(0.05)} per class"):
        MondrianConformal(0.05).fit(probs, labels)


def test_predicting_before_fitting_names_the_missing_step():
    with pytest.raises(ConfigError, match="call fit"):
        MondrianConformal(0.1).predict_sets(np.ones((1, 2)))


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5])
def test_invalid_alpha_is_refused(alpha):
    with pytest.raises(ConfigError, match=f"alpha={alpha!r}"):
        MondrianConformal(alpha)




@pytest.mark.parametrize("decimals", [0, 1, 2])
def test_mondrian_coverage_holds_over_200_splits_when_probabilities_tie_heavily(decimals):
    # coarse probabilities make many calibration and test scores exactly equal: ties must count as
    # conforming (score <= threshold), never silently drop the true label
    alpha, per_class = 0.2, []
    for seed in range(200):
        probs, labels = noisy_softmax(np.random.default_rng(seed), 600)
        probs = np.round(probs, decimals)
        cp = MondrianConformal(alpha).fit(probs[:300], labels[:300])
        hit = cp.predict_sets(probs[300:])[np.arange(300), labels[300:]]
        per_class.append([hit[labels[300:] == c].mean() for c in range(3)])
    assert np.all(np.mean(per_class, axis=0) >= 1 - alpha - 0.01)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), decimals=st.integers(1, 2))
def test_a_point_tied_with_the_threshold_setting_calibration_point_is_in_the_set(seed, decimals):
    probs, labels = noisy_softmax(np.random.default_rng(seed), 300)
    probs = np.round(probs, decimals)
    cp = MondrianConformal(0.2).fit(probs, labels)
    for c in np.unique(labels):
        at_threshold = np.flatnonzero((labels == c) & (1 - probs[:, c] == cp.thresholds[c]))
        # fit needs every class to hold enough points for a finite threshold: one of its own scores
        assert at_threshold.size
        assert cp.predict_sets(probs[at_threshold[:1]])[0, c]
