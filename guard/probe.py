"""Probe artefacts: linear read-outs of the residual stream, as plain data with a manifest.

A probe has ``k`` outputs (``labels``) at each of ``L`` decoder layers. For a token whose residual
stream after decoder layer ``layers[l]`` is ``h`` (HF ``hidden_states[layers[l] + 1]``)::

    score[l] = ((h - mean[l]) / scale[l]) @ weight[l].T + bias[l]        # (k,)

On disk a probe is ``NAME.safetensors`` (tensors) beside ``NAME.json`` (the manifest). The manifest
names the model it was trained on (config fingerprint, hidden size, layer count), and
:meth:`Probe.check_model` refuses a probe built for another model. :meth:`Probe.score` is the numpy
reference every device implementation is tested against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.conformal import MondrianConformal
from guard.errors import ArtifactError
from guard.model_spec import ModelSpec
from guard.tensorfile import load_tensors, save_tensors

__all__ = ["PROBE_SCHEMA_VERSION", "ConformalCalibration", "ProbeManifest", "Probe"]

PROBE_SCHEMA_VERSION = 1


class ConformalCalibration(BaseModel):
    """Split-conformal thresholds fitted on a calibration split disjoint from training."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(gt=0.0, lt=1.0)
    method: Literal["mondrian"] = "mondrian"
    #: per label: the label is in the prediction set when ``1 - p(label) <= threshold``
    thresholds: dict[str, float]
    n_cal: dict[str, int]


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


class Probe:
    """A frozen linear probe over one or more decoder layers.

    Args:
        manifest: the probe's manifest.
        weight: ``(L, k, H)`` read-out weights.
        bias: ``(L, k)``.
        mean: ``(L, H)`` centring applied before the read-out (zeros for none).
        scale: ``(L, H)`` positive scaling applied before the read-out (ones for none).

    Raises:
        ArtifactError: shapes disagree with each other or with the manifest.

    Example:
        >>> p = Probe.random(ModelSpec(model_type="llama", hidden_size=4, num_layers=2, fingerprint="x"), layers=(0,))
        >>> p.score(np.zeros((3, 1, 4), np.float32)).shape
        (3, 1, 1)
    """

    def __init__(self, manifest: ProbeManifest, weight: np.ndarray, bias: np.ndarray,
                 mean: np.ndarray, scale: np.ndarray) -> None:
        self.manifest = manifest
        n_l, k, h = len(manifest.layers), len(manifest.labels), manifest.hidden_size
        expected = {"weight": (n_l, k, h), "bias": (n_l, k), "mean": (n_l, h), "scale": (n_l, h)}
        arrays = {"weight": weight, "bias": bias, "mean": mean, "scale": scale}
        for name, arr in arrays.items():
            if tuple(arr.shape) != expected[name]:
                raise ArtifactError(
                    f"probe tensor {name!r} has shape {tuple(arr.shape)} but the manifest "
                    f"(layers={list(manifest.layers)}, labels={list(manifest.labels)}, hidden_size={h}) "
                    f"implies {expected[name]}; re-export the probe"
                )
            if not np.all(np.isfinite(arr)):
                raise ArtifactError(f"probe tensor {name!r} holds NaN or infinity; re-export the probe")
        if np.any(scale <= 0):
            raise ArtifactError("probe tensor 'scale' must be positive everywhere; re-export the probe")
        if len(set(manifest.layers)) != len(manifest.layers) or not manifest.labels:
            raise ArtifactError(f"probe layers {list(manifest.layers)} must be distinct and labels non-empty")
        self.weight = np.asarray(weight, np.float32)
        self.bias = np.asarray(bias, np.float32)
        self.mean = np.asarray(mean, np.float32)
        self.scale = np.asarray(scale, np.float32)

    @property
    def layers(self) -> tuple[int, ...]:
        """Decoder layer indices the probe reads."""
        return self.manifest.layers

    @property
    def labels(self) -> tuple[str, ...]:
        """Names of the probe's outputs."""
        return self.manifest.labels

    def score(self, hidden: np.ndarray) -> np.ndarray:
        """Numpy reference: ``(n, L, H)`` residual-stream rows -> ``(n, L, k)`` scores (float64 maths)."""
        hidden = np.asarray(hidden, np.float64)
        if hidden.ndim != 3 or hidden.shape[1:] != (len(self.layers), self.manifest.hidden_size):
            raise ArtifactError(
                f"probe expects hidden rows of shape (n, {len(self.layers)}, {self.manifest.hidden_size}), "
                f"got {hidden.shape}"
            )
        z = (hidden - self.mean) / self.scale  # (n, L, H)
        return np.einsum("nlh,lkh->nlk", z, self.weight.astype(np.float64)) + self.bias

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` from per-token scores ``(n, L, k)``: layers averaged, then softmax."""
        z = np.asarray(scores, np.float64).mean(axis=1)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def conformal(self) -> MondrianConformal | None:
        """The manifest's split-conformal thresholds as fitted sets (``None`` when the probe has none)."""
        conf = self.manifest.conformal
        if conf is None:
            return None
        return MondrianConformal.from_thresholds(conf.alpha, [conf.thresholds[label] for label in self.labels])

    def prediction_sets(self, probs: np.ndarray) -> list[tuple[str, ...]]:
        """Conformal label sets for class probabilities ``(n, k)``.

        Raises:
            ArtifactError: the probe carries no conformal calibration.
        """
        sets = self.conformal()
        if sets is None:
            raise ArtifactError(f"probe {self.manifest.kind!r} has no conformal calibration; run guard calibrate")
        inside = sets.predict_sets(probs)
        return [tuple(label for label, keep in zip(self.labels, row) if keep) for row in inside]

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights with the normalisation folded in, for one matmul per layer on a device.

        Returns:
            ``(w, b)`` with ``w`` of shape ``(L, H, k)`` and ``b`` ``(L, k)`` such that
            ``score[l] = h @ w[l] + b[l]``.
        """
        w = self.weight.astype(np.float64) / self.scale[:, None, :]  # (L, k, H)
        b = self.bias - np.einsum("lkh,lh->lk", w, self.mean.astype(np.float64))
        return np.ascontiguousarray(w.transpose(0, 2, 1), np.float32), b.astype(np.float32)

    def check_model(self, spec: ModelSpec, model_id: str = "") -> None:
        """Refuse a probe that was not made for ``spec``.

        Raises:
            ArtifactError: hidden size, layer count, layer range or config fingerprint disagree.
        """
        m = self.manifest
        fix = f"run `guard calibrate --model {model_id or '<model>'}` to build a probe for this model"
        if m.hidden_size != spec.hidden_size:
            raise ArtifactError(f"probe expects hidden_size={m.hidden_size} but model {model_id!r} has {spec.hidden_size}; {fix}")
        if m.num_layers != spec.num_layers:
            raise ArtifactError(f"probe expects {m.num_layers} layers but model {model_id!r} has {spec.num_layers}; {fix}")
        bad = [layer for layer in m.layers if not 0 <= layer < spec.num_layers]
        if bad:
            raise ArtifactError(f"probe reads layers {bad}, outside 0..{spec.num_layers - 1} of model {model_id!r}; {fix}")
        if m.model_fingerprint != spec.fingerprint:
            raise ArtifactError(
                f"probe was made for a model with config fingerprint {m.model_fingerprint} but model "
                f"{model_id!r} has {spec.fingerprint}; {fix}"
            )

    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` and ``PATH.json``; returns the tensor file's path."""
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}
        save_tensors(base.with_suffix(".safetensors"), tensors, {"format": "guard-probe"})
        base.with_suffix(".json").write_text(self.manifest.model_dump_json(indent=2) + "\n")
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        """Load a probe from ``PATH.safetensors`` + ``PATH.json`` (either name may be given).

        Raises:
            ArtifactError: a file is missing or corrupt, or the manifest is invalid or of another schema.
        """
        base = Path(path).with_suffix("")
        manifest_path = base.with_suffix(".json")
        try:
            raw = json.loads(manifest_path.read_text())
        except OSError as exc:
            raise ArtifactError(f"probe manifest {str(manifest_path)!r} is missing ({exc.strerror}); export the probe with its .json") from exc
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"probe manifest {str(manifest_path)!r} is not valid JSON ({exc}); re-export the probe") from exc
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != PROBE_SCHEMA_VERSION:
            raise ArtifactError(
                f"probe manifest {str(manifest_path)!r} has schema_version={version!r}; this guard reads "
                f"version {PROBE_SCHEMA_VERSION}; re-export the probe with this guard version"
            )
        try:
            manifest = ProbeManifest.model_validate(raw)
        except ValidationError as exc:
            raise ArtifactError(f"probe manifest {str(manifest_path)!r} is invalid: {exc}") from exc
        tensors, _ = load_tensors(base.with_suffix(".safetensors"))
        missing = {"weight", "bias", "mean", "scale"} - tensors.keys()
        if missing:
            raise ArtifactError(f"probe file {str(base.with_suffix('.safetensors'))!r} lacks tensors {sorted(missing)}; re-export it")
        return cls(manifest, tensors["weight"], tensors["bias"], tensors["mean"], tensors["scale"])

    @classmethod
    def random(cls, spec: ModelSpec, layers: tuple[int, ...], labels: tuple[str, ...] = ("score",),
               seed: int = 0, model_id: str = "", kind: str = "stand-in") -> Probe:
        """A probe with random unit directions: a clearly labelled stand-in, not a calibrated probe."""
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((len(layers), len(labels), spec.hidden_size)).astype(np.float32)
        w /= np.linalg.norm(w, axis=-1, keepdims=True)
        manifest = ProbeManifest(
            kind=kind, labels=labels, layers=layers, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
            model_fingerprint=spec.fingerprint, model_id=model_id,
            description="random unit directions; NOT calibrated: scores carry no meaning about truth",
        )
        zeros = np.zeros((len(layers), spec.hidden_size), np.float32)
        return cls(manifest, w, np.zeros((len(layers), len(labels)), np.float32), zeros, zeros + 1)
