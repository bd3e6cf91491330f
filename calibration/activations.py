"""Activation collection: residual-stream features of statements, through the vLLM capture (fast)
or Hugging Face transformers (reference), cached on disk.

Features per statement and layer: the last token's residual stream (``last``) and the mean over the
statement's tokens (``mean``). They go to memory, or with ``features_dir`` straight to ``.npy`` files for sets
larger than RAM (:mod:`calibration.feature_sink`); each batch advances a progress bar (:mod:`calibration.progress`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.engine_port import GuardEngine
from calibration.feature_sink import load_features, open_sink
from calibration.progress import Progress
from guard import env
from guard.errors import ConfigError
from guard.tensorfile import load_tensors, save_tensors

__all__ = ["collect_vllm", "collect_hf", "cache_path"]


def _key(model_fingerprint: str, layers: Sequence[int], texts: Sequence[str], kind: str) -> str:
    """What identifies one collection: the model, its layers, the texts and the kind of features."""
    return hashlib.sha256(json.dumps([model_fingerprint, list(layers), list(texts), kind]).encode()).hexdigest()[:20]


def cache_path(model_fingerprint: str, layers: Sequence[int], texts: Sequence[str], kind: str) -> Path:
    """Where features for this model, layers and texts are cached."""
    return Path(env.cache_home()) / "activations" / f"{_key(model_fingerprint, layers, texts, kind)}.safetensors"


def _pool(hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return hidden[-1], hidden.mean(axis=0)  # (L, H) each


def _cached(path: Path, key: str, features_dir: str | Path | None) -> dict[str, np.ndarray] | None:
    if features_dir is not None:
        return load_features(features_dir, key)
    return load_tensors(path)[0] if path.is_file() else None


def _store(out: dict[str, np.ndarray], path: Path, features_dir: str | Path | None) -> None:
    """Cache in-memory features as safetensors (a features folder is its own cache)."""
    if features_dir is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, out)


def collect_vllm(llm: GuardEngine, texts: Sequence[str], fingerprint: str, batch: int = 128,
                 keep_tokens: bool = False, cache: bool = True,
                 features_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Features of ``texts`` through a ``GuardedLLM`` started with ``capture_hidden`` (one prefill each).

    Args:
        keep_tokens: also return every token's rows (the bags of a multiple-instance probe).
        cache: read and write the on-disk cache (``False``: always run the engine, e.g. to time it).
        features_dir: stream the features into float32 ``.npy`` files in this folder as they come and return
            read-only memory maps of them (:class:`calibration.feature_sink.DiskSink`), for sets larger than RAM;
            a complete collection of the same texts there is reused (with ``cache``). ``None``: in memory.

    Returns:
        ``{"last": (n, L, H), "mean": (n, L, H)}`` for the engine's capture layers, plus
        ``"tokens": (N, L, H)`` and ``"starts": (n,)`` (each text's first row) with ``keep_tokens``.
    """
    from vllm import SamplingParams

    kind = "vllm-tokens" if keep_tokens else "vllm"
    key, path = _key(fingerprint, llm.spec.layers, texts, kind), cache_path(fingerprint, llm.spec.layers, texts, kind)
    if cache and (hit := _cached(path, key, features_dir)) is not None:
        return hit
    sink = open_sink(len(texts), keep_tokens, features_dir, key)
    with Progress(len(texts), "collecting activations (vLLM)", unit="statements") as bar:
        for i in range(0, len(texts), batch):
            chunk = list(texts[i : i + batch])
            for res in llm.generate(chunk, SamplingParams(max_tokens=1, temperature=0.0), hidden=True):
                if res.scores is None or res.scores.hidden is None:
                    raise ConfigError("the engine delivered no hidden rows; start it with capture_hidden=True")
                # positions 0..P-1 are the prompt; keep exactly the statement's tokens
                rows = res.scores.hidden[: len(res.prompt_token_ids)]
                sink.add(*_pool(rows), rows if keep_tokens else None)
            bar.update(len(chunk))
    out = sink.finish()
    if cache:
        _store(out, path, features_dir)
    return out


def collect_hf(ref: Any, texts: Sequence[str], layers: Sequence[int], fingerprint: str,
               cache: bool = True, features_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The same features through Hugging Face transformers (``adapters.hf.HFReference``), one text at a time.

    Args:
        cache: read and write the on-disk cache (``False``: always run the model, e.g. to time it).
        features_dir: stream the features to ``.npy`` files in this folder (see :func:`collect_vllm`).
    """
    key, path = _key(fingerprint, layers, texts, "hf"), cache_path(fingerprint, layers, texts, "hf")
    if cache and (hit := _cached(path, key, features_dir)) is not None:
        return hit
    sink = open_sink(len(texts), folder=features_dir, key=key)
    with Progress(len(texts), "collecting activations (HF)", unit="statements") as bar:
        for text in texts:
            ids = ref.tokenizer(text)["input_ids"]
            sink.add(*_pool(ref.hidden_states(ids, layers)))
            bar.update(1)
    out = sink.finish()
    if cache:
        _store(out, path, features_dir)
    return out
