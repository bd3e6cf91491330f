"""One engine, several read-outs: the probe, its shift head and the pre-generation gate fused into one head.

The shift head (:mod:`guard.shift`) and a gate (see ``calibration.gate``) read the same layers as the probe,
so the worker scores all of them with the probe's own matmuls. Every published score row holds, per layer,
the probe's ``k`` label columns, then its ``d`` shift columns, then the gate's columns; the consumer splits
them again with :func:`split_columns`.

* A linear probe: the folded weights are concatenated along the output axis (one ``addmm`` per layer).
* An MLP probe: each extra linear column ``a = h @ e + c`` becomes two more hidden units,
  ``relu(a)`` and ``relu(-a)``, whose difference the second matmul writes to the column
  (``relu(a) - relu(-a) == a`` exactly: one of the two is 0). Two ``addmm`` per layer, as before.
"""

from __future__ import annotations

import numpy as np

from guard.errors import ArtifactError
from guard.probe import Probe

__all__ = ["Columns", "check_gate", "fused_head", "split_columns"]

#: ``(w1, b1, w, b)``: ``w1 (L, H, m)`` / ``b1 (L, m)`` for an MLP head (``None`` for a linear one), ``w (L, ., o)``,
#: ``b (L, o)`` with ``o`` the row's columns
Columns = tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]


def check_gate(probe: Probe, gate: Probe) -> None:
    """Refuse a gate that cannot ride along with ``probe``.

    Raises:
        ArtifactError: the gate reads other layers, was made for another model, or its head is not linear.
    """
    pm, gm = probe.manifest, gate.manifest
    if gm.layers != pm.layers:
        raise ArtifactError(f"gate reads layers {list(gm.layers)} but the probe reads {list(pm.layers)}; use the gate "
                            "calibrated together with this probe (guard calibrate writes both)")
    if gm.model_fingerprint != pm.model_fingerprint:
        raise ArtifactError(f"gate was made for model fingerprint {gm.model_fingerprint}, the probe for "
                            f"{pm.model_fingerprint}; calibrate both for the same model")
    if gate.hidden_units:
        raise ArtifactError("a gate must have a linear head (head='linear') to ride along with the probe")


def fused_head(probe: Probe, gate: Probe | None) -> Columns:
    """The folded head that scores the probe's labels, its shift head and the gate in one pass (see the module)."""
    extras = [part for part in (probe.folded_shift(), None if gate is None else _gate_columns(probe, gate))
              if part is not None]
    if not probe.hidden_units:
        w, b = probe.folded()
        if not extras:
            return None, None, w, b
        return (None, None, np.ascontiguousarray(np.concatenate([w, *(e for e, _ in extras)], axis=2)),
                np.concatenate([b, *(c for _, c in extras)], axis=1))
    w1, b1, w2, b2 = probe.folded_mlp()
    if not extras:
        return w1, b1, w2, b2
    e = np.concatenate([x for x, _ in extras], axis=2)  # (L, H, n)
    c = np.concatenate([x for _, x in extras], axis=1)  # (L, n)
    n_l, m, k = w2.shape
    n = e.shape[2]
    w2_out = np.zeros((n_l, m + 2 * n, k + n), np.float32)
    w2_out[:, :m, :k] = w2
    w2_out[:, m : m + n, k:] = np.eye(n, dtype=np.float32)
    w2_out[:, m + n :, k:] = -np.eye(n, dtype=np.float32)
    return (np.ascontiguousarray(np.concatenate([w1, e, -e], axis=2)), np.concatenate([b1, c, -c], axis=1),
            w2_out, np.concatenate([b2, np.zeros((n_l, n), np.float32)], axis=1))


def _gate_columns(probe: Probe, gate: Probe) -> tuple[np.ndarray, np.ndarray]:
    check_gate(probe, gate)
    return gate.folded()


def split_columns(scores: np.ndarray, probe: Probe) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(label columns, shift columns or None, gate columns or None)`` of fused scores ``(..., columns)``."""
    k, d = len(probe.labels), probe.shift_dims
    shift = scores[..., k : k + d] if d else None
    return scores[..., :k], shift, (scores[..., k + d :] if scores.shape[-1] > k + d else None)
