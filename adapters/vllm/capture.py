"""The in-worker capture: hooks on decoder layers, the per-step plan, and score publication.

Per engine step (all on the worker's host thread):

1. ``before`` (wrapping the runner's forward): read the batch layout, decide which token rows
   belong to guarded requests, build a :class:`_Plan` (one small index tensor, moved to the device
   once). No guarded request -> no plan -> the hooks return at once.
2. During the forward, each hooked decoder layer calls the opaque custom op
   ``guard::capture_layer``; its body computes the residual stream ``hidden + residual`` of the
   planned rows and one ``addmm`` with the folded probe into a preallocated buffer (an MLP head:
   ``addmm`` into a hidden-unit buffer, in-place ``relu``, ``addmm`` into the scores). No host
   syncs, no logging, no per-token Python.
   Steered layers (see :mod:`adapters.vllm.steering`) first add ``alpha * v`` to the rows of
   requests that steer, so a layer both steered and captured is scored after the addition.
3. ``after``: copy the step's scores (and requested hidden rows) to the host once and publish
   them, keyed by guard key and token position.

Because the op is registered as side-effecting and the hooks are installed right after the model
is loaded (before torch.compile traces it), compiled and eager engines both run it. ``fired``
counts calls per layer so the start-up self-test can prove it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adapters.score_channel import open_sink
from adapters.vllm import internals
from adapters.vllm.steering import SteerState, install_steering
from guard import env
from guard.capture_spec import CaptureSpec, check_endpoint
from guard.errors import AdapterError, ConfigError
from guard.heads import check_gate, fused_head
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.request_options import RequestOptions, parse_request_options
from guard.scores import ScoreSegment, ScoreSink
from guard.steering import within_bound

__all__ = ["install", "worker_status", "CaptureState"]


@torch.library.custom_op("guard::capture_layer", mutates_args=())
def _capture_layer(hidden: torch.Tensor, residual: torch.Tensor, slot: int) -> None:
    """Opaque to torch.compile: hands one layer's output to the worker's capture state."""
    state = _STATE
    if state is not None:
        state.on_layer(hidden, residual, slot)


@_capture_layer.register_fake
def _capture_layer_fake(hidden: torch.Tensor, residual: torch.Tensor, slot: int) -> None:
    return None


# Keep the op in compiled graphs although nothing consumes its (empty) result.
torch.fx.node.has_side_effect(torch.ops.guard.capture_layer.default)

_STATE: CaptureState | None = None


@dataclass(frozen=True)
class _Plan:
    n_rows: int
    rows: torch.Tensor | None  # device row indices of guarded tokens, None = the first n_rows
    hidden_sel: torch.Tensor | None  # indices into the n_rows compact rows whose hidden rows are kept
    n_hidden: int
    segments: tuple[tuple[str, int, int, int, int], ...]  # key, position, row, count, hidden row (-1: none)


class CaptureState:
    """Worker-resident capture: device copies of the probe, buffers, and the current step's plan."""

    def __init__(self, runner: Any, spec: CaptureSpec, probe: Probe | None, sink: ScoreSink,
                 gate: Probe | None = None, steer: SteerState | None = None) -> None:
        self.runner = runner
        self.steer = steer
        self.spec = spec
        self.sink = sink
        self.publish = internals.publishes_scores()
        self.device = internals.runner_device(runner)
        self.fired = [0] * len(spec.layers)
        self.steps_guarded = 0
        self.bad_options = 0
        self.plan: _Plan | None = None
        self._options: dict[str, RequestOptions | None] = {}
        max_rows = internals.max_num_tokens(runner)
        n_layers = len(spec.layers)
        hidden_size = int(runner.model_config.get_hidden_size())
        # The head is decided here, once: an MLP head's (w1, b1, w, b, act buffer), a linear head's (w, b), or
        # neither (capture only); on_layer checks which one exists.
        w1, b1, w, b = self._device_weights(probe, gate)
        self.k = 0 if w is None else w.shape[2]
        self.mlp: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.linear: tuple[torch.Tensor, torch.Tensor] | None = None
        if w1 is not None and b1 is not None and w is not None and b is not None:
            act = torch.zeros((n_layers, max_rows, w1.shape[2]), dtype=torch.float32, device=self.device)
            self.mlp = (w1, b1, w, b, act)
        elif w is not None and b is not None:
            self.linear = (w, b)
        self.scores = torch.zeros((n_layers, max_rows, self.k), dtype=torch.float32, device=self.device)
        self.hidden = (
            torch.zeros((n_layers, max_rows, hidden_size), dtype=torch.float32, device=self.device)
            if spec.hidden
            else None
        )

    def _device_weights(self, probe: Probe | None, gate: Probe | None) -> tuple[torch.Tensor | None, ...]:
        """Folded probe weights on the device: ``(w1, b1, w, b)``; ``w1``/``b1`` are ``None`` for a linear head.

        The probe's shift head and a gate ride along in the same matmuls (see guard.heads).
        """
        if probe is None:
            return None, None, None, None
        arrays = fused_head(probe, gate)  # (L, H, m) | None, (L, m) | None, (L, m | H, columns), (L, columns)
        return tuple(None if a is None else torch.from_numpy(a).to(self.device) for a in arrays)

    # --- step boundary (host) -------------------------------------------------------------
    def _request_options(self, req_id: str) -> RequestOptions | None:
        if req_id not in self._options:
            try:
                opts = parse_request_options(internals.request_extra_args(self.runner, req_id))
            except ConfigError:
                self.bad_options += 1  # validated at the edge; never crash the engine here
                opts = None
            if opts is not None and opts.hidden and self.hidden is None:
                opts = opts.model_copy(update={"hidden": False})
                self.bad_options += 1
            if opts is not None and opts.steer is not None:
                opts = self._resolve_steering(req_id, opts, opts.steer)
            self._options[req_id] = opts
        return self._options[req_id]

    def _resolve_steering(self, req_id: str, opts: RequestOptions, strength: float) -> RequestOptions:
        """Drop steering on an engine without a steering vector or with a strength (``opts.steer``) beyond its
        ``max_alpha``; resolve ``steer_from`` against the prompt length (default: the prompt length; negative:
        counted back)."""
        if self.steer is None or not within_bound(strength, self.steer.max_alpha):  # validated at the edges
            self.bad_options += 1
            return opts.model_copy(update={"steer": None, "steer_from": None})
        if opts.steer_from is None or opts.steer_from < 0:
            n_prompt = internals.request_prompt_len(self.runner, req_id)
            return opts.model_copy(update={"steer_from": max(0, n_prompt + (opts.steer_from or 0))})
        return opts

    def before_forward(self) -> None:
        """Plan this step's capture from the runner's batch layout."""
        req_ids, qsl, computed = internals.step_layout(self.runner)
        if len(self._options) > 4 * len(req_ids) + 256:
            live = internals.live_request_ids(self.runner)
            self._options = {r: o for r, o in self._options.items() if r in live}
        segments, spans, hidden_spans, steer_spans = [], [], [], []
        row = hrow = 0
        for i, req_id in enumerate(req_ids):
            opts = self._request_options(req_id)
            if opts is None:
                continue
            start, count = int(qsl[i]), int(qsl[i + 1] - qsl[i])
            if count <= 0:
                continue
            # steer_from is resolved (never None) for every request that steers; see _resolve_steering
            if (opts.steer is not None and opts.steer_from is not None
                    and (skip := max(opts.steer_from - int(computed[i]), 0)) < count):
                steer_spans.append((start + skip, count - skip, opts.steer))
            segments.append((opts.key, int(computed[i]), row, count, hrow if opts.hidden else -1))
            spans.append((start, count))
            if opts.hidden:
                hidden_spans.append((row, count))
                hrow += count
            row += count
        if self.steer is not None:
            self.steer.plan(steer_spans)
        if not segments:
            self.plan = None
            return
        contiguous = len(spans) == len(req_ids) and spans[0][0] == 0
        rows = None if contiguous else self._index([np.arange(s, s + c) for s, c in spans])
        all_hidden = hrow == row
        hidden_sel = None if all_hidden or hrow == 0 else self._index([np.arange(s, s + c) for s, c in hidden_spans])
        self.plan = _Plan(row, rows, hidden_sel, hrow, tuple(segments))
        self.steps_guarded += 1

    def _index(self, parts: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts)).to(self.device, non_blocking=True)

    # --- inside the forward (device work only) -------------------------------------------
    def on_layer(self, hidden: torch.Tensor, residual: torch.Tensor, slot: int) -> None:
        """Capture one layer's residual stream for the planned rows."""
        self.fired[slot] += 1
        plan = self.plan
        if plan is None:
            return
        n = plan.n_rows
        if plan.rows is None:
            x = hidden[:n] + residual[:n]  # (n, H)
        else:
            x = hidden.index_select(0, plan.rows) + residual.index_select(0, plan.rows)
        x = x.float()
        if self.mlp is not None:
            w1, b1, w, b, act_buffer = self.mlp
            act = act_buffer[slot, :n]  # (n, m)
            torch.addmm(b1[slot], x, w1[slot], out=act)
            act.relu_()
            torch.addmm(b[slot], act, w[slot], out=self.scores[slot, :n])
        elif self.linear is not None:
            w, b = self.linear
            torch.addmm(b[slot], x, w[slot], out=self.scores[slot, :n])
        # plan.n_hidden > 0 only with a hidden buffer (requests asking for rows without one are refused)
        if plan.n_hidden and self.hidden is not None:
            if plan.hidden_sel is None:
                self.hidden[slot, :n].copy_(x)
            else:
                torch.index_select(x, 0, plan.hidden_sel, out=self.hidden[slot, : plan.n_hidden])

    # --- after the forward (host) ---------------------------------------------------------
    def after_forward(self) -> None:
        """Move the step's scores to the host once and publish them."""
        plan, self.plan = self.plan, None
        if self.steer is not None:
            self.steer.clear()
        if plan is None or not self.publish:
            return
        scores = self.scores[:, : plan.n_rows].transpose(0, 1).contiguous().cpu().numpy()  # (n, L, k)
        hidden = None
        if plan.n_hidden and self.hidden is not None:
            hidden = self.hidden[:, : plan.n_hidden].transpose(0, 1).contiguous().cpu().numpy()  # (nh, L, H)
        out = [
            ScoreSegment(key, pos, scores[row : row + count],
                         None if hrow < 0 or hidden is None else hidden[hrow : hrow + count])
            for key, pos, row, count, hrow in plan.segments
        ]
        self.sink.publish(out)


def install(runner: Any, spec: CaptureSpec) -> CaptureState:
    """Install hooks and the per-step plan on a freshly loaded runner (before compilation).

    Raises:
        AdapterError: the runner or model is unsupported, or a layer is out of range.
        ArtifactError: the probe does not fit the model.
    """
    global _STATE
    internals.check_version()
    internals.check_runner(runner)
    model_id = str(runner.model_config.model)
    model_spec = ModelSpec.from_config(runner.model_config.hf_config.to_dict())
    probe = None
    if spec.probe is not None:
        probe = Probe.load(spec.probe)
        probe.check_model(model_spec, model_id)
        if probe.layers != spec.layers:
            raise AdapterError(f"capture layers {list(spec.layers)} differ from the probe's {list(probe.layers)}")
    layers = internals.decoder_layers(runner.model)
    bad = [i for i in spec.layers if i >= len(layers)]
    if bad:
        raise AdapterError(f"capture layers {bad} are outside 0..{len(layers) - 1} of model {model_id!r}")
    endpoint = check_endpoint(env.read("GUARD_SCORE_ENDPOINT"))
    gate = None
    if spec.gate is not None:
        if probe is None:
            raise AdapterError("a pre-generation gate needs the answer probe it was calibrated with; set both")
        gate = Probe.load(spec.gate)
        gate.check_model(model_spec, model_id)
        check_gate(probe, gate)
    steer = None
    if spec.steering is not None:
        # registered first: at a layer both steered and captured, the capture reads the steered stream
        steer = install_steering(spec.steering, spec.steering_layers, layers, model_spec, model_id,
                                 internals.runner_device(runner))
    state = CaptureState(runner, spec, probe, open_sink(endpoint), gate, steer)
    for slot, index in enumerate(spec.layers):
        layers[index].register_forward_hook(_make_hook(slot))
    internals.wrap_model_forward(runner, state.before_forward, state.after_forward)
    runner._guard_capture = state
    _STATE = state
    return state


def _make_hook(slot: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        torch.ops.guard.capture_layer(output[0], output[1], slot)

    return hook


def worker_status(worker: Any) -> dict[str, Any]:
    """``collective_rpc`` target: what the capture in this worker has done so far."""
    runner = internals.runner_of_worker(worker)
    state: CaptureState | None = getattr(runner, "_guard_capture", None)
    if state is None:
        return {"installed": False}
    return {
        "installed": True,
        "layers": list(state.spec.layers),
        "fired": list(state.fired),
        "steps_guarded": state.steps_guarded,
        "bad_options": state.bad_options,
        "dropped_batches": getattr(state.sink, "dropped_batches", 0),
        "compilation_mode": internals.compilation_mode(runner),
        "publishes": state.publish,
        "steering_layers": list(state.spec.steering_layers),
        "steer_fired": [] if state.steer is None else list(state.steer.fired),
        "steps_steered": 0 if state.steer is None else state.steer.steps_steered,
        "steer_refused_rows": 0 if state.steer is None else state.steer.refused_rows,
    }
