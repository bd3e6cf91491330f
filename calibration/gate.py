"""Know before answering: a pre-generation gate that predicts, from the question alone, whether the
model's answer will be correct.

Features are the residual stream of the question's last prompt token (the state the model is in
right before it answers) at the answer probe's layers; labels are the model's own graded answers.
One L2-regularised logistic read-out per layer, averaged, is stored as an ordinary probe artefact
with labels ``("incorrect", "correct")`` (the ``incorrect`` row is zero, so the softmax of the
averaged scores is the sigmoid of the averaged logit) — the engine scores it like any other probe.
A Learn-then-Test calibration on a disjoint split certifies the threshold: answering only when
``p(correct) >= threshold`` keeps the error rate among answered questions ``<= alpha`` with
probability ``>= 1 - delta``.
"""

from __future__ import annotations

import numpy as np

from calibration.fit import fit_logistic
from guard.errors import ConfigError
from guard.model_spec import ModelSpec
from guard.probe import Probe, ProbeManifest
from guard.probe_manifest import Dtype
from guard.selective import SelectiveCalibration
from guard.shipped import GATE_KIND

__all__ = ["GATE_LABELS", "GATE_L2", "fit_gate", "fit_layers", "cross_fitted_confidence"]

GATE_LABELS = ("incorrect", "correct")
#: ridge penalty on standardised features (few hundred questions, hundreds of dimensions)
GATE_L2 = 100.0


def fit_layers(rows: np.ndarray, correct: np.ndarray, l2: float) -> tuple[np.ndarray, ...]:
    """Per-layer logistic read-outs as probe tensors ``(weight (L, 2, H), bias (L, 2), mean, scale)``."""
    n_layers, h = rows.shape[1], rows.shape[2]
    weight = np.zeros((n_layers, 2, h))
    bias, mean, scale = np.zeros((n_layers, 2)), np.zeros((n_layers, h)), np.ones((n_layers, h))
    for li in range(n_layers):
        w, b, mean[li], scale[li] = fit_logistic(rows[:, li], correct, l2=l2)
        weight[li, 1], bias[li, 1] = w, b
    return tuple(a.astype(np.float32) for a in (weight, bias, mean, scale))


def _check(prompt_rows: np.ndarray, correct: np.ndarray, train: np.ndarray,
           n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    prompt_rows, correct = np.asarray(prompt_rows, np.float64), np.asarray(correct, bool)
    if prompt_rows.ndim != 3 or prompt_rows.shape[:2] != (len(correct), n_layers):
        raise ConfigError(f"gate features {prompt_rows.shape} do not match {len(correct)} answers at {n_layers} layers")
    if correct[train].all() or not correct[train].any():
        raise ConfigError(f"the gate's training split has {int(correct[train].sum())} correct answers of {len(train)}; "
                          "it needs both correct and incorrect answers (use more or harder questions)")
    return prompt_rows, correct


def _p_correct(tensors: tuple[np.ndarray, ...], rows: np.ndarray) -> np.ndarray:
    weight, bias, mean, scale = (t.astype(np.float64) for t in tensors)
    logits = np.einsum("nlh,lkh->nlk", (rows - mean) / scale, weight) + bias  # (n, L, 2)
    z = logits.mean(axis=1)
    p: np.ndarray = 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))
    return p


def cross_fitted_confidence(prompt_rows: np.ndarray, correct: np.ndarray, folds: int = 5, seed: int = 0,
                            l2: float = GATE_L2) -> np.ndarray:
    """Out-of-fold ``p(correct)`` for every item: each fold scored by a gate fitted on the others.

    Lets selective answering be evaluated on *all* graded answers without the gate ever scoring an
    item it was trained on (small QA sets cannot afford a third split).

    Raises:
        ConfigError: a training fold lacks correct or incorrect answers, or fewer items than folds.
    """
    correct = np.asarray(correct, bool)
    if len(correct) < folds:
        raise ConfigError(f"cross-fitting over {folds} folds needs at least {folds} answers; got {len(correct)}")
    order = np.random.default_rng(seed).permutation(len(correct))
    rows = np.asarray(prompt_rows, np.float64)  # converted once, not per fold
    out = np.zeros(len(correct))
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part)
        _check(rows, correct, train, rows.shape[1])
        out[part] = _p_correct(fit_layers(rows[train], correct[train], l2), rows[part])
    return out


def fit_gate(prompt_rows: np.ndarray, correct: np.ndarray, train: np.ndarray, cal: np.ndarray,
             layers: tuple[int, ...], spec: ModelSpec, model_id: str, alpha: float = 0.3, delta: float = 0.1,
             l2: float = GATE_L2, metrics: dict[str, float] | None = None, dtype: Dtype = "float32") -> Probe:
    """Fit the gate on ``train`` and certify its selective threshold on the disjoint ``cal`` split.

    Args:
        prompt_rows: ``(n, L, H)`` last-prompt-token rows at ``layers``.
        correct: ``(n,)`` graded answers.
        metrics: held-out quality to record in the manifest (e.g. cross-fitted AUROC).
        dtype: the engine dtype the rows were captured in (its probe's).

    Raises:
        ConfigError: shapes disagree, or the training split lacks correct or incorrect answers.
    """
    rows, correct = _check(prompt_rows, correct, train, len(layers))
    tensors = fit_layers(rows[train], correct[train], l2)
    selective = SelectiveCalibration.fit(_p_correct(tensors, rows[cal]), correct[cal], alpha, delta, label="correct")
    manifest = ProbeManifest(
        kind=GATE_KIND, labels=GATE_LABELS, layers=layers, hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, model_fingerprint=spec.fingerprint, model_id=model_id,
        description=f"predicts from the question's last prompt token (layers {list(layers)}, averaged) whether the "
                    "model will answer correctly; trained on the model's own graded closed-book answers",
        metrics={"n_train": float(len(train)), "n_cal": float(len(cal)), "accuracy_of_answers": float(correct.mean()),
                 **(metrics or {})},
        selective=selective, dtype=dtype,
    )
    return Probe(manifest, *tensors)
