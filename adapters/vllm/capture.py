"""The in-worker capture: hooks on decoder layers, the per-step plan, and score publication.

Graph-native: inside the forward there are only plain tensor ops on buffers allocated once at
start-up (fixed addresses, ``max_num_batched_tokens`` rows), so torch.compile traces the hooks into
the model's graph, inductor fuses them, and a CUDA-graph replay computes with the step's fresh values
instead of those seen at capture time. No Python runs per layer in a compiled engine.

Per engine step:

1. ``before`` (host, wrapping the runner's forward): read the batch layout and decide which token rows
   belong to guarded requests (kept on the host for step 3); write the rows that steer, with their
   strengths, in place into the steering buffer (see :mod:`adapters.vllm.steering`).
2. During the forward, each hooked decoder layer scores **every** row of the batch with the folded probe
   (``hidden + residual``, one ``addmm``; an MLP head adds a ``relu`` and a second ``addmm``) into the
   persistent score buffer, and counts its call on the device. The cost does not depend on who opted in:
   ``H * k`` multiply-adds per token per layer (an MLP head: ``H * m + m * k``, ~42k for the shipped one),
   three orders of magnitude below a 135M model's forward (measured: ``guard bench latency``).
   Steered layers first replace the residual of the rows that steer, so a layer both steered and captured
   is scored after the addition.
3. ``after`` (host): gather the guarded rows of the score buffer (and requested hidden rows), copy them to
   the host (one copy each) and publish them, keyed by guard key and token position.

The hooks are installed right after the model is loaded, before torch.compile traces it;
``HOOKS_VERSION`` in the capture spec versions vLLM's compile cache. The device call counters let the
start-up self-test prove the hooks ran in the engine's real mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
from guard.probe_manifest import dtype_warning
from guard.request_options import RequestOptions, parse_request_options
from guard.scores import ScoreSegment, ScoreSink
from guard.steering import within_bound

__all__ = ["install", "worker_status", "CaptureState"]


def _store_rows(buffer: torch.Tensor, slot: int, rows: torch.Tensor) -> None:
    """``buffer[slot, :n] = rows`` in place (``n`` rows): one copy kernel between two fixed addresses.

    An op of its own because a plain ``buffer[slot, :n].copy_(rows)`` on a graph input is functionalized by
    torch.compile into a scatter over the *whole* buffer plus a copy back (``max_num_batched_tokens`` rows per
    layer, every step); declared as mutating ``buffer``, it stays one in-place copy of ``n`` rows. It reads no
    Python state, so a CUDA-graph replay repeats exactly the copy it captured. Registered through
    ``torch.library.Library`` directly: ``torch.library.custom_op``'s Python wrappers cost ~3x more per call.
    """
    buffer[slot, : rows.shape[0]].copy_(rows)


def _store_rows_fake(buffer: torch.Tensor, slot: int, rows: torch.Tensor) -> None:
    return None


_LIBRARY = torch.library.Library("guard", "FRAGMENT")  # type: ignore[no-untyped-call]
_LIBRARY.define("store_rows(Tensor(a!) buffer, int slot, Tensor rows) -> ()")  # type: ignore[no-untyped-call]
_LIBRARY.impl("store_rows", _store_rows, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
torch.library.register_fake("guard::store_rows", _store_rows_fake, lib=_LIBRARY)


@dataclass(frozen=True)
class _Plan:
    n_rows: int
    rows: torch.Tensor | None  # batch rows of guarded tokens, in segment order; None = rows 0 .. n_rows - 1
    hidden_rows: torch.Tensor | None  # batch rows whose hidden rows are delivered; None = rows 0 .. n_hidden - 1
    n_hidden: int
    segments: tuple[tuple[str, int, int, int, int], ...]  # key, position, row, count, hidden row (-1: none)


class CaptureState:
    """Worker-resident capture: device copies of the probe, the persistent buffers, and the step's plan."""

    def __init__(self, runner: Any, spec: CaptureSpec, probe: Probe | None, sink: ScoreSink,
                 gate: Probe | None = None, steer: SteerState | None = None) -> None:
        self.runner = runner
        self.steer = steer
        self.spec = spec
        self.sink = sink
        self.publish = internals.publishes_scores()
        self.device = internals.runner_device(runner)
        self.steps_guarded = 0
        self.bad_options = 0
        self.plan: _Plan | None = None
        self._options: dict[str, RequestOptions | None] = {}
        self.max_rows = internals.max_num_tokens(runner)
        n_layers = len(spec.layers)
        hidden_size = int(runner.model_config.get_hidden_size())
        self.weights = self._device_weights(probe, gate)  # (w1, b1, w, b); w1, b1 None for a linear head
        w = self.weights[2]
        self.k = 0 if w is None else w.shape[2]
        # Persistent buffers: allocated once, written in place by every forward (fixed addresses).
        self.scores = torch.zeros((n_layers, self.max_rows, self.k), dtype=torch.float32, device=self.device)
        self.hidden = (torch.zeros((n_layers, self.max_rows, hidden_size), dtype=torch.float32, device=self.device)
                       if spec.hidden else None)
        self.calls = torch.zeros(n_layers, dtype=torch.int64, device=self.device)  # forwards per hooked layer
        # calls[slot] += 1 as a whole-tensor add: an indexed write on a graph input compiles to a scatter
        self._unit = torch.eye(n_layers, dtype=torch.int64, device=self.device)
        # The head is decided here, once; the hook calls the one that exists.
        self.head: Callable[[torch.Tensor, int], torch.Tensor] | None = (
            None if w is None else self._mlp_scores if self.weights[0] is not None else self._linear_scores)

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
        """Plan this step's capture from the runner's batch layout; write the step's steering in place.

        Raises:
            AdapterError: the batch holds more rows than the persistent buffers (never in a vLLM engine:
                they are sized by its ``max_num_batched_tokens``).
        """
        req_ids, qsl, computed = internals.step_layout(self.runner)
        total = int(qsl[len(req_ids)])
        if total > self.max_rows:
            raise AdapterError(f"this step's batch has {total} token rows, more than the {self.max_rows} the capture "
                               "buffers hold (the engine's max_num_batched_tokens when it started); restart the "
                               "engine with the larger value")
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
                hidden_spans.append((start, count))
                hrow += count
            row += count
        if self.steer is not None:
            self.steer.plan(steer_spans)
        if not segments:
            self.plan = None
            return
        contiguous = len(spans) == len(req_ids) and spans[0][0] == 0
        rows = None if contiguous else self._index(spans)
        hidden_rows = rows if hrow == row else self._index(hidden_spans) if hrow else None
        self.plan = _Plan(row, rows, hidden_rows, hrow, tuple(segments))
        self.steps_guarded += 1

    def _index(self, spans: list[tuple[int, int]]) -> torch.Tensor:
        rows = np.concatenate([np.arange(s, s + c, dtype=np.int64) for s, c in spans])
        return torch.from_numpy(rows).to(self.device, non_blocking=True)

    # --- inside the forward (device ops only; traced, compiled and graph-captured) -------------
    def on_layer(self, hidden: torch.Tensor, residual: torch.Tensor, slot: int) -> None:
        """Score every row of one layer's residual stream into the persistent buffers."""
        x = (hidden + residual).float()  # (n, H)
        if self.head is not None:
            torch.ops.guard.store_rows(self.scores, slot, self.head(x, slot))
        if self.hidden is not None:
            torch.ops.guard.store_rows(self.hidden, slot, x)
        self.calls.add_(self._unit[slot])

    def _linear_scores(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        _, _, w, b = self.weights
        assert w is not None and b is not None
        return torch.addmm(b[slot], x, w[slot])

    def _mlp_scores(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        w1, b1, w, b = self.weights
        assert w1 is not None and b1 is not None and w is not None and b is not None
        return torch.addmm(b[slot], torch.relu(torch.addmm(b1[slot], x, w1[slot])), w[slot])

    # --- after the forward (host) ---------------------------------------------------------
    def after_forward(self) -> None:
        """Gather the guarded rows, move them to the host once and publish them."""
        plan, self.plan = self.plan, None
        if plan is None or not self.publish:
            return
        scores = self._rows(self.scores, plan.rows, plan.n_rows)  # (n, L, k)
        hidden = None
        if plan.n_hidden and self.hidden is not None:
            hidden = self._rows(self.hidden, plan.hidden_rows, plan.n_hidden)  # (nh, L, H)
        out = [
            ScoreSegment(key, pos, scores[row : row + count],
                         None if hrow < 0 or hidden is None else hidden[hrow : hrow + count])
            for key, pos, row, count, hrow in plan.segments
        ]
        self.sink.publish(out)

    @staticmethod
    def _rows(buffer: torch.Tensor, rows: torch.Tensor | None, n: int) -> np.ndarray:
        """``buffer[:, rows]`` (or its first ``n`` rows) on the host, as ``(n, L, ...)``."""
        picked = buffer[:, :n] if rows is None else buffer.index_select(1, rows)
        return picked.transpose(0, 1).contiguous().cpu().numpy()

    @property
    def fired(self) -> list[int]:
        """Forwards each hooked layer ran so far (a host sync)."""
        return [int(c) for c in self.calls.tolist()]

    def buffer_addresses(self) -> dict[str, int]:
        """Device addresses of the persistent buffers (constant for the engine's life: CUDA graphs rely on it)."""
        found = {"scores": self.scores.data_ptr(), "calls": self.calls.data_ptr()}
        if self.hidden is not None:
            found["hidden"] = self.hidden.data_ptr()
        return found | ({} if self.steer is None else self.steer.buffer_addresses())


def install(runner: Any, spec: CaptureSpec) -> CaptureState:
    """Install hooks and the per-step plan on a freshly loaded runner (before compilation).

    Raises:
        AdapterError: the runner or model is unsupported, or a layer is out of range.
        ArtifactError: the probe does not fit the model.
    """
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
        if probe.manifest.dtype != (dtype := internals.engine_dtype(runner)):
            logging.getLogger("guard").warning(dtype_warning(spec.probe, probe.manifest.dtype, dtype))
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
                                 internals.runner_device(runner), internals.max_num_tokens(runner))
    state = CaptureState(runner, spec, probe, open_sink(endpoint), gate, steer)
    for slot, index in enumerate(spec.layers):
        layers[index].register_forward_hook(_make_hook(state, slot))
    internals.wrap_model_forward(runner, state.before_forward, state.after_forward)
    runner._guard_capture = state
    return state


def _make_hook(state: CaptureState, slot: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        state.on_layer(output[0], output[1], slot)

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
        "fired": state.fired,
        "steps_guarded": state.steps_guarded,
        "bad_options": state.bad_options,
        "dropped_batches": getattr(state.sink, "dropped_batches", 0),
        "compilation_mode": internals.compilation_mode(runner),
        "dtype": internals.engine_dtype(runner),
        "cudagraph_mode": internals.cudagraph_mode(runner),
        "publishes": state.publish,
        "buffers": state.buffer_addresses(),
        "steering_layers": list(state.spec.steering_layers),
        "steer_fired": [] if state.steer is None else state.steer.fired,
        "steps_steered": 0 if state.steer is None else state.steer.steps_steered,
        "steer_refused_rows": 0 if state.steer is None else state.steer.refused_rows,
    }
