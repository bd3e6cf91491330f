"""``fit -> conformalize -> export``: from the project's statements to a calibrated probe artefact.

1. Generate statements (true / false / neither) and split them (train / calibration / test,
   stratified by label, disjoint).
2. Collect last-token residual-stream features at a sweep of layers through the vLLM capture.
3. Layer sweep: a true-vs-false logistic probe per layer; the best AUROC on a validation part of
   the training split picks the layer.
4. Fit a one-vs-rest probe over {true, false, neither} at that layer on the training split
   (logistic, mass-mean, or a multiple-instance probe over the statement's token bag).
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
from calibration.mil import fit_mil_one_vs_rest
from calibration.statements import LABELS, Statement, generate_statements
from guard.conformal import MondrianConformal
from guard.errors import ConfigError
from guard.evaluation import auroc, verdict_metrics
from guard.model_spec import ModelSpec
from guard.probe import ConformalCalibration, Probe, ProbeManifest

__all__ = ["CalibrationResult", "FAMILIES", "split_indices", "sweep_layers", "calibrate", "default_sweep"]


@dataclass
class CalibrationResult:
    """What calibration produced: the probe, where it went, and the numbers behind it."""

    probe: Probe
    path: Path | None
    layer_auroc: dict[int, float]
    metrics: dict[str, float] = field(default_factory=dict)
    #: held-out class probabilities, labels and statement indices (for reports)
    test_probs: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    test_index: np.ndarray | None = None


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


FAMILIES = ("logistic", "mass-mean", "mil")
_KINDS = {"logistic": "one-vs-rest-logistic", "mass-mean": "one-vs-rest-mass-mean", "mil": "one-vs-rest-mil"}


def _probe_from(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray, layer: int, family: str,
                spec: ModelSpec, model_id: str, metrics: dict[str, float], conformal: ConformalCalibration) -> Probe:
    pooling = "the maximum over a span's tokens" if family == "mil" else "the last token"
    manifest = ProbeManifest(
        kind=_KINDS[family], labels=LABELS, layers=(layer,), hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, model_fingerprint=spec.fingerprint, model_id=model_id,
        description=f"true/false/neither read-out of the residual stream at layer {layer} ({pooling}), "
                    "trained on guard's own statements",
        metrics=metrics, conformal=conformal, pooling="max" if family == "mil" else "last",
    )
    return Probe(manifest, weight[None].astype(np.float32), bias[None].astype(np.float32),
                 mean[None].astype(np.float32), scale[None].astype(np.float32))


def _fit(family: str, feats: dict[str, np.ndarray], li: int, labels: np.ndarray, train: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if family != "mil":
        return fit_one_vs_rest(feats["last"][train, li].astype(np.float64), labels[train], len(LABELS), l2=10.0,
                               family=family)
    bags = _bags(feats, li)
    return fit_mil_one_vs_rest([bags[i] for i in train], labels[train], len(LABELS), l2=1e-2)


def _bags(feats: dict[str, np.ndarray], li: int) -> list[np.ndarray]:
    ends = np.append(feats["starts"][1:], len(feats["tokens"]))
    return [feats["tokens"][a:b, li].astype(np.float64) for a, b in zip(feats["starts"], ends)]


def _class_scores(family: str, feats: dict[str, np.ndarray], li: int, idx: np.ndarray, weight: np.ndarray,
                  bias: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-item class scores as the engine would aggregate them: last token, or max over a MIL bag."""
    if family != "mil":
        return ((feats["last"][idx, li] - mean) / scale) @ weight.T + bias
    bags = _bags(feats, li)
    return np.stack([(((bags[i] - mean) / scale) @ weight.T + bias).max(axis=0) for i in idx])


def calibrate(llm: Any, out: str | Path | None = None, statements: list[Statement] | None = None,
              alpha: float = 0.1, seed: int = 0, model_id: str = "", family: str = "logistic") -> CalibrationResult:
    """Run the whole pipeline on a ``GuardedLLM`` started with ``capture_hidden`` at the sweep layers.

    Raises:
        ConfigError: an unknown probe family, or too few calibration items for ``alpha``.
    """
    if family not in FAMILIES:
        raise ConfigError(f"probe family {family!r} is unknown; expected one of {', '.join(FAMILIES)}")
    spec = ModelSpec.from_folder(llm.model_path)
    statements = statements or generate_statements(seed)
    labels = np.array([LABELS.index(s.label) for s in statements])
    train, cal, test = split_indices(labels, seed)
    feats = collect_vllm(llm, [s.text for s in statements], spec.fingerprint, keep_tokens=family == "mil")
    layers = llm.spec.layers
    # The layer is chosen inside the training split so the calibration split stays untouched
    # (the conformal guarantee needs it exchangeable with future data, not used for selection).
    fit_part, val_part = (train[i] for i in split_indices(labels[train], seed + 1, (0.75, 0.25))[:2])
    layer_auroc = sweep_layers(feats["last"].astype(np.float64), labels, fit_part, val_part, layers)
    best = max(layer_auroc, key=layer_auroc.__getitem__)
    li = layers.index(best)
    weight, bias, mean, scale = _fit(family, feats, li, labels, train)

    def probs(idx: np.ndarray) -> np.ndarray:
        return softmax(_class_scores(family, feats, li, idx, weight, bias, mean, scale))

    cp = MondrianConformal(alpha).fit(probs(cal), labels[cal])
    p_test = probs(test)
    sets = cp.predict_sets(p_test)
    metrics = verdict_metrics(p_test, labels[test], sets)
    metrics.update({
        "n_train": float(len(train)), "n_cal": float(len(cal)), "n_test": float(len(test)),
    })
    conformal = ConformalCalibration(alpha=alpha, thresholds=dict(zip(LABELS, cp.thresholds.tolist())),
                                     n_cal=dict(zip(LABELS, cp.counts.tolist())))
    probe = _probe_from(weight, bias, mean, scale, best, family, spec, model_id or str(llm.model_path), metrics,
                        conformal)
    path = probe.save(out) if out is not None else None
    return CalibrationResult(probe, path, layer_auroc, metrics, p_test, labels[test], test)
