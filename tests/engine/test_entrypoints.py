"""The capture through AsyncLLM and through vLLM's own OpenAI API server, scores crossing processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time

import httpx

from tests.engine.conftest import LAYERS, rel_err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def test_async_llm_delivers_exact_hidden_rows_per_guard_key_in_capture_only_mode(hf):
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from adapters.score_channel import ScoreCollector, new_ipc_endpoint
    from adapters.vllm.engine import engine_arguments
    from adapters.vllm.plugin import register
    from guard.config import GuardConfig
    from guard.request_options import RequestOptions

    register()
    endpoint = new_ipc_endpoint()
    # No probe: the same mechanism with the projection off (raw capture for calibration).
    kwargs, _, _ = engine_arguments(GuardConfig.build(layers=LAYERS, capture_hidden=True, enforce_eager=True,
                                                      max_model_len=512), endpoint)
    collector = ScoreCollector(endpoint)
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    prompts = {"k-short": "Hi", "k-long": "Name three primary colours and say why they are called primary."}

    async def run(key: str, prompt: str):
        sp = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True,
                            extra_args=RequestOptions(key=key, hidden=True).to_extra_args())
        final = None
        async for out in engine.generate(prompt, sp, request_id=f"req-{key}"):
            final = out
        return key, list(final.prompt_token_ids) + list(final.outputs[0].token_ids)

    async def main():
        return await asyncio.gather(*(run(k, p) for k, p in prompts.items()))

    try:
        finished = asyncio.run(main())
    finally:
        engine.shutdown()
    try:
        for key, sequence in finished:
            got = collector.store.wait(key, len(sequence) - 1, timeout=30)
            assert collector.malformed_batches == 0, collector.last_error
            assert got.positions.tolist() == list(range(len(sequence) - 1))
            assert got.scores.shape == (len(sequence) - 1, len(LAYERS), 0)  # no probe, no scores
            assert rel_err(got.hidden, hf.hidden_states(sequence[:-1], LAYERS)) < 1e-4
    finally:
        collector.close()


def test_vllm_openai_server_delivers_scores_over_tcp_keyed_by_vllm_xargs(probe_path, hf, tmp_path):
    from adapters.score_channel import ScoreCollector
    from adapters.vllm.engine import engine_arguments
    from adapters.vllm.server_args import api_server_argv
    from guard.config import GuardConfig

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    kwargs, _, _ = engine_arguments(GuardConfig.build(probe=probe_path, capture_hidden=True, enforce_eager=True,
                                                      max_model_len=512), endpoint)
    collector = ScoreCollector(endpoint)
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    env = {**os.environ, "GUARD_SCORE_ENDPOINT": endpoint}  # the worker reads it; not part of the compile key
    server = subprocess.Popen(api_server_argv(kwargs, port=port), stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vLLM API server did not start in 300 s"
            time.sleep(1)
        body = {"model": kwargs["model"], "prompt": "The largest planet in the solar system is", "max_tokens": 5,
                "temperature": 0, "ignore_eos": True, "return_token_ids": True,
                "vllm_xargs": {"guard_key": "http-1", "guard_hidden": 1}}
        choice = httpx.post(f"{base}/v1/completions", json=body, timeout=120).json()["choices"][0]
        sequence = list(choice["prompt_token_ids"]) + list(choice["token_ids"])
        got = collector.store.wait("http-1", len(sequence) - 1, timeout=30)
        assert got.positions.tolist() == list(range(len(sequence) - 1))
        assert rel_err(got.hidden, hf.hidden_states(sequence[:-1], LAYERS)) < 1e-4
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        collector.close()
