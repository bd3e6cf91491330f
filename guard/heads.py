"""One engine, two read-outs: the answer probe and the pre-generation gate fused into one matmul.

A gate (see ``calibration.gate``) reads the same layers as the answer probe, so the worker can
score both with a single ``addmm`` per layer: the folded weights are concatenated along the output
axis, and every published score row holds the probe's ``k`` columns followed by the gate's. The
consumer splits them again with :func:`split_columns`. Only linear heads fuse; an MLP probe serves
without a gate.
"""

from __future__ import annotations

import numpy as np

from guard.errors import ArtifactError
from guard.probe import Probe

__all__ = ["check_gate", "fused_linear", "split_columns"]


def check_gate(probe: Probe, gate: Probe) -> None:
    """Refuse a gate that cannot ride along with ``probe``.

    Raises:
        ArtifactError: the gate reads other layers, was made for another model, or a head is not linear.
    """
    pm, gm = probe.manifest, gate.manifest
    if gm.layers != pm.layers:
        raise ArtifactError(f"gate reads layers {list(gm.layers)} but the probe reads {list(pm.layers)}; use the gate "
                            "calibrated together with this probe (guard calibrate writes both)")
    if gm.model_fingerprint != pm.model_fingerprint:
        raise ArtifactError(f"gate was made for model fingerprint {gm.model_fingerprint}, the probe for "
                            f"{pm.model_fingerprint}; calibrate both for the same model")
    if probe.hidden_units or gate.hidden_units:
        raise ArtifactError("a gate fuses only with a linear probe (head='linear'); serve the MLP probe without a gate")


def fused_linear(probe: Probe, gate: Probe | None) -> tuple[np.ndarray, np.ndarray]:
    """Folded ``(w (L, H, k_probe + k_gate), b (L, k_probe + k_gate))``; just the probe's without a gate."""
    w, b = probe.folded()
    if gate is None:
        return w, b
    check_gate(probe, gate)
    gw, gb = gate.folded()
    return np.ascontiguousarray(np.concatenate([w, gw], axis=2)), np.concatenate([b, gb], axis=1)


def split_columns(scores: np.ndarray, probe: Probe) -> tuple[np.ndarray, np.ndarray | None]:
    """``(probe columns, gate columns or None)`` of fused scores ``(..., k_probe [+ k_gate])``."""
    k = len(probe.labels)
    return scores[..., :k], (scores[..., k:] if scores.shape[-1] > k else None)
