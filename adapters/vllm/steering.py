"""In-worker steering: add ``alpha * v`` to the residual stream of the rows of requests that steer.

Graph-native: everything inside the forward is plain tensor ops on buffers allocated once at
start-up, so torch.compile traces it, inductor fuses it and a CUDA-graph replay reads fresh values.

Per engine step, the capture's ``before`` hands :meth:`SteerState.plan` the batch rows to steer
(each steering request's rows at positions ``>= steer_from``) and their ``alpha``; they are written
*in place* into the persistent per-row strength buffer ``alpha`` (``max_num_batched_tokens`` rows,
zero for every row that does not steer). During the forward, each steered decoder layer's hook
returns ``(hidden, residual')`` with ``residual' = where(steers, residual + alpha * v[slot], residual)``:
vLLM's Llama-style layers return ``(hidden, residual)`` whose sum is the residual stream the next
layer's fused norm reads, so this steers exactly the planned rows, and every other row (strength 0)
is the very same value, bit for bit.

No non-finite value enters the residual stream through steering: a steered row whose sum is not
finite keeps its unsteered values and is counted in ``refused_rows`` (a device counter). The KV cache
is written from the residual stream, and vLLM reuses freed cache blocks for later requests, whose
attention reads the stale slots of a block under a zero weight: ``0 * inf`` is NaN, so one request's
overflow would otherwise reach every request after it. Strengths beyond the vector's
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


class SteerState:
    """Worker-resident steering: the device copy of the vectors and the persistent per-row strengths.

    Args:
        vectors: the artefact's ``(L, H)`` directions.
        device: where the model runs.
        max_rows: most token rows one forward holds (``max_num_batched_tokens``).
        max_alpha: the artefact's largest allowed strength.
    """

    def __init__(self, vectors: np.ndarray, device: Any, max_rows: int, max_alpha: float = float("inf")) -> None:
        self.vectors = torch.from_numpy(vectors).to(device)  # (L, H) float32
        self.device = device
        self.max_alpha = max_alpha
        self.max_rows = max_rows
        #: per-row strength of the current step (0: the row does not steer); fixed address for CUDA graphs
        self.alpha = torch.zeros(max_rows, dtype=torch.float32, device=device)
        self._pinned = torch.device(device).type == "cuda"
        self._written = 0  # rows [0, _written) of ``alpha`` may be non-zero
        self.refused = torch.zeros((), dtype=torch.int64, device=device)  # steered rows kept unsteered
        self.calls = torch.zeros(vectors.shape[0], dtype=torch.int64, device=device)  # forwards per layer
        # calls[slot] += 1 as a whole-tensor add: an indexed write on a graph input compiles to a scatter
        self._unit = torch.eye(vectors.shape[0], dtype=torch.int64, device=device)
        self.steps_steered = 0

    # --- step boundary (host) -------------------------------------------------------------
    def plan(self, spans: Sequence[tuple[int, int, float]]) -> None:
        """Steer batch rows ``start .. start + count - 1`` by ``alpha`` for each ``(start, count, alpha)``.

        Written in place into :attr:`alpha`: one host-to-device copy on a step that steers or follows one that
        did, none otherwise. The host side is a fresh (pinned, on CUDA) tensor each time, so a copy still in
        flight never sees its source rewritten (the caching host allocator reuses it only after the copy).

        Raises:
            AdapterError: a span reaches past the buffer (a batch larger than ``max_num_batched_tokens``).
        """
        end = max((s + c for s, c, _ in spans), default=0)
        if end > self.max_rows:
            raise AdapterError(f"a steering span ends at batch row {end}, past the {self.max_rows} rows the "
                               "steering buffers hold (max_num_batched_tokens); raise it or send smaller batches")
        if not spans and self._written == 0:
            return
        upto = max(end, self._written)
        staged = torch.zeros(upto, dtype=torch.float32, pin_memory=self._pinned)
        host = staged.numpy()
        for start, count, alpha in spans:
            host[start : start + count] = alpha
        self.alpha[:upto].copy_(staged, non_blocking=True)
        self._written = end
        if spans:
            self.steps_steered += 1

    # --- inside the forward (device ops only; traced, compiled and graph-captured) -------------
    def steered(self, residual: torch.Tensor, slot: int) -> torch.Tensor:
        """``residual`` with this step's steering at layer ``slot`` added to its steering rows."""
        alpha = self.alpha[: residual.shape[0], None]  # (n, 1)
        steers = alpha != 0
        moved = residual + (alpha * self.vectors[slot]).to(residual.dtype)  # (n, H)
        ok = torch.isfinite(moved).all(dim=1, keepdim=True)  # (n, 1)
        self.refused.add_((steers & ~ok).sum())
        self.calls.add_(self._unit[slot])
        return torch.where(steers & ok, moved, residual)

    @property
    def fired(self) -> list[int]:
        """Forwards each steered layer ran so far (a host sync)."""
        return [int(c) for c in self.calls.tolist()]

    @property
    def refused_rows(self) -> int:
        """Steered rows that kept their unsteered values because the sum was not finite (a host sync)."""
        return int(self.refused.item())

    def buffer_addresses(self) -> dict[str, int]:
        """Device addresses of the persistent buffers (constant for the engine's life)."""
        return {"steer_alpha": self.alpha.data_ptr(), "steer_refused": self.refused.data_ptr(),
                "steer_calls": self.calls.data_ptr(), "steer_vectors": self.vectors.data_ptr()}


def install_steering(path: str, layers: Sequence[int], decoder_layers: Sequence[Any], model_spec: ModelSpec,
                     model_id: str, device: Any, max_rows: int) -> SteerState:
    """Load the artefact, check it, and hook its layers (call before installing the capture hooks).

    Raises:
        ArtifactError: the artefact is missing, corrupt or for another model.
        AdapterError: its layers differ from the capture spec's ``steering_layers``.
    """
    vector = SteeringVector.load(path)
    vector.check_model(model_spec, model_id)
    if tuple(vector.layers) != tuple(layers):
        raise AdapterError(f"steering layers {list(layers)} in the capture spec differ from the artefact's "
                           f"{list(vector.layers)} ({path!r} changed after the engine arguments were built); restart")
    state = SteerState(vector.vectors, device, max_rows, vector.max_alpha)
    for slot, index in enumerate(vector.layers):
        decoder_layers[index].register_forward_hook(_make_hook(state, slot))
    return state


def _make_hook(state: SteerState, slot: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        return (output[0], state.steered(output[1], slot), *output[2:])

    return hook
