"""From fitted layers to a :class:`guard.probe.Probe`: tensors, shift head and manifest.

Also the scoring of items exactly as the engine will score them (last token, or the maximum over a
statement's token bag for multiple-instance probes), so calibration measures what serving serves.
"""

from __future__ import annotations

import numpy as np

from calibration.families import fit_layer, layer_scores
from calibration.mil import fit_mil_one_vs_rest
from calibration.shift_fit import DomainHead
from calibration.statements import LABELS
from guard.model_spec import ModelSpec
from guard.probe import ConformalCalibration, Probe, ProbeManifest
from guard.probe_manifest import Dtype
from guard.shift import ShiftCalibration

__all__ = ["KINDS", "fit_probe_layer", "item_scores", "probe_from", "bags"]

KINDS = {"logistic": "one-vs-rest-logistic", "mass-mean": "one-vs-rest-mass-mean", "mil": "one-vs-rest-mil",
         "mlp": "softmax-mlp"}

Fit = tuple[np.ndarray, ...]


def bags(feats: dict[str, np.ndarray], li: int) -> list[np.ndarray]:
    """Each statement's token rows at sweep layer ``li`` (features collected with ``keep_tokens``)."""
    ends = np.append(feats["starts"][1:], len(feats["tokens"]))
    return [feats["tokens"][a:b, li].astype(np.float64) for a, b in zip(feats["starts"], ends)]


def fit_probe_layer(family: str, feats: dict[str, np.ndarray], li: int, labels: np.ndarray, train: np.ndarray,
                    l2: float, seed: int = 0) -> Fit:
    """One layer's tensors: ``(weight, bias, mean, scale)``, or ``(w1, b1, w2, b2, mean, scale)`` for ``mlp``."""
    if family == "mil":
        layer_bags = bags(feats, li)
        return fit_mil_one_vs_rest([layer_bags[i] for i in train], labels[train], len(LABELS), l2=l2, iters=200)
    return fit_layer(family, feats["last"][train, li], labels[train], len(LABELS), l2, seed)


def item_scores(family: str, feats: dict[str, np.ndarray], li: int, idx: np.ndarray, fit: Fit) -> np.ndarray:
    """Per-item class scores of one layer as the engine aggregates them: last token, or max over a bag."""
    if family != "mil":
        return layer_scores(family, feats["last"][idx, li], fit)
    layer_bags = bags(feats, li)
    weight, bias, mean, scale = fit
    return np.stack([(((layer_bags[i] - mean) / scale) @ weight.T + bias).max(axis=0) for i in idx])


def probe_from(fits: list[Fit], layers: tuple[int, ...], family: str, spec: ModelSpec, model_id: str,
               metrics: dict[str, float], conformal: ConformalCalibration, seed: int,
               shift: tuple[DomainHead, ShiftCalibration] | None = None, description: str = "",
               dtype: Dtype = "float32") -> Probe:
    """The probe artefact of per-layer fits (and the shift head, the same read-out at every layer)."""
    pooling = "the maximum over a span's tokens" if family == "mil" else "the last token"
    manifest = ProbeManifest(
        kind=KINDS[family], labels=LABELS, layers=layers, hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, model_fingerprint=spec.fingerprint, model_id=model_id,
        description=description or (f"true/false/neither read-out of the residual stream at layers {list(layers)} "
                                    f"(averaged; {pooling}), trained on guard's own statements of facts the model "
                                    f"knows (split seed {seed})"),
        metrics=metrics, conformal=conformal, pooling="max" if family == "mil" else "last",
        head="mlp" if family == "mlp" else "linear", shift=None if shift is None else shift[1], dtype=dtype,
    )
    stacked = [np.stack([f[i] for f in fits]).astype(np.float32) for i in range(len(fits[0]))]
    extra: dict[str, np.ndarray] = {}
    if shift is not None:
        head = shift[0]
        extra = {"shift_weight": np.repeat(head.weight[None], len(layers), axis=0).astype(np.float32),
                 "shift_bias": np.repeat(head.bias[None], len(layers), axis=0).astype(np.float32)}
    if family == "mlp":
        w1, b1, weight, bias, mean, scale = stacked
        return Probe(manifest, weight, bias, mean, scale, w1=w1, b1=b1, **extra)
    return Probe(manifest, *stacked, **extra)
