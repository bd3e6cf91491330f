"""Graph-native capture: the hooks are only tensor ops on persistent buffers, so a compiled graph (torch.compile
with inductor, as vLLM's CPU build runs it; CUDA graphs replay the same ops) computes with each step's fresh plan.

First on toy layers (every batch layout under our control: mixed prefill and decode, reordered requests, requests
that do not opt in), then in the real engine's default compiled mode against Hugging Face."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch._inductor.utils import run_and_get_code

from adapters.vllm import capture, internals
from guard.capture_spec import CaptureSpec
from guard.errors import AdapterError
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.request_options import RequestOptions
from tests.engine.conftest import CHUNK_TOKENS, LAYERS, prompts_of_different_lengths, rel_err

H, MAX_ROWS, TOY_LAYERS = 16, 32, (0, 1)


class _Sink:
    def __init__(self) -> None:
        self.segments: list = []

    def publish(self, segments: list) -> None:
        self.segments.extend(segments)


class _Layer(torch.nn.Module):
    """A toy decoder layer returning ``(hidden, residual)`` like vLLM's Llama layers (their sum is the stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(H, H)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.lin(x)), x


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(_Layer() for _ in TOY_LAYERS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden, residual = layer(x)
            x = hidden + residual
        return x


def _runner(req_ids: list[str], lengths: list[int], computed: list[int], options: dict[str, dict]) -> SimpleNamespace:
    qsl = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    requests = {r: SimpleNamespace(sampling_params=SimpleNamespace(extra_args=options.get(r)), num_prompt_tokens=4)
                for r in req_ids}
    return SimpleNamespace(
        input_batch=SimpleNamespace(req_ids=req_ids, num_reqs=len(req_ids),
                                    num_computed_tokens_cpu=np.array(computed, np.int32)),
        query_start_loc=SimpleNamespace(np=qsl), requests=requests, max_num_tokens=MAX_ROWS,
        device=torch.device("cpu"), model_config=SimpleNamespace(get_hidden_size=lambda: H))


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(internals, "publishes_scores", lambda: True)
    spec = ModelSpec(model_type="llama", hidden_size=H, num_layers=len(TOY_LAYERS), fingerprint="f")
    probe = Probe.random(spec, TOY_LAYERS, labels=("a", "b", "c"), seed=3)
    sink = _Sink()
    runner = _runner([], [], [], {})
    state = capture.CaptureState(runner, CaptureSpec(layers=TOY_LAYERS, hidden=True), probe, sink)
    model = _Model()
    for slot, layer in enumerate(model.layers):
        layer.register_forward_hook(capture._make_hook(state, slot))
    return state, runner, sink, probe, model


def _opts(name: str, hidden: bool = False) -> RequestOptions:
    return RequestOptions(key=f"key-{name}", hidden=hidden)


def test_compiled_hooks_score_each_steps_guarded_rows_of_mixed_and_reordered_batches(toy):
    state, runner, sink, probe, model = toy
    opts = {"a": _opts("a", hidden=True), "b": _opts("b"), "c": _opts("c", hidden=True)}  # "u" does not opt in
    compiled = torch.compile(model, backend="inductor", fullgraph=True, dynamic=True)
    steps = [  # (request order, rows per request, computed tokens): prefill, then a mixed and a reordered batch
        (["a", "b", "u"], [5, 3, 4], [0, 0, 0]),
        (["u", "c", "a", "b"], [1, 6, 1, 1], [4, 0, 5, 3]),
        (["c", "b", "a"], [1, 1, 1], [6, 4, 6]),
    ]
    addresses = state.buffer_addresses()
    code = ""
    for i, (order, lengths, computed) in enumerate(steps):
        step = _runner(order, lengths, computed, {r: o.to_extra_args() for r, o in opts.items()})
        runner.__dict__.update(step.__dict__)
        x = torch.randn(sum(lengths), H)
        sink.segments.clear()
        state.before_forward()
        with torch.no_grad():
            if i == 0:  # compiled once, as vLLM does; later steps must not recompile (vLLM drops the guards)
                code = "\n".join(run_and_get_code(compiled, x)[1])
            else:
                with torch.compiler.set_stance("fail_on_recompile"):
                    compiled(x)
        state.after_forward()
        # the reference: the layers' residual streams, recomputed in eager torch
        rows, h = [], x
        with torch.no_grad():
            for layer in model.layers:  # without calling the hooked modules
                h = torch.tanh(layer.lin(h)) + h
                rows.append(h.numpy())
        stream = np.stack(rows, axis=1)  # (n, L, H)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        got = {seg.key: seg for seg in sink.segments}
        assert sorted(got) == sorted(opts[r].key for r in order if r in opts)
        for i, req in enumerate(order):
            if req not in opts:
                continue
            seg, ref = got[opts[req].key], stream[starts[i] : starts[i + 1]]
            assert seg.start == computed[i] and seg.scores.shape == (lengths[i], len(TOY_LAYERS), 3)
            np.testing.assert_allclose(seg.scores, probe.score(ref), rtol=1e-4, atol=1e-4)
            if req in "ac":
                np.testing.assert_allclose(seg.hidden, ref, rtol=1e-5, atol=1e-5)
            else:
                assert seg.hidden is None
    assert state.fired == [3, 3] and state.steps_guarded == 3
    # rows reach the buffers through the in-place op, not as a scatter over the whole buffer plus a copy back
    assert "guard.store_rows" in code and "scatter" not in code
    assert state.buffer_addresses() == addresses


def test_a_batch_larger_than_the_buffers_fails_loudly_before_the_forward(toy):
    state, runner, *_ = toy
    runner.__dict__.update(_runner(["a"], [MAX_ROWS + 1], [0], {"a": _opts("a").to_extra_args()}).__dict__)
    with pytest.raises(AdapterError, match=f"{MAX_ROWS + 1} token rows, more than the {MAX_ROWS}"):
        state.before_forward()


def test_compiled_steering_reads_each_steps_plan_not_the_one_it_was_traced_with():
    from adapters.vllm.steering import SteerState

    vectors = np.array([[1.0, -2.0, 0.5, 0.0]], np.float32)
    state = SteerState(vectors, torch.device("cpu"), 8, 4.0)

    def layer(r: torch.Tensor) -> torch.Tensor:
        return state.steered(r * 1.0, 0)

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    residual = torch.arange(32, dtype=torch.float32).reshape(8, 4) / 9
    for i, spans in enumerate(([(2, 3, 0.5)], [(7, 1, -2.0)], [])):
        state.plan(spans)
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):  # compiled once, as in vLLM
            got = compiled(residual).numpy()
        np.testing.assert_array_equal(got, layer(residual).numpy())
    assert state.fired == [6]


# --- the real engine, default (compiled) mode -------------------------------------------------------------------


def _params(max_tokens: int = 6):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)



def check_hooks_run_in_the_graph(engine) -> dict:
    """The self-test passes and the device call counters moved; returns the worker status."""
    engine.selftest()
    status = engine.worker_status()[0]
    assert status["compilation_mode"] != "NONE"
    assert all(f > 0 for f in status["fired"] + status["steer_fired"])  # counted on the device, by the graph
    return status


def check_capture_matches_hf_in_mixed_batches(engine, hf) -> None:
    """Mixed prefill (one prompt longer than a step's budget) and decode, reordered batches, opted-out requests:
    every guarded request's rows and scores equal Hugging Face and the numpy probe."""
    long_prompt = " ".join(f"Item {i} is a small fact about number {i}." for i in range(20))
    prompts = [long_prompt, *prompts_of_different_lengths(7)]
    # requests end at different steps, so the runner condenses and reorders its batch while others decode;
    # the long prompt is prefilled in chunks next to them
    params = [_params(2 + 3 * (i % 4)) for i in range(len(prompts))]
    flags = [True, True, False, True, False, True, True, False]
    results = engine.generate(prompts, params, guard=flags, hidden=True)
    assert len(results[0].prompt_token_ids) > CHUNK_TOKENS
    for res, guarded in zip(results, flags):
        if not guarded:
            assert res.scores is None
            continue
        fed = res.sequence[:-1]
        assert res.scores.positions.tolist() == list(range(len(fed)))
        ref = hf.hidden_states(fed, LAYERS)
        assert rel_err(res.scores.hidden, ref) < 1e-4
        expected = engine.probe.score(ref)
        np.testing.assert_allclose(res.scores.scores, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def check_buffers_keep_their_addresses(engine) -> None:
    """Different batch sizes, steering on some requests, no guarded request: the buffers never move."""
    before = engine.worker_status()[0]
    assert {"scores", "calls", "hidden", "steer_alpha"} <= set(before["buffers"])
    engine.generate(["One short prompt."], _params(3))
    prompts = prompts_of_different_lengths(12)
    engine.generate(prompts, _params(4), steer=[0.5 if i % 3 == 0 else None for i in range(12)])
    engine.generate(prompts[:5], _params(2), guard=False)
    after = engine.worker_status()[0]
    assert after["buffers"] == before["buffers"]
    assert after["steps_steered"] > before["steps_steered"]


def test_compiled_engine_traces_the_hooks_into_its_graph_and_its_selftest_passes(compiled_engine):
    check_hooks_run_in_the_graph(compiled_engine)


def test_compiled_capture_matches_hf_in_mixed_prefill_and_decode_and_reordered_batches(compiled_engine, hf):
    check_capture_matches_hf_in_mixed_batches(compiled_engine, hf)


def test_persistent_buffers_keep_their_addresses_while_batches_change(compiled_engine):
    check_buffers_keep_their_addresses(compiled_engine)


def test_a_step_without_guarded_requests_builds_no_plan_and_delivers_nothing(compiled_engine):
    before = compiled_engine.worker_status()[0]
    (res,) = compiled_engine.generate(["Hello there"], _params(4), guard=False)
    after = compiled_engine.worker_status()[0]
    assert res.scores is None and after["steps_guarded"] == before["steps_guarded"]
    assert all(a > b for a, b in zip(after["fired"], before["fired"]))  # the graph's ops still ran (bench: cost)
