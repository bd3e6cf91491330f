"""The capture inside the real vLLM engine equals Hugging Face transformers on the real model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from guard.mlp_head import mlp_hidden
from guard.model_spec import ModelSpec
from guard.probe import Probe, ProbeManifest
from tests.engine.conftest import CHUNK_TOKENS, LAYERS, prompts_of_different_lengths, rel_err

MAX_REL_ERR = 1e-4


def _params(max_tokens: int = 8):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)



def _assert_matches_hf(result, hf) -> None:
    fed = result.sequence[:-1]  # the last sampled token is never fed back to the model
    assert result.scores.positions.tolist() == list(range(len(fed)))
    ref = hf.hidden_states(fed, LAYERS)
    err = rel_err(result.scores.hidden, ref)
    assert err < MAX_REL_ERR, f"relative error {err:.2e} at positions of a {len(fed)}-token sequence"


def test_vllm_capture_matches_hf_hidden_states_for_one_request(eager_engine, hf):
    (res,) = eager_engine.generate(["The capital of France is"], _params(), hidden=True)
    assert len(res.token_ids) == 8
    _assert_matches_hf(res, hf)


def test_vllm_capture_matches_hf_for_sixteen_concurrent_requests_of_different_lengths(eager_engine, hf):
    prompts = prompts_of_different_lengths(20)
    results = eager_engine.generate(prompts, _params(10), hidden=True)
    assert len({len(r.prompt_token_ids) for r in results}) > 3
    for res in results:
        _assert_matches_hf(res, hf)


def test_in_engine_probe_scores_equal_numpy_reference_on_hf_hidden_states(eager_engine, hf):
    results = eager_engine.generate(prompts_of_different_lengths(4), _params(6), hidden=False)
    for res in results:
        assert res.scores.hidden is None
        ref = eager_engine.probe.score(hf.hidden_states(res.sequence[:-1], LAYERS))
        assert res.scores.scores.shape == ref.shape
        np.testing.assert_allclose(res.scores.scores, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.fixture(scope="module")
def mlp_engine(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """An eager engine scoring a random (uncalibrated) MLP-head probe with 16 hidden units, hidden capture on."""
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    spec, rng, n_l, m = ModelSpec.from_folder(model_path), np.random.default_rng(11), len(LAYERS), 16
    manifest = ProbeManifest(kind="stand-in-mlp", labels=("true", "false", "neither"), layers=LAYERS,
                             hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                             model_fingerprint=spec.fingerprint, head="mlp", description="random; NOT calibrated")
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    probe = Probe(manifest, f32(n_l, 3, m), f32(n_l, 3), np.zeros((n_l, spec.hidden_size), np.float32),
                  np.ones((n_l, spec.hidden_size), np.float32), w1=f32(n_l, m, spec.hidden_size), b1=f32(n_l, m))
    path = probe.save(tmp_path_factory.mktemp("mlp-probe") / "mlp")
    cfg = GuardConfig.build(probe=str(path), capture_hidden=True, enforce_eager=True, max_model_len=1024)
    llm = GuardedLLM(cfg, max_num_batched_tokens=CHUNK_TOKENS)
    yield llm
    llm.close()


def test_in_engine_mlp_probe_scores_equal_numpy_reference_on_captured_rows(mlp_engine):
    probe = mlp_engine.probe
    results = mlp_engine.generate(prompts_of_different_lengths(6), _params(6), hidden=True)
    active = []
    for res in results:
        ref = probe.score(res.scores.hidden)
        assert res.scores.scores.shape == ref.shape == (len(res.sequence) - 1, len(LAYERS), 3)
        np.testing.assert_allclose(res.scores.scores, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        active.append(mlp_hidden((res.scores.hidden - probe.mean) / probe.scale, probe.w1, probe.b1) > 0)
    # the ReLU both passes and blocks units, so the in-engine hidden layer is really exercised
    assert 0.1 < np.concatenate(active).mean() < 0.9


def test_same_request_alone_and_amid_thirty_others_gets_identical_scores(eager_engine):
    target = "Explain why the sky is blue in one sentence."
    (alone,) = eager_engine.generate([target], _params(12))
    crowd = prompts_of_different_lengths(30)
    mixed = eager_engine.generate(crowd[:15] + [target] + crowd[15:], _params(12))[15]
    assert mixed.sequence == alone.sequence
    assert np.array_equal(mixed.scores.positions, alone.scores.positions)
    np.testing.assert_allclose(mixed.scores.scores, alone.scores.scores, rtol=1e-4, atol=1e-4)


def test_long_prompt_is_prefilled_in_chunks_and_captured_exactly(eager_engine, hf):
    long_prompt = " ".join(f"Item {i} is a small fact about number {i}." for i in range(45))
    (res,) = eager_engine.generate([long_prompt], _params(4), hidden=True)
    n_prompt = len(res.prompt_token_ids)
    assert n_prompt > 3 * CHUNK_TOKENS
    # ceil(prompt / budget) prefill steps, then one step per fed-back generated token.
    assert res.scores.segments >= -(-n_prompt // CHUNK_TOKENS) + len(res.token_ids) - 1
    _assert_matches_hf(res, hf)


def test_request_that_opts_out_gets_no_scores_and_no_plan(eager_engine):
    before = eager_engine.worker_status()[0]
    (res,) = eager_engine.generate(["Hello there"], _params(4), guard=False)
    after = eager_engine.worker_status()[0]
    assert res.scores is None
    assert after["steps_guarded"] == before["steps_guarded"]  # no plan was built, nothing was gathered
    assert all(a > b for a, b in zip(after["fired"], before["fired"]))  # while the hooks did run


def test_guarded_and_unguarded_requests_in_one_batch_keep_their_own_rows(eager_engine, hf):
    prompts = prompts_of_different_lengths(8)
    flags = [i % 2 == 0 for i in range(8)]
    results = eager_engine.generate(prompts, _params(6), guard=flags, hidden=True)
    for res, guarded in zip(results, flags):
        if guarded:
            _assert_matches_hf(res, hf)
        else:
            assert res.scores is None


def test_repeated_prompt_is_fully_recomputed_with_prefix_caching_off(eager_engine):
    prompt = "Repeat after me: prefix caching is off in this engine, so every token is scored."
    first, second = eager_engine.generate([prompt], _params(3)), eager_engine.generate([prompt], _params(3))
    assert second[0].scores.missing(len(second[0].sequence) - 1) == []
    np.testing.assert_allclose(first[0].scores.scores, second[0].scores.scores, rtol=1e-5, atol=1e-5)
