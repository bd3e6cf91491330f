"""The graph-native capture under CUDA graphs (``enforce_eager`` off, vLLM's default CUDA-graph mode): the same
equality, isolation and address checks as the compiled CPU engine, the start-up self-test, and proof that graph
replays (not only the capture run) execute the hooks with each step's fresh values."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.engine.conftest import CHUNK_TOKENS, prompts_of_different_lengths
from tests.engine.test_graph_capture import (
    _params,
    check_buffers_keep_their_addresses,
    check_capture_matches_hf_in_mixed_batches,
    check_hooks_run_in_the_graph,
)


@pytest.fixture(scope="module")
def cuda_engine(probe_path: str, steering_path: str) -> Iterator:
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
        cfg = GuardConfig.build(probe=probe_path, steering=steering_path, capture_hidden=True, max_model_len=1024)
        llm = GuardedLLM(cfg, max_num_batched_tokens=CHUNK_TOKENS, gpu_memory_utilization=0.3)
    yield llm
    llm.close()


def test_cuda_graph_engine_runs_the_hooks_and_passes_its_selftest(cuda_engine):
    status = check_hooks_run_in_the_graph(cuda_engine)
    print(f"CUDA-graph mode covered: {status['cudagraph_mode']}")  # PIECEWISE, FULL or FULL_AND_PIECEWISE
    assert status["cudagraph_mode"] != "NONE"


def test_decode_steps_replayed_from_cuda_graphs_run_the_hooks_every_step(cuda_engine):
    before = cuda_engine.worker_status()[0]["fired"]
    (res,) = cuda_engine.generate(["Count: one, two,"], _params(16))
    after = cuda_engine.worker_status()[0]["fired"]
    # one prefill and 15 fed-back tokens: at least 16 forwards, each counted by the graph on the device
    assert all(a - b >= 16 for a, b in zip(after, before))
    assert res.scores is not None and len(res.scores.positions) == len(res.sequence) - 1


def test_cuda_graph_capture_matches_hf_in_mixed_prefill_and_decode_and_reordered_batches(cuda_engine, hf):
    check_capture_matches_hf_in_mixed_batches(cuda_engine, hf)


def test_cuda_graph_buffers_keep_their_addresses_while_batches_change(cuda_engine):
    check_buffers_keep_their_addresses(cuda_engine)


def test_cuda_graph_steering_moves_only_the_rows_that_steer(cuda_engine):
    prompts, alphas = prompts_of_different_lengths(4), [None, 0.5, None, 0.0]
    plain = cuda_engine.generate(prompts, _params(), hidden=True)
    mixed = cuda_engine.generate(prompts, _params(), hidden=True, steer=alphas)
    for i, alpha in enumerate(alphas):
        if alpha == 0.5:
            assert not np.array_equal(mixed[i].scores.hidden, plain[i].scores.hidden)
        else:
            assert mixed[i].token_ids == plain[i].token_ids
            np.testing.assert_allclose(mixed[i].scores.hidden, plain[i].scores.hidden, rtol=1e-5, atol=1e-5)
