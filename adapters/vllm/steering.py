"""In-worker steering: add ``alpha * v`` to the residual stream of the rows of requests that steer.

Per engine step, the capture's ``before`` hands :meth:`SteerState.plan` the batch rows to steer
(each steering request's rows at positions ``>= steer_from``) and their ``alpha``; they go to the
device as one index tensor and one ``alpha`` tensor. During the forward, each steered decoder layer
calls the opaque custom op ``guard::steer_layer``, declared as mutating ``residual``: vLLM's Llama
layers return ``(hidden, residual)`` whose sum is the residual stream the next layer's fused norm
reads, so adding ``alpha[:, None] * v[slot]`` to ``residual[rows]`` steers exactly those rows.
Every other row is untouched, bit for bit. No host syncs, no per-token Python.

No non-finite value enters the residual stream through steering: a steered row whose sum is not
finite keeps its unsteered values (decided on the device, ``torch.where``) and is counted in
``refused_rows`` (a device counter read with the step's scores). The KV cache is written from the
residual stream, and vLLM reuses freed cache blocks for later requests, whose attention reads the
stale slots of a block under a zero weight: ``0 * inf`` is NaN, so one request's overflow would
otherwise reach every request after it. Strengths beyond the vector's
:attr:`~guard.steering.SteeringVector.max_alpha` never reach a plan (the capture drops them and
counts a bad option).

The steering hooks are registered before the capture hooks, so at a layer that is both steered
and captured, scores are read *after* the addition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from guard.errors import AdapterError
from guard.model_spec import ModelSpec
from guard.steering import SteeringVector

__all__ = ["SteerState", "install_steering"]


@torch.library.custom_op("guard::steer_layer", mutates_args=("residual",))
def _steer_layer(residual: torch.Tensor, slot: int) -> None:
    """Opaque to torch.compile: adds this step's steering to one layer's residual buffer in place."""
    state = _STATE
    if state is not None:
        state.on_layer(residual, slot)


@_steer_layer.register_fake
def _steer_layer_fake(residual: torch.Tensor, slot: int) -> None:
    return None


torch.fx.node.has_side_effect(torch.ops.guard.steer_layer.default)

_STATE: SteerState | None = None


class SteerState:
    """Worker-resident steering: the device copy of the vectors and the current step's rows.

    Args:
        vectors: the artefact's ``(L, H)`` directions.
        device: where the model runs.
    """

    def __init__(self, vectors: np.ndarray, device: Any, max_alpha: float = float("inf")) -> None:
        self.vectors = torch.from_numpy(vectors).to(device)  # (L, H) float32
        self.device = device
        self.max_alpha = max_alpha
        self.refused = torch.zeros((), dtype=torch.int64, device=device)  # steered rows kept unsteered: not finite
        self.fired = [0] * vectors.shape[0]
        self.steps_steered = 0
        self.rows: torch.Tensor | None = None  # (n,) batch rows to steer
        self.alpha: torch.Tensor | None = None  # (n,) float32

    # --- step boundary (host) -------------------------------------------------------------
    def plan(self, spans: Sequence[tuple[int, int, float]]) -> None:
        """Steer batch rows ``start .. start + count - 1`` by ``alpha`` for each ``(start, count, alpha)``."""
        if not spans:
            self.rows = self.alpha = None
            return
        rows = np.concatenate([np.arange(s, s + c, dtype=np.int64) for s, c, _ in spans])
        alpha = np.concatenate([np.full(c, a, dtype=np.float32) for _, c, a in spans])
        self.rows = torch.from_numpy(rows).to(self.device, non_blocking=True)
        self.alpha = torch.from_numpy(alpha).to(self.device, non_blocking=True)
        self.steps_steered += 1

    def clear(self) -> None:
        """Forget the step's rows (after the forward)."""
        self.rows = self.alpha = None

    # --- inside the forward (device work only) -------------------------------------------
    def on_layer(self, residual: torch.Tensor, slot: int) -> None:
        """Add ``alpha * v[slot]`` to the planned rows of ``residual`` in place."""
        self.fired[slot] += 1
        rows, alpha = self.rows, self.alpha
        if rows is None or alpha is None:
            return
        current = residual.index_select(0, rows)  # (n, H)
        steered = current + (alpha[:, None] * self.vectors[slot]).to(residual.dtype)  # (n, H)
        finite = torch.isfinite(steered).all(dim=1, keepdim=True)  # (n, 1)
        residual.index_copy_(0, rows, torch.where(finite, steered, current))
        self.refused += rows.numel() - finite.sum()

    @property
    def refused_rows(self) -> int:
        """Steered rows that kept their unsteered values because the sum was not finite (a host sync)."""
        return int(self.refused.item())


def install_steering(path: str, layers: Sequence[int], decoder_layers: Sequence[Any], model_spec: ModelSpec,
                     model_id: str, device: Any) -> SteerState:
    """Load the artefact, check it, and hook its layers (call before installing the capture hooks).

    Raises:
        ArtifactError: the artefact is missing, corrupt or for another model.
        AdapterError: its layers differ from the capture spec's ``steering_layers``.
    """
    global _STATE
    vector = SteeringVector.load(path)
    vector.check_model(model_spec, model_id)
    if tuple(vector.layers) != tuple(layers):
        raise AdapterError(f"steering layers {list(layers)} in the capture spec differ from the artefact's "
                           f"{list(vector.layers)} ({path!r} changed after the engine arguments were built); restart")
    state = SteerState(vector.vectors, device, vector.max_alpha)
    for slot, index in enumerate(vector.layers):
        decoder_layers[index].register_forward_hook(_make_hook(slot))
    _STATE = state
    return state


def _make_hook(slot: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        torch.ops.guard.steer_layer(output[1], slot)

    return hook
