"""Synthetic classifier outputs shared by the conformal tests."""

from __future__ import annotations

import numpy as np


def noisy_softmax(rng: np.random.Generator, n: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Noisy softmax probabilities ``(n, k)`` with their true labels (an imperfect classifier)."""
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1.0, (n, k))
    logits[np.arange(n), labels] += 1.2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels
