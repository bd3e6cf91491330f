"""``fit -> conformalize -> export``: from the project's statements to a calibrated probe artefact.

1. Generate statements (true / false / neither) and split them (train / calibration / test,
   stratified by label, disjoint).
2. Collect last-token residual-stream features at a sweep of layers through the vLLM capture.
3. Layer sweep: a true-vs-false logistic probe per layer; the best held-out AUROC picks the layer.
4. Fit a one-vs-rest probe over {true, false, neither} at that layer on the training split.
5. Mondrian split-conformal thresholds on the calibration split.
6. Test-split metrics, then export the probe (safetensors + manifest with metrics and conformal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.activations import collect_vllm
from calibration.fit import fit_logistic, fit_one_vs_rest, softmax
from calibration.statements import LABELS, Statement, generate_statements
from guard.conformal import MondrianConformal
from guard.evaluation import accuracy, auroc, expected_calibration_error, macro_f1
from guard.model_spec import ModelSpec
from guard.probe import Probe, ProbeManifest

__all__ = ["CalibrationResult", "split_indices", "sweep_layers", "calibrate", "default_sweep"]


@dataclass
class CalibrationResult:
    """What calibration produced: the probe, where it went, and the numbers behind it."""

    probe: Probe
    path: Path | None
    layer_auroc: dict[int, float]
    metrics: dict[str, float] = field(default_factory=dict)


def default_sweep(num_layers: int) -> tuple[int, ...]:
    """Every second decoder layer from 2 up to the second-to-last."""
    return tuple(range(2, num_layers - 1, 2))


def split_indices(labels: np.ndarray, seed: int, fractions: tuple[float, float] = (0.6, 0.2)) -> tuple[np.ndarray, ...]:
    """Disjoint train / calibration / test indices, stratified by label."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b = int(len(idx) * fractions[0]), int(len(idx) * (fractions[0] + fractions[1]))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def sweep_layers(features: np.ndarray, labels: np.ndarray, train: np.ndarray, held_out: np.ndarray,
                 layers: tuple[int, ...]) -> dict[int, float]:
    """True-vs-false AUROC of a logistic probe per layer (features ``(n, L, H)``)."""
    tf_train = train[labels[train] < 2]
    tf_held = held_out[labels[held_out] < 2]
    out = {}
    for li, layer in enumerate(layers):
        x = features[:, li]
        w, b, m, s = fit_logistic(x[tf_train], labels[tf_train] == 0, l2=10.0)
        out[layer] = auroc(((x[tf_held] - m) / s) @ w + b, labels[tf_held] == 0)
    return out


def _probe_from(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray, layer: int,
                spec: ModelSpec, model_id: str, metrics: dict[str, float], conformal: dict[str, Any]) -> Probe:
    manifest = ProbeManifest(
        kind="one-vs-rest-logistic", labels=LABELS, layers=(layer,), hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, model_fingerprint=spec.fingerprint, model_id=model_id,
        description="true/false/neither read-out of the last token's residual stream, trained on guard's own statements",
        metrics=metrics, conformal=conformal,
    )
    return Probe(manifest, weight[None].astype(np.float32), bias[None].astype(np.float32),
                 mean[None].astype(np.float32), scale[None].astype(np.float32))


def calibrate(llm: Any, out: str | Path | None = None, statements: list[Statement] | None = None,
              alpha: float = 0.1, seed: int = 0, model_id: str = "") -> CalibrationResult:
    """Run the whole pipeline on a ``GuardedLLM`` started with ``capture_hidden`` at the sweep layers."""
    spec = ModelSpec.from_folder(llm.model_path)
    statements = statements or generate_statements(seed)
    labels = np.array([LABELS.index(s.label) for s in statements])
    train, cal, test = split_indices(labels, seed)
    feats = collect_vllm(llm, [s.text for s in statements], spec.fingerprint)["last"].astype(np.float64)
    layers = llm.spec.layers
    layer_auroc = sweep_layers(feats, labels, train, cal, layers)
    best = max(layer_auroc, key=layer_auroc.get)
    x = feats[:, layers.index(best)]
    weight, bias, mean, scale = fit_one_vs_rest(x[train], labels[train], len(LABELS), l2=10.0)

    def probs(idx: np.ndarray) -> np.ndarray:
        return softmax(((x[idx] - mean) / scale) @ weight.T + bias)

    cp = MondrianConformal(alpha).fit(probs(cal), labels[cal])
    p_test = probs(test)
    sets = cp.predict_sets(p_test)
    tf = labels[test] < 2
    metrics = {
        "auroc_true_vs_false": auroc(p_test[tf, 0] - p_test[tf, 1], labels[test][tf] == 0),
        "accuracy": accuracy(p_test.argmax(1), labels[test]),
        "macro_f1": macro_f1(p_test.argmax(1), labels[test], len(LABELS)),
        "ece": expected_calibration_error(p_test, labels[test]),
        "coverage": float(sets[np.arange(len(test)), labels[test]].mean()),
        "mean_set_size": float(sets.sum(1).mean()),
        "n_train": float(len(train)), "n_cal": float(len(cal)), "n_test": float(len(test)),
    }
    conformal = {"alpha": alpha, "method": "mondrian", "thresholds": dict(zip(LABELS, cp.thresholds.tolist())),
                 "n_cal": dict(zip(LABELS, cp.counts.tolist()))}
    probe = _probe_from(weight, bias, mean, scale, best, spec, model_id or str(llm.model_path), metrics, conformal)
    path = probe.save(out) if out is not None else None
    return CalibrationResult(probe, path, layer_auroc, metrics)
