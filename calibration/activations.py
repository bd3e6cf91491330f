"""Activation collection: residual-stream features of statements, through the vLLM capture (fast)
or Hugging Face transformers (reference), cached on disk.

Features per statement and layer: the last token's residual stream (``last``) and the mean over the
statement's tokens (``mean``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.engine_port import GuardEngine
from guard import env
from guard.errors import ConfigError
from guard.tensorfile import load_tensors, save_tensors

__all__ = ["collect_vllm", "collect_hf", "cache_path"]


def cache_path(model_fingerprint: str, layers: Sequence[int], texts: Sequence[str], kind: str) -> Path:
    """Where features for this model, layers and texts are cached."""
    digest = hashlib.sha256(json.dumps([model_fingerprint, list(layers), list(texts), kind]).encode()).hexdigest()[:20]
    return Path(env.cache_home()) / "activations" / f"{digest}.safetensors"


class _Progress:
    """A one-line progress bar with rate and ETA on stderr."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.start, self.done = total, label, time.monotonic(), 0

    def update(self, n: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        print(f"\r{self.label}: {self.done}/{self.total} [{rate:.1f}/s, ETA {eta:.0f}s]", end="", file=sys.stderr,
              flush=True)
        if self.done >= self.total:
            print(file=sys.stderr)


def _pool(hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return hidden[-1], hidden.mean(axis=0)  # (L, H) each


def _cached(path: Path) -> dict[str, np.ndarray] | None:
    return load_tensors(path)[0] if path.is_file() else None


def collect_vllm(llm: GuardEngine, texts: Sequence[str], fingerprint: str, batch: int = 128,
                 keep_tokens: bool = False, cache: bool = True) -> dict[str, np.ndarray]:
    """Features of ``texts`` through a ``GuardedLLM`` started with ``capture_hidden`` (one prefill each).

    Args:
        keep_tokens: also return every token's rows (the bags of a multiple-instance probe).
        cache: read and write the on-disk cache (``False``: always run the engine, e.g. to time it).

    Returns:
        ``{"last": (n, L, H), "mean": (n, L, H)}`` for the engine's capture layers, plus
        ``"tokens": (N, L, H)`` and ``"starts": (n,)`` (each text's first row) with ``keep_tokens``.
    """
    from vllm import SamplingParams

    path = cache_path(fingerprint, llm.spec.layers, texts, "vllm-tokens" if keep_tokens else "vllm")
    if cache and (hit := _cached(path)) is not None:
        return hit
    last, mean, tokens = [], [], []
    bar = _Progress(len(texts), "collecting activations (vLLM)")
    for i in range(0, len(texts), batch):
        chunk = list(texts[i : i + batch])
        for res in llm.generate(chunk, SamplingParams(max_tokens=1, temperature=0.0), hidden=True):
            if res.scores is None or res.scores.hidden is None:
                raise ConfigError("the engine delivered no hidden rows; start it with capture_hidden=True")
            # positions 0..P-1 are the prompt; keep exactly the statement's tokens
            rows = res.scores.hidden[: len(res.prompt_token_ids)]
            a, b = _pool(rows)
            last.append(a)
            mean.append(b)
            if keep_tokens:
                tokens.append(rows.astype(np.float32))
        bar.update(len(chunk))
    out = {"last": np.stack(last).astype(np.float32), "mean": np.stack(mean).astype(np.float32)}
    if keep_tokens:
        out["tokens"] = np.concatenate(tokens)
        out["starts"] = np.concatenate([[0], np.cumsum([len(t) for t in tokens])[:-1]]).astype(np.int64)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, out)
    return out


def collect_hf(ref: Any, texts: Sequence[str], layers: Sequence[int], fingerprint: str,
               cache: bool = True) -> dict[str, np.ndarray]:
    """The same features through Hugging Face transformers (``adapters.hf.HFReference``), one text at a time.

    Args:
        cache: read and write the on-disk cache (``False``: always run the model, e.g. to time it).
    """
    path = cache_path(fingerprint, layers, texts, "hf")
    if cache and (hit := _cached(path)) is not None:
        return hit
    last, mean = [], []
    bar = _Progress(len(texts), "collecting activations (HF)")
    for text in texts:
        ids = ref.tokenizer(text)["input_ids"]
        a, b = _pool(ref.hidden_states(ids, layers))
        last.append(a)
        mean.append(b)
        bar.update(1)
    out = {"last": np.stack(last).astype(np.float32), "mean": np.stack(mean).astype(np.float32)}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, out)
    return out
