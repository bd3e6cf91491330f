"""The worker's steering on plain CPU tensors: only planned rows move, bit for bit as ``residual + alpha * v``,
a row whose steered sum would not be finite keeps its unsteered values and is counted, and the per-row
strengths live in one persistent buffer written in place (what a CUDA-graph replay reads)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from adapters.vllm.steering import SteerState  # noqa: E402
from guard.errors import AdapterError  # noqa: E402


def _state(max_alpha: float = 4.0, max_rows: int = 8) -> SteerState:
    vectors = np.array([[1.0, -2.0, 0.5, 0.0]], np.float32)  # (L=1, H=4)
    return SteerState(vectors, torch.device("cpu"), max_rows, max_alpha)


def test_planned_rows_move_by_alpha_times_v_and_the_others_stay_bit_identical():
    state = _state()
    residual = torch.arange(24, dtype=torch.float32).reshape(6, 4) / 7
    state.plan([(1, 2, 0.5), (4, 1, -3.0)])
    out = state.steered(residual, 0)
    v = state.vectors[0]
    assert torch.equal(out[[0, 3, 5]], residual[[0, 3, 5]])
    assert torch.equal(out[1:3], residual[1:3] + 0.5 * v) and torch.equal(out[4], residual[4] + -3.0 * v)
    assert state.refused_rows == 0 and state.fired == [1]


def test_a_row_whose_steered_sum_overflows_keeps_its_unsteered_values_and_is_counted():
    state = _state()
    residual = torch.zeros((3, 4), dtype=torch.float32)
    residual[1] = 3.0e38  # near float32's largest: + 1e38 * v[0] overflows to infinity
    residual[2, 2] = float("nan")  # already broken upstream of the op: never made worse, counted
    state.plan([(0, 1, 1.0), (1, 1, 1.0e38), (2, 1, 1.0)])
    out = state.steered(residual, 0)
    assert torch.equal(out[0], residual[0] + state.vectors[0])
    assert torch.equal(out[1], residual[1]) and torch.isnan(out[2, 2]) and torch.equal(out[2, :2], residual[2, :2])
    assert torch.isfinite(out[:2]).all() and state.refused_rows == 2


def test_a_later_plan_clears_the_rows_an_earlier_plan_steered_in_the_same_buffer():
    state = _state()
    address = state.alpha.data_ptr()
    state.plan([(0, 5, 2.0)])
    state.plan([(6, 1, 1.0)])
    assert state.alpha.tolist() == [0.0] * 6 + [1.0, 0.0] and state.alpha.data_ptr() == address
    residual = torch.ones((8, 4))
    state.plan([])
    assert torch.equal(state.steered(residual, 0), residual) and not state.alpha.any()
    assert state.alpha.data_ptr() == address and state.steps_steered == 2


def test_a_span_past_the_buffer_is_refused_with_the_sizes():
    with pytest.raises(AdapterError, match="ends at batch row 9, past the 8 rows"):
        _state().plan([(6, 3, 1.0)])
