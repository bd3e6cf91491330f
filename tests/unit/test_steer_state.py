"""The worker's steering op on plain CPU tensors: only planned rows move, bit for bit as ``residual + alpha * v``,
and a row whose steered sum would not be finite keeps its unsteered values and is counted."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from adapters.vllm.steering import SteerState  # noqa: E402


def _state(max_alpha: float = 4.0) -> SteerState:
    vectors = np.array([[1.0, -2.0, 0.5, 0.0]], np.float32)  # (L=1, H=4)
    return SteerState(vectors, torch.device("cpu"), max_alpha)


def test_planned_rows_move_by_alpha_times_v_and_the_others_stay_bit_identical():
    state = _state()
    residual = torch.arange(24, dtype=torch.float32).reshape(6, 4) / 7
    before = residual.clone()
    state.plan([(1, 2, 0.5), (4, 1, -3.0)])
    state.on_layer(residual, 0)
    v = state.vectors[0]
    assert torch.equal(residual[[0, 3, 5]], before[[0, 3, 5]])
    assert torch.equal(residual[1:3], before[1:3] + 0.5 * v) and torch.equal(residual[4], before[4] + -3.0 * v)
    assert state.refused_rows == 0


def test_a_row_whose_steered_sum_overflows_keeps_its_unsteered_values_and_is_counted():
    state = _state()
    residual = torch.zeros((3, 4), dtype=torch.float32)
    residual[1] = 3.0e38  # near float32's largest: + 1e38 * v[0] overflows to infinity
    residual[2, 2] = float("nan")  # already broken upstream of the op: never made worse, counted
    before = residual.clone()
    state.plan([(0, 1, 1.0), (1, 1, 1.0e38), (2, 1, 1.0)])
    state.on_layer(residual, 0)
    assert torch.equal(residual[0], before[0] + state.vectors[0])
    assert torch.equal(residual[1], before[1]) and torch.isnan(residual[2, 2]) and torch.equal(residual[2, :2],
                                                                                                  before[2, :2])
    assert torch.isfinite(residual[:2]).all() and state.refused_rows == 2


def test_no_plan_leaves_the_residual_untouched():
    state = _state()
    residual = torch.ones((2, 4))
    state.plan([])
    state.on_layer(residual, 0)
    assert torch.equal(residual, torch.ones((2, 4))) and state.fired == [1]
