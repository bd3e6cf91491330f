"""Steering directions from labelled activations or from a probe: the "truthful direction" recipes.

Two sources of a direction per steered layer:

* ``mean-difference`` (:func:`mean_difference`): ``mean(true) - mean(false)`` over residual-stream
  features of true and false statements (e.g. ``collect_vllm(...)["last"]``); adding it moves a
  residual stream towards the true statements' side. Restricting the statements to one domain
  (``Statement.domain``) gives a per-domain direction.
* ``probe`` (:func:`probe_difference`): the direction in which a linear probe's ``"true"`` score
  rises fastest against its ``"false"`` score, ``(w_true - w_false) / scale`` at each of its layers
  (the probe standardises ``h`` by ``scale`` before its read-out).

With ``normalize`` each direction is made unit-length and rescaled to the median residual norm
``||h||`` of its layer, so ``alpha = 0.1`` means "a tenth of a typical residual stream" whatever the
layer or the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from guard.errors import ArtifactError, DataError
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.steering import SteeringVector

__all__ = ["mean_difference", "probe_difference", "residual_norm", "scale_to_residual", "build_steering_vector"]


def mean_difference(features: np.ndarray, labels: Sequence[int] | np.ndarray, true_label: int = 0,
                    false_label: int = 1, normalize: bool = False) -> np.ndarray:
    """Per-layer direction from false to true statements.

    Args:
        features: ``(n, L, H)`` residual-stream rows, one per statement.
        labels: ``(n,)`` integer labels.
        true_label / false_label: which labels are the two sides; other labels are ignored.
        normalize: make each direction unit-length, then scale it to the median residual norm
            ``||features[:, l]||`` of its layer (:func:`scale_to_residual`).

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
    direction: np.ndarray = true.mean(axis=0) - false.mean(axis=0)  # (L, H)
    if normalize:
        direction = scale_to_residual(direction, features)
    return direction.astype(np.float32)


def probe_difference(probe: Probe, features: np.ndarray | None = None) -> np.ndarray:
    """A linear probe's own truthful direction at each of its layers: ``(w_true - w_false) / scale``.

    Args:
        probe: a linear probe with ``"true"`` and ``"false"`` labels.
        features: ``(n, L, H)`` residual rows at the probe's layers; when given, each direction is
            rescaled to the median residual norm of its layer (as ``mean_difference(normalize=True)``).

    Returns:
        ``(L, H)`` float32 directions for ``probe.layers``.

    Raises:
        ArtifactError: the probe is not linear or lacks a ``"true"`` or ``"false"`` label.
        DataError: ``features`` do not cover the probe's layers and hidden size.
    """
    labels = list(probe.labels)
    if probe.hidden_units or "true" not in labels or "false" not in labels:
        raise ArtifactError(f"probe {probe.manifest.kind!r} (labels {labels}, head {probe.manifest.head!r}) has no "
                            "linear 'true' and 'false' read-outs to steer along; use a linear true/false probe "
                            "from `guard calibrate` or --source mean-difference")
    w = probe.weight.astype(np.float64)  # (L, k, H)
    direction = (w[:, labels.index("true")] - w[:, labels.index("false")]) / probe.scale  # (L, H)
    if features is None:
        return direction.astype(np.float32)
    features = np.asarray(features, np.float64)
    if features.ndim != 3 or features.shape[1:] != direction.shape:
        raise DataError(f"features of shape {features.shape} do not match the probe's layers {list(probe.layers)}; "
                        f"expected (n, {direction.shape[0]}, {direction.shape[1]})")
    return scale_to_residual(direction, features).astype(np.float32)


def residual_norm(features: np.ndarray) -> float:
    """The median Euclidean norm of residual-stream rows ``(n, L, H)``, the largest over layers (bounds strength)."""
    return float(np.median(np.linalg.norm(np.asarray(features, np.float64), axis=-1), axis=0).max())


def scale_to_residual(direction: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Unit directions ``(L, H)`` times the median residual norm of ``features (n, L, H)`` at each layer.

    Raises:
        DataError: a direction is zero (there is nothing to normalise).
    """
    norms = np.linalg.norm(direction, axis=-1, keepdims=True)  # (L, 1)
    if np.any(norms == 0):
        raise DataError("the direction is zero at some layer (the true and false sides coincide); there is no "
                        "direction to normalise")
    typical = np.median(np.linalg.norm(np.asarray(features, np.float64), axis=-1), axis=0)[:, None]  # (L, 1)
    scaled: np.ndarray = direction / norms * typical
    return scaled


def build_steering_vector(features: np.ndarray, labels: Sequence[int] | np.ndarray, layers: tuple[int, ...],
                          spec: ModelSpec, out: str | Path, *, model_id: str = "", normalize: bool = True,
                          true_label: int = 0, false_label: int = 1, default_alpha: float | None = None,
                          note: str = "") -> Path:
    """Write a ``mean-difference`` steering vector built from features at ``layers``; returns its path.

    Args:
        features: ``(n, L, H)`` rows at ``layers`` (as ``collect_vllm`` / ``collect_hf`` return them).
        spec: the model the features came from (``ModelSpec.from_folder``).
        out: destination, without or with the ``.safetensors`` suffix.
        default_alpha: the strength requests get when they give none (recorded in the manifest).
        note: appended to the manifest's description (e.g. which statements were used).
    """
    vectors = mean_difference(features, labels, true_label, false_label, normalize)
    scale = "unit directions scaled to the median residual norm" if normalize else "raw mean differences"
    description = f"mean(true) - mean(false) over {len(labels)} statements; {scale}" + (f"; {note}" if note else "")
    sv = SteeringVector.from_vectors(vectors, layers, spec, kind="mean-difference", model_id=model_id,
                                     description=description, default_alpha=default_alpha,
                                     residual_norm=residual_norm(features))
    return sv.save(out)
