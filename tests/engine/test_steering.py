"""Steering inside the real vLLM engine: only the rows of requests that steer change, exactly as in HF."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.engine.conftest import CHUNK_TOKENS, LAYERS, STEER_LAYERS, prompts_of_different_lengths

ALPHA = 0.5


def _params(max_tokens: int = 8, logprobs: int | None = None):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=logprobs)


@pytest.fixture(scope="module")
def steer_engine(probe_path: str, steering_path: str) -> Iterator:
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    # In-process engine core: every request of a generate() call is queued before the first step, so two calls
    # with the same prompts get the same batch layouts (a separate core process starts stepping as requests
    # trickle in) and bit-for-bit comparisons between calls are meaningful.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("GUARD_SCORE_ENDPOINT", "inproc://steering-test")  # engine_arguments also sets it; undone on exit
        cfg = GuardConfig.build(probe=probe_path, steering=steering_path, capture_hidden=True, enforce_eager=True,
                                max_model_len=1024)
        llm = GuardedLLM(cfg, max_num_batched_tokens=CHUNK_TOKENS)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def baseline(steer_engine) -> list:
    """Six requests in one batch, none steering."""
    return steer_engine.generate(prompts_of_different_lengths(6), _params(), hidden=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _assert_bit_identical(a, b) -> None:
    assert a.token_ids == b.token_ids
    assert np.array_equal(a.scores.positions, b.scores.positions)
    assert np.array_equal(a.scores.scores, b.scores.scores)
    assert np.array_equal(a.scores.hidden, b.scores.hidden)


def test_steered_rows_change_while_other_requests_in_the_batch_stay_bit_identical(steer_engine, baseline):
    alphas = [None, ALPHA, None, ALPHA, None, None]
    mixed = steer_engine.generate(prompts_of_different_lengths(6), _params(), hidden=True, steer=alphas)
    for base, res, alpha in zip(baseline, mixed, alphas):
        if alpha is None:
            _assert_bit_identical(res, base)
            continue
        n_prompt = len(res.prompt_token_ids)
        # rows before steer_from (the prompt) are untouched; from the first generated token on, layer 14 moves
        assert np.array_equal(res.scores.hidden[:n_prompt], base.scores.hidden[:n_prompt])
        moved = np.linalg.norm(res.scores.hidden[n_prompt:, 1] - base.scores.hidden[n_prompt:, 1], axis=-1)
        assert moved.min() > 1e-3
        # layer 3 precedes every steered layer: it changes only through the changed tokens fed back. The first
        # generated token comes from the last prompt row, before steer_from, so it is the unsteered one
        assert res.token_ids[0] == base.token_ids[0]
        assert np.array_equal(res.scores.hidden[n_prompt, 0], base.scores.hidden[n_prompt, 0])


def test_alpha_zero_is_bit_identical_to_no_steering(steer_engine, baseline):
    zero = steer_engine.generate(prompts_of_different_lengths(6), _params(), hidden=True, steer=0.0, steer_from=0)
    for base, res in zip(baseline, zero):
        _assert_bit_identical(res, base)


def _assert_steering_matches_hf(engine, hf, steer_from: int | None) -> None:
    from guard.steering import SteeringVector

    vector = SteeringVector.load(engine.spec.steering)
    prompt = "The capital of France is"
    (res,) = engine.generate([prompt], _params(8, logprobs=1), hidden=True, steer=ALPHA, steer_from=steer_from)
    n_prompt, fed = len(res.prompt_token_ids), res.sequence[:-1]
    start = n_prompt if steer_from is None else steer_from if steer_from >= 0 else n_prompt + steer_from
    logits, hidden = hf.steered_forward(fed, vector.vectors, vector.layers, ALPHA, start, LAYERS)
    steps = _log_softmax(logits[n_prompt - 1 :])  # (generated, vocab): the state at position t - 1 produces token t
    chosen = steps[np.arange(len(res.token_ids)), res.token_ids]
    np.testing.assert_allclose(res.token_logprobs, chosen, atol=2e-3)
    assert np.all(steps.max(-1) - chosen < 2e-3)  # vLLM's greedy token is HF's argmax (up to ties)
    err = np.linalg.norm(res.scores.hidden - hidden, axis=-1) / np.linalg.norm(hidden, axis=-1)
    assert err.max() < 1e-4  # the captured layer-14 rows are read after the steering addition
    (plain,) = engine.generate([prompt], _params(8, logprobs=1), hidden=True)
    shift = np.abs(np.array(plain.token_logprobs) - np.array(res.token_logprobs)).max()
    assert plain.token_ids != res.token_ids or shift > 1e-2  # the steering really changed the continuation


@pytest.mark.parametrize("steer_from", [None, 3, -1])  # -1: from the last prompt row (counted back from its length)
def test_vllm_steering_matches_the_hf_reference_logprobs_and_hidden_states(steer_engine, hf, steer_from):
    _assert_steering_matches_hf(steer_engine, hf, steer_from)


def test_steering_hooks_fire_and_count_steered_steps(steer_engine):
    before = steer_engine.worker_status()[0]
    steer_engine.generate(["Hello there"], _params(3), steer=ALPHA)
    after = steer_engine.worker_status()[0]
    assert after["steering_layers"] == list(STEER_LAYERS)
    assert all(a > b for a, b in zip(after["steer_fired"], before["steer_fired"]))
    assert after["steps_steered"] >= before["steps_steered"] + 2  # the last sampled token is never fed back
    assert after["bad_options"] == before["bad_options"]


def test_steering_matches_numpy_reference_and_leaves_other_rows_untouched_eager_and_inductor_compiled():
    import torch

    from adapters.vllm import steering as steer_mod
    from guard.model_spec import ModelSpec
    from guard.steering import SteeringVector

    rng = np.random.default_rng(5)
    spec = ModelSpec(model_type="llama", hidden_size=16, num_layers=4, fingerprint="f")
    vector = SteeringVector.from_vectors(rng.standard_normal((2, 16)).astype(np.float32), (1, 2), spec, kind="t")
    state = steer_mod.SteerState(vector.vectors, torch.device("cpu"), max_rows=16)
    residual = rng.standard_normal((10, 16)).astype(np.float32)  # (tokens, hidden)
    state.plan([(2, 3, 0.5), (7, 1, -2.0)])

    def layer(r: torch.Tensor) -> torch.Tensor:
        return state.steered(r * 1.0, 1)

    eager = layer(torch.from_numpy(residual.copy())).numpy()
    compiled = torch.compile(layer, backend="inductor", fullgraph=True)(torch.from_numpy(residual.copy())).numpy()
    expected = residual.copy()
    expected[2:5] = vector.apply(residual[2:5, None].repeat(2, 1), 0.5)[:, 1]
    expected[7] = vector.apply(residual[7:8, None].repeat(2, 1), -2.0)[0, 1]
    np.testing.assert_allclose(eager, expected, rtol=1e-6)
    np.testing.assert_allclose(compiled, expected, rtol=1e-6)  # inductor may fuse the multiply-add
    untouched = [0, 1, 5, 6, 8, 9]
    assert np.array_equal(eager[untouched], residual[untouched])
    assert np.array_equal(compiled[untouched], residual[untouched])


def test_steering_works_in_the_engines_default_compiled_mode(compiled_engine, hf):
    llm = compiled_engine
    assert llm.worker_status()[0]["compilation_mode"] != "NONE"
    _assert_steering_matches_hf(llm, hf, None)
    prompts, alphas = prompts_of_different_lengths(4), [None, ALPHA, None, 0.0]
    plain = llm.generate(prompts, _params(), hidden=True)
    mixed = llm.generate(prompts, _params(), hidden=True, steer=alphas)
    unmoved = [i for i, alpha in enumerate(alphas) if alpha != ALPHA]  # no steering, or strength 0
    (steered,) = [i for i, alpha in enumerate(alphas) if alpha == ALPHA]
    for i in unmoved:
        # the engine core runs in its own process here, so batch layouts (hence float rounding) may differ
        assert mixed[i].token_ids == plain[i].token_ids
        np.testing.assert_allclose(mixed[i].scores.hidden, plain[i].scores.hidden, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(mixed[steered].scores.hidden, plain[steered].scores.hidden)
