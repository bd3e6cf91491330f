"""Tiny random-weight checkpoints of the decoder architectures guard supports, built locally.

Each is a real Hugging Face folder (``from_config`` with a fixed seed, four layers, hidden size 128, float32
safetensors, the default model's tokenizer) that transformers and vLLM both load, so the vLLM == HF capture
and steering tests run on every architecture without a download. Built once under
``$GUARD_CACHE/test-models/`` (keyed by the settings below), safe to build from several processes at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adapters.model_store import resolve_model
from guard import env

__all__ = ["ARCHITECTURES", "UNSUPPORTED", "tiny_checkpoint", "BUILDER_VERSION"]

#: bump when the builder changes what it writes
BUILDER_VERSION = 1

_COMMON: dict[str, Any] = {
    "vocab_size": 49152,  # the default model's tokenizer
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 2048,
    "initializer_range": 0.05,  # larger than the usual 0.02 so every layer visibly moves the residual stream
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "tie_word_embeddings": True,  # Gemma ties them in vLLM; the others accept either
}

#: architecture -> (transformers config class, its extra settings)
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 64}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "gemma2": ("Gemma2Config", {"head_dim": 64, "query_pre_attn_scalar": 64, "sliding_window": 64}),
    "gemma3": ("Gemma3TextConfig", {"head_dim": 64, "query_pre_attn_scalar": 64, "sliding_window": 64,
                                    "sliding_window_pattern": 2}),
    "phi3": ("Phi3Config", {}),
}

#: an architecture whose vLLM decoder layers return one tensor (no fused residual): guard must refuse it
UNSUPPORTED: dict[str, tuple[str, dict[str, Any]]] = {
    "granite": ("GraniteConfig", {}),
}


def _settings(arch: str) -> tuple[str, dict[str, Any]]:
    table = {**ARCHITECTURES, **UNSUPPORTED}
    if arch not in table:
        raise KeyError(f"no tiny checkpoint for {arch!r}; known: {sorted(table)}")
    config_class, extra = table[arch]
    return config_class, {**_COMMON, **extra}


def tiny_checkpoint(arch: str, cache_dir: str | Path | None = None) -> str:
    """The folder of ``arch``'s tiny checkpoint, built on first use."""
    config_class, settings = _settings(arch)
    key = hashlib.sha256(json.dumps([BUILDER_VERSION, config_class, settings], sort_keys=True).encode()).hexdigest()
    root = Path(cache_dir or env.cache_home()) / "test-models"
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{arch}-{key[:10]}"
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "model.safetensors").is_file():
            return str(dest)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _build(config_class, settings, tmp)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return str(dest)


def _build(config_class: str, settings: dict[str, Any], out: Path) -> None:
    import torch
    import transformers

    config = getattr(transformers, config_class)(**settings)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(str(out), safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(str(out))
