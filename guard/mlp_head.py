"""The hidden layer of an MLP probe head: which tensors it needs, and its numpy reference.

A probe with ``head="mlp"`` carries ``w1 (L, m, H)`` and ``b1 (L, m)`` besides the read-out
``weight (L, k, m)`` / ``bias (L, k)`` of :class:`guard.probe.Probe`; on standardised rows ``z``::

    hidden[l] = relu(z @ w1[l].T + b1[l])        # (m,), then score[l] = hidden[l] @ weight[l].T + bias[l]

The engine's two ``addmm`` calls per layer (``adapters/vllm/capture.py``) are tested against
:func:`mlp_hidden` through :meth:`guard.probe.Probe.score`.
"""

from __future__ import annotations

import numpy as np

from guard.errors import ArtifactError

__all__ = ["mlp_hidden", "mlp_hidden_units"]


def mlp_hidden(z: np.ndarray, w1: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Hidden activations ``(n, L, m)`` of standardised rows ``z (n, L, H)``, in float64."""
    hidden: np.ndarray = np.maximum(np.einsum("nlh,lmh->nlm", z, w1.astype(np.float64)) + b1, 0.0)
    return hidden


def mlp_hidden_units(head: str, layers: tuple[int, ...], hidden_size: int,
                     w1: np.ndarray | None, b1: np.ndarray | None) -> int:
    """Hidden units ``m`` of an MLP head, read from ``w1``; 0 for a linear head.

    Raises:
        ArtifactError: the head's tensors are missing or superfluous, or ``w1`` is not ``(L, m, H)``.

    Example:
        >>> mlp_hidden_units("mlp", (3,), 4, np.zeros((1, 2, 4)), np.zeros((1, 2)))
        2
    """
    n_l, h = len(layers), hidden_size
    if head == "linear":
        if w1 is not None or b1 is not None:
            raise ArtifactError("a linear probe got hidden-layer tensors 'w1'/'b1'; set head='mlp' in the manifest "
                                "or re-export the probe without them")
        return 0
    if w1 is None or b1 is None:
        missing = [name for name, arr in (("w1", w1), ("b1", b1)) if arr is None]
        raise ArtifactError(f"probe head 'mlp' needs tensors 'w1' ({n_l}, m, {h}) and 'b1' ({n_l}, m); missing: "
                            f"{', '.join(map(repr, missing))}; re-export the probe with its hidden layer")
    if w1.ndim != 3 or w1.shape[1] < 1:
        raise ArtifactError(f"probe tensor 'w1' has shape {tuple(w1.shape)} but the manifest (head='mlp', "
                            f"layers={list(layers)}, hidden_size={h}) implies ({n_l}, m, {h}) with m >= 1 "
                            "hidden units; re-export the probe")
    return int(w1.shape[1])
