"""A probe's manifest: the JSON beside its tensors (what it reads, how it was made, its calibrations)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from guard.combiner import AnswerSampling, Combiner
from guard.conformal import MondrianConformal
from guard.errors import ConfigError
from guard.scope import QuestionScope
from guard.selective import SelectiveCalibration
from guard.shift import ShiftCalibration

__all__ = ["PROBE_SCHEMA_VERSION", "ConformalCalibration", "ProbeManifest", "dtype_warning", "Dtype"]

PROBE_SCHEMA_VERSION = 1


#: an engine dtype a probe can be calibrated in
Dtype = Literal["float32", "bfloat16", "float16"]


class ConformalCalibration(BaseModel):
    """Split-conformal thresholds fitted on a calibration split disjoint from training.

    With ``scores`` the calibration serves p-values and prediction sets at any alpha; without them
    (artefacts made before scores were stored) only sets at ``alpha``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(gt=0.0, lt=1.0)
    method: Literal["mondrian"] = "mondrian"
    #: per label: the label is in the prediction set when ``1 - p(label) <= threshold``
    thresholds: dict[str, float]
    n_cal: dict[str, int]
    #: per label: the calibration items of that label's nonconformity scores ``1 - p(label)``, sorted, 6 decimals
    scores: dict[str, list[float]] | None = None

    @model_validator(mode="after")
    def _scores_agree_with_thresholds(self) -> ConformalCalibration:
        if self.scores is None:
            return self
        labels = sorted(self.thresholds)
        if sorted(self.scores) != labels:
            raise ValueError(f"conformal scores cover labels {sorted(self.scores)} but thresholds cover {labels}; "
                             "re-run `guard calibrate`")
        try:
            refit = MondrianConformal.from_scores(self.alpha, [self.scores[label] for label in labels])
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        assert refit.counts is not None and refit.thresholds is not None  # from_scores fits both
        for label, n, again in zip(labels, refit.counts.tolist(), refit.thresholds.tolist()):
            stored = self.thresholds[label]
            if n != self.n_cal.get(label) or (np.isfinite(stored) and abs(again - stored) > 1e-6):
                raise ValueError(f"conformal scores of {label!r} "
                                 f"({n} values, threshold {again:.6f} at alpha={self.alpha}) "
                                 f"disagree with n_cal={self.n_cal.get(label)} and threshold {stored:.6f}; "
                                 "re-run `guard calibrate`")
        return self


class ProbeManifest(BaseModel):
    """The JSON manifest stored beside a probe's tensors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = PROBE_SCHEMA_VERSION
    kind: str = Field(description="how the probe was made, e.g. 'mass-mean' or 'stand-in'")
    labels: tuple[str, ...]
    layers: tuple[int, ...]
    hidden_size: int
    num_layers: int
    model_fingerprint: str
    model_id: str = ""
    description: str = ""
    #: held-out quality measured when the probe was made (e.g. ``auroc_true_vs_false``)
    metrics: dict[str, float] = Field(default_factory=dict)
    #: how a span's token scores become one verdict: the last token's, or the maximum (MIL probes)
    pooling: Literal["last", "max"] = "last"
    #: split-conformal calibration of the class probabilities (``softmax`` of the scores)
    conformal: ConformalCalibration | None = None
    #: the read-out: one matmul (``linear``), or one hidden ReLU layer of ``m`` units (``mlp``; tensors ``w1``, ``b1``)
    head: Literal["linear", "mlp"] = "linear"
    #: selective-answering calibration (Learn-then-Test) of one label's probability, e.g. a gate's ``p(correct)``
    selective: SelectiveCalibration | None = None
    #: the shift head (tensors ``shift_weight``, ``shift_bias``): when a token is too unlike the calibration data
    shift: ShiftCalibration | None = None
    #: an on-policy gate's answer combiner (:mod:`guard.answer_check`): selective answering on whole answers
    answer_combiner: Combiner | None = None
    #: an on-policy gate's second answer combiner, with the samples' agreement (``answer_samples`` requests)
    answer_sampling: AnswerSampling | None = None
    #: a pre-generation gate's scope (:mod:`guard.scope`): the question wordings it was calibrated on; it decides on
    #: those only (gates made before this field: every question)
    question_scope: QuestionScope | None = None
    #: the engine dtype the features were captured in (probes made before this field: all float32). An engine
    #: running another dtype shifts the scores the conformal sets were fitted on: it warns at install
    dtype: Dtype = "float32"


def dtype_warning(path: str | None, calibrated: str, running: str) -> str:
    """What to say when an engine runs another dtype than the one a probe was calibrated in."""
    return (f"guard: WARNING probe {path!r} was calibrated with the engine in {calibrated}, this engine runs "
            f"{running}: its scores shift and its conformal sets are not certified for that. Serve with --dtype "
            f"{calibrated} (after --), or re-run `guard calibrate` in {running}")
