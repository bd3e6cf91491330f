from __future__ import annotations

import numpy as np
import pytest

from calibration.fit import fit_logistic
from calibration.mil import bag_scores, fit_mil, fit_mil_one_vs_rest
from guard.errors import ConfigError
from guard.evaluation import auroc, expected_calibration_error


def _bags(n: int, seed: int, dim: int = 16):
    """Positive bags hide one instance at +6d; negative bags hide two at +3d.

    Mean pooling sees the same total shift in both (chance), the maximum does not.
    """
    rng = np.random.default_rng(seed)
    d = np.zeros(dim)
    d[3] = 1.0
    bags, y, planted = [], [], []
    for i in range(n):
        size = int(rng.integers(8, 20))
        bag = rng.standard_normal((size, dim))
        where = rng.choice(size, 2, replace=False)
        if i % 2 == 0:
            bag[where[0]] += 6 * d
            planted.append(int(where[0]))
        else:
            bag[where] += 3 * d
            planted.append(-1)
        bags.append(bag)
        y.append(i % 2 == 0)
    return bags, np.array(y), planted


def _instance_scores(bags, w, b, mean, scale):
    return [((bag - mean) / scale) @ w + b for bag in bags]


def test_mil_probe_finds_the_sparse_positive_instances_where_mean_pooling_fails():
    bags, y, planted = _bags(300, seed=0)
    w, b, mean, scale = fit_mil(bags, y)
    test_bags, test_y, test_planted = _bags(300, seed=1)
    scores = _instance_scores(test_bags, w, b, mean, scale)
    mil_auroc = auroc(np.array([s.max() for s in scores]), test_y)
    oracle_auroc = auroc(np.array([bag[:, 3].max() for bag in test_bags]), test_y)  # max along the planted d
    found = np.mean([int(np.argmax(s)) == p for s, p in zip(scores, test_planted) if p >= 0])

    pooled = np.stack([bag.mean(0) for bag in bags])
    pw, pb, pm, ps = fit_logistic(pooled, y, l2=1.0)
    test_pooled = np.stack([bag.mean(0) for bag in test_bags])
    pooled_auroc = auroc(((test_pooled - pm) / ps) @ pw + pb, test_y)

    assert w[3] / np.linalg.norm(w) > 0.9  # the planted direction
    assert mil_auroc > oracle_auroc - 0.03 and mil_auroc > 0.9
    assert found > 0.9  # the planted instance is the bag's top instance
    assert pooled_auroc < 0.7


def test_mil_bag_probability_is_calibrated_on_the_hard_maximum():
    bags, y, _ = _bags(400, seed=2)
    w, b, mean, scale = fit_mil(bags, y)
    starts = np.concatenate([[0], np.cumsum([len(x) for x in bags])[:-1]])
    z = bag_scores(np.concatenate(_instance_scores(bags, w, b, mean, scale)), starts)
    p = 1 / (1 + np.exp(-z))
    assert abs(p.mean() - y.mean()) < 0.05  # calibrated in the large
    assert expected_calibration_error(np.stack([1 - p, p], 1), y.astype(int)) < 0.08


def test_mil_one_vs_rest_gives_one_read_out_per_class():
    bags, y, _ = _bags(200, seed=3)
    labels = y.astype(int)
    weight, bias, mean, scale = fit_mil_one_vs_rest(bags, labels, 2, iters=200)
    assert weight.shape == (2, 16) and bias.shape == (2,)
    assert weight[1, 3] > 0 and weight[0, 3] < weight[1, 3]  # class 1 (positive bags) reads +d


@pytest.mark.parametrize(
    "bags, y, match",
    [([], [], "at least one bag"), ([np.zeros((0, 3)), np.ones((2, 3))], [True, False], "bag 0 is empty"),
     ([np.ones((2, 3)), np.ones((2, 3))], [True, True], "positive and negative"),
     ([np.ones((2, 3))], [True, False], "one label per bag")],
)
def test_mil_rejects_bad_bags_with_a_clear_error(bags, y, match):
    with pytest.raises(ConfigError, match=match):
        fit_mil(bags, np.array(y, bool))
