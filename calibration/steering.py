"""Steering directions from labelled activations: the mean-difference ("truthful direction") recipe.

Given residual-stream features of true and false statements (e.g. ``collect_vllm(...)["last"]`` or
``collect_hf``), the direction at each layer is ``mean(true) - mean(false)``: adding it moves a
residual stream towards the true statements' side. Optionally each direction is made unit-length and
rescaled to the typical residual norm at its layer, so ``alpha = 0.1`` means "a tenth of a typical
residual stream" whatever the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from guard.errors import DataError
from guard.model_spec import ModelSpec
from guard.steering import SteeringVector

__all__ = ["mean_difference", "build_steering_vector"]


def mean_difference(features: np.ndarray, labels: Sequence[int] | np.ndarray, true_label: int = 0,
                    false_label: int = 1, normalize: bool = False) -> np.ndarray:
    """Per-layer direction from false to true statements.

    Args:
        features: ``(n, L, H)`` residual-stream rows, one per statement.
        labels: ``(n,)`` integer labels.
        true_label / false_label: which labels are the two sides; other labels are ignored.
        normalize: make each direction unit-length, then scale it to the median residual norm
            ``||features[:, l]||`` of its layer.

    Returns:
        ``(L, H)`` float32 directions.

    Raises:
        DataError: shapes disagree, a side has no statements, or the two means coincide at a layer
            while ``normalize`` is asked for.

    Example:
        >>> f = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
        >>> mean_difference(f, [0, 1]).tolist()
        [[1.0, -1.0]]
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 3 or labels.shape != (features.shape[0],):
        raise DataError(f"features of shape {features.shape} and labels of shape {labels.shape} disagree; "
                        "expected (n, L, H) features and (n,) labels")
    true, false = features[labels == true_label], features[labels == false_label]
    if not len(true) or not len(false):
        raise DataError(f"mean difference needs statements of both labels, got {len(true)} with label {true_label} "
                        f"and {len(false)} with label {false_label}")
    direction = true.mean(axis=0) - false.mean(axis=0)  # (L, H)
    if normalize:
        norms = np.linalg.norm(direction, axis=-1, keepdims=True)  # (L, 1)
        if np.any(norms == 0):
            raise DataError("the true and false means coincide at some layer; there is no direction to normalise")
        typical = np.median(np.linalg.norm(features, axis=-1), axis=0)[:, None]  # (L, 1)
        direction = direction / norms * typical
    return direction.astype(np.float32)


def build_steering_vector(features: np.ndarray, labels: Sequence[int] | np.ndarray, layers: tuple[int, ...],
                          spec: ModelSpec, out: str | Path, *, model_id: str = "", normalize: bool = True,
                          true_label: int = 0, false_label: int = 1) -> Path:
    """Write a ``mean-difference`` steering vector built from features at ``layers``; returns its path.

    Args:
        features: ``(n, L, H)`` rows at ``layers`` (as ``collect_vllm`` / ``collect_hf`` return them).
        spec: the model the features came from (``ModelSpec.from_folder``).
        out: destination, without or with the ``.safetensors`` suffix.
    """
    vectors = mean_difference(features, labels, true_label, false_label, normalize)
    scale = "unit directions scaled to the median residual norm" if normalize else "raw mean differences"
    sv = SteeringVector.from_vectors(vectors, layers, spec, kind="mean-difference", model_id=model_id,
                                     description=f"mean(true) - mean(false) over {len(labels)} statements; {scale}")
    return sv.save(out)
