"""Raw per-layer class scores -> class probabilities: the layers' mean, then a softmax, in float64.

One formula, two implementations: :func:`class_probabilities` (numpy, any batch) and
:func:`row_probabilities` (plain Python, a few rows). The second exists for the server's hot path,
where one streamed chunk brings one score row: on a dozen numbers, numpy's per-call dispatch
costs several times the arithmetic, and more so with cold caches (on a CPU shared with the
engine, every engine step evicts the server's code and data). Both give the same numbers to the
last bits (a test holds them to 1e-12).
"""

from __future__ import annotations

from math import exp, isfinite

import numpy as np

__all__ = ["class_probabilities", "row_probabilities", "softmax"]


def class_probabilities(scores: np.ndarray) -> np.ndarray:
    """Raw scores ``(..., layers, k)`` -> class probabilities ``(..., k)``: layers averaged, then softmax."""
    return softmax(np.asarray(scores, np.float64).mean(axis=-2))


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (max-shifted)."""
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def row_probabilities(rows: list[list[list[float]]]) -> list[tuple[float, ...]] | None:
    """:func:`class_probabilities` of rows given as nested lists ``[row][layer][class]`` (``ndarray.tolist()``).

    Returns:
        One tuple of class probabilities per row, or ``None`` when a row holds NaN or an infinity
        (its layer mean is then not finite), for the caller to refuse with its own words.
    """
    out = []
    for layers in rows:
        mean = [sum(column) / len(layers) for column in zip(*layers)]
        if not all(map(isfinite, mean)):
            return None
        top = max(mean)
        e = [exp(v - top) for v in mean]
        total = sum(e)
        out.append(tuple(v / total for v in e))
    return out
