"""Probe artefacts: linear or small-MLP read-outs of the residual stream, as plain data with a manifest.

A probe has ``k`` outputs (``labels``) at each of ``L`` decoder layers. For a token whose residual
stream after decoder layer ``layers[l]`` is ``h`` (HF ``hidden_states[layers[l] + 1]``) and
``z = (h - mean[l]) / scale[l]``, the manifest's ``head`` says which read-out it is::

    linear:  score[l] = z @ weight[l].T + bias[l]                                  # (k,)
    mlp:     score[l] = relu(z @ w1[l].T + b1[l]) @ weight[l].T + bias[l]          # (k,), m hidden units

On disk a probe is ``NAME.safetensors`` (tensors) beside ``NAME.json`` (the manifest). The manifest
names the model it was trained on (config fingerprint, hidden size, layer count), and
:meth:`Probe.check_model` refuses a probe built for another model. :meth:`Probe.score` is the numpy
reference every device implementation is tested against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from guard.conformal import MondrianConformal
from guard.errors import ArtifactError
from guard.manifest import check_model_fit, read_manifest
from guard.mlp_head import mlp_hidden, mlp_hidden_units
from guard.model_spec import ModelSpec
from guard.probabilities import class_probabilities
from guard.probe_manifest import PROBE_SCHEMA_VERSION, ConformalCalibration, ProbeManifest
from guard.tensorfile import load_tensors, save_tensors

__all__ = ["PROBE_SCHEMA_VERSION", "STAND_IN", "ConformalCalibration", "ProbeManifest", "Probe"]

#: the kind of a random stand-in probe (no calibration: its scores say nothing about truth)
STAND_IN = "stand-in"


class Probe:
    """A frozen probe (linear or one-hidden-layer MLP head) over one or more decoder layers.

    Args:
        manifest: the probe's manifest; ``manifest.head`` decides which tensors are required.
        weight: ``(L, k, H)`` read-out weights (``(L, k, m)`` for an MLP head).
        bias: ``(L, k)``.
        mean: ``(L, H)`` centring applied before the read-out (zeros for none).
        scale: ``(L, H)`` positive scaling applied before the read-out (ones for none).
        w1: ``(L, m, H)`` hidden-layer weights of an MLP head (``None`` for a linear head).
        b1: ``(L, m)`` hidden-layer biases of an MLP head.
        shift_weight: ``(L, d, H)`` the shift head's read-outs on standardised rows, one per calibration domain
            (``manifest.shift``; see :mod:`guard.shift`), ``None`` for a probe without one.
        shift_bias: ``(L, d)``.

    Raises:
        ArtifactError: a tensor is missing, superfluous, non-finite, or its shape disagrees with the manifest.

    Example:
        >>> p = Probe.random(ModelSpec(model_type="llama", hidden_size=4, num_layers=2, fingerprint="x"), layers=(0,))
        >>> p.score(np.zeros((3, 1, 4), np.float32)).shape
        (3, 1, 1)
    """

    def __init__(self, manifest: ProbeManifest, weight: np.ndarray, bias: np.ndarray,
                 mean: np.ndarray, scale: np.ndarray, w1: np.ndarray | None = None,
                 b1: np.ndarray | None = None, shift_weight: np.ndarray | None = None,
                 shift_bias: np.ndarray | None = None) -> None:
        self.manifest = manifest
        n_l, k, h = len(manifest.layers), len(manifest.labels), manifest.hidden_size
        arrays = {"weight": weight, "bias": bias, "mean": mean, "scale": scale}
        m = mlp_hidden_units(manifest.head, manifest.layers, h, w1, b1)
        expected = {"weight": (n_l, k, m or h), "bias": (n_l, k), "mean": (n_l, h), "scale": (n_l, h)}
        if w1 is not None and b1 is not None:  # both exactly when m > 0 (mlp_hidden_units checked)
            arrays |= {"w1": w1, "b1": b1}
            expected |= {"w1": (n_l, m, h), "b1": (n_l, m)}
        d = 0 if manifest.shift is None else manifest.shift.dims
        if (shift_weight is None or shift_bias is None) != (d == 0):
            raise ArtifactError(f"probe has {'a' if d else 'no'} shift calibration in its manifest but "
                                f"{'lacks' if d else 'carries'} shift tensors; re-export the probe")
        if shift_weight is not None and shift_bias is not None:
            arrays |= {"shift_weight": shift_weight, "shift_bias": shift_bias}
            expected |= {"shift_weight": (n_l, d, h), "shift_bias": (n_l, d)}
        for name, arr in arrays.items():
            if tuple(arr.shape) != expected[name]:
                units = (f", {m} hidden units from 'w1'" if m else "") + (f", {d} shift domains" if d else "")
                raise ArtifactError(
                    f"probe tensor {name!r} has shape {tuple(arr.shape)} but the manifest (head={manifest.head!r}, "
                    f"layers={list(manifest.layers)}, labels={list(manifest.labels)}, hidden_size={h}{units}) "
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
        self.w1 = None if w1 is None else np.asarray(w1, np.float32)
        self.b1 = None if b1 is None else np.asarray(b1, np.float32)
        self.shift_weight = None if shift_weight is None else np.asarray(shift_weight, np.float32)
        self.shift_bias = None if shift_bias is None else np.asarray(shift_bias, np.float32)

    @property
    def layers(self) -> tuple[int, ...]:
        """Decoder layer indices the probe reads."""
        return self.manifest.layers

    @property
    def is_stand_in(self) -> bool:
        """Whether this is a random stand-in (``Probe.random``): its verdicts say nothing about truth."""
        return self.manifest.kind == STAND_IN

    @property
    def labels(self) -> tuple[str, ...]:
        """Names of the probe's outputs."""
        return self.manifest.labels

    @property
    def shift_dims(self) -> int:
        """Columns of the shift head (0 without one); they follow the labels' columns in the engine's rows."""
        return 0 if self.shift_weight is None else self.shift_weight.shape[1]

    @property
    def outputs(self) -> int:
        """Columns the probe contributes to an engine score row: its labels', then its shift head's."""
        return len(self.labels) + self.shift_dims

    @property
    def hidden_units(self) -> int:
        """Hidden units ``m`` of an MLP head; 0 for a linear head."""
        return 0 if self.w1 is None else self.w1.shape[1]

    def score(self, hidden: np.ndarray) -> np.ndarray:
        """Numpy reference: ``(n, L, H)`` residual-stream rows -> ``(n, L, k)`` scores (float64 maths)."""
        hidden = np.asarray(hidden, np.float64)
        if hidden.ndim != 3 or hidden.shape[1:] != (len(self.layers), self.manifest.hidden_size):
            raise ArtifactError(
                f"probe expects hidden rows of shape (n, {len(self.layers)}, {self.manifest.hidden_size}), "
                f"got {hidden.shape}"
            )
        z = (hidden - self.mean) / self.scale  # (n, L, H)
        if self.w1 is not None and self.b1 is not None:  # an MLP head holds both (checked on load)
            z = mlp_hidden(z, self.w1, self.b1)  # (n, L, m)
        scores: np.ndarray = np.einsum("nlh,lkh->nlk", z, self.weight.astype(np.float64)) + self.bias
        return scores

    def shift_columns(self, hidden: np.ndarray) -> np.ndarray:
        """Numpy reference of the shift head: ``(n, L, H)`` rows -> ``(n, L, d)`` (see :mod:`guard.shift`).

        Raises:
            ArtifactError: the probe has no shift head, or the rows have the wrong shape.
        """
        if self.shift_weight is None or self.shift_bias is None:
            raise ArtifactError(f"probe {self.manifest.kind!r} has no shift head; re-run `guard calibrate`")
        hidden = np.asarray(hidden, np.float64)
        if hidden.ndim != 3 or hidden.shape[1:] != (len(self.layers), self.manifest.hidden_size):
            raise ArtifactError(f"probe expects hidden rows of shape (n, {len(self.layers)}, "
                                f"{self.manifest.hidden_size}), got {hidden.shape}")
        z = (hidden - self.mean) / self.scale
        out: np.ndarray = np.einsum("nlh,ldh->nld", z, self.shift_weight.astype(np.float64)) + self.shift_bias
        return out

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` from per-token scores ``(n, L, k)``: layers averaged, then softmax."""
        return class_probabilities(scores)

    def conformal(self) -> MondrianConformal | None:
        """The manifest's split-conformal calibration as fitted sets (``None`` when the probe has none).

        Built from the stored calibration scores when the manifest has them (p-values, any alpha), else
        from the thresholds (sets at the calibrated alpha only).
        """
        conf = self.manifest.conformal
        if conf is None:
            return None
        if conf.scores is not None:
            return MondrianConformal.from_scores(conf.alpha, [conf.scores[label] for label in self.labels])
        return MondrianConformal.from_thresholds(conf.alpha, [conf.thresholds[label] for label in self.labels])

    def calibrated(self, alpha: float | None = None, p_values: bool = False) -> MondrianConformal:
        """The fitted sets, checked to serve ``alpha`` (``None``: the calibrated one) and, if asked, p-values.

        Raises:
            ArtifactError: no conformal calibration, or one without calibration scores asked for
                another alpha or for p-values (names the calibrated alpha and the fix).
        """
        sets = self.conformal()
        if sets is None:
            raise ArtifactError(f"probe {self.manifest.kind!r} has no conformal calibration; run guard calibrate")
        if sets.scores is None and (p_values or alpha not in (None, sets.alpha)):
            wanted = "p-values" if p_values else f"sets at alpha={alpha}"
            raise ArtifactError(
                f"probe {self.manifest.kind!r} was calibrated at alpha={sets.alpha} and its manifest stores no "
                f"calibration scores, so {wanted} cannot be computed; re-run `guard calibrate` to store them "
                f"(or use alpha={sets.alpha})"
            )
        return sets

    def p_values(self, probs: np.ndarray) -> np.ndarray:
        """Mondrian conformal p-values ``(n, k)`` of class probabilities ``(n, k)``, in label order.

        Raises:
            ArtifactError: no conformal calibration, or one without stored calibration scores.
        """
        return self.calibrated(p_values=True).p_values(probs)

    def prediction_sets(self, probs: np.ndarray, alpha: float | None = None) -> list[tuple[str, ...]]:
        """Conformal label sets for class probabilities ``(n, k)`` at ``alpha`` (default: the calibrated one).

        Raises:
            ArtifactError: see :meth:`calibrated`.
            ConfigError: ``alpha`` is not strictly between 0 and 1.
        """
        inside = self.calibrated(alpha).predict_sets(probs, alpha)
        return [tuple(label for label, keep in zip(self.labels, row) if keep) for row in inside]

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights of a linear head with the normalisation folded in, for one matmul per layer on a device.

        Returns:
            ``(w, b)`` with ``w`` of shape ``(L, H, k)`` and ``b`` ``(L, k)`` such that
            ``score[l] = h @ w[l] + b[l]``.

        Raises:
            ArtifactError: the probe has an MLP head (use :meth:`folded_mlp`).
        """
        if self.w1 is not None:
            raise ArtifactError(f"probe {self.manifest.kind!r} has an MLP head; "
                                "fold it with folded_mlp(), not folded()")
        return self._fold(self.weight, self.bias)

    def folded_mlp(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weights of an MLP head with the normalisation folded into the first matmul.

        Returns:
            ``(w1, b1, w2, b2)`` of shapes ``(L, H, m)``, ``(L, m)``, ``(L, m, k)``, ``(L, k)`` such that
            ``score[l] = relu(h @ w1[l] + b1[l]) @ w2[l] + b2[l]``.

        Raises:
            ArtifactError: the probe has a linear head (use :meth:`folded`).
        """
        if self.w1 is None or self.b1 is None:
            raise ArtifactError(f"probe {self.manifest.kind!r} has a linear head; "
                                "fold it with folded(), not folded_mlp()")
        w1, b1 = self._fold(self.w1, self.b1)
        return w1, b1, np.ascontiguousarray(self.weight.transpose(0, 2, 1)), self.bias.copy()

    def folded_shift(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The shift head with the normalisation folded in: ``(L, H, d)``, ``(L, d)`` (``None`` without one)."""
        if self.shift_weight is None or self.shift_bias is None:
            return None
        return self._fold(self.shift_weight, self.shift_bias)

    def _fold(self, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(L, o, H)`` weights on standardised rows -> ``(L, H, o)`` weights and ``(L, o)`` biases on raw rows."""
        w = w.astype(np.float64) / self.scale[:, None, :]  # (L, o, H)
        b = b - np.einsum("loh,lh->lo", w, self.mean.astype(np.float64))
        return np.ascontiguousarray(w.transpose(0, 2, 1), np.float32), b.astype(np.float32)

    def check_model(self, spec: ModelSpec, model_id: str = "") -> None:
        """Refuse a probe that was not made for ``spec``.

        Raises:
            ArtifactError: hidden size, layer count, layer range or config fingerprint disagree.
        """
        check_model_fit(self.manifest, spec, model_id, "probe", "reads",
                        f"run `guard calibrate --model {model_id or '<model>'}` to build a probe for this model")

    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` and ``PATH.json``; returns the tensor file's path."""
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}
        if self.w1 is not None and self.b1 is not None:
            tensors |= {"w1": self.w1, "b1": self.b1}
        if self.shift_weight is not None and self.shift_bias is not None:
            tensors |= {"shift_weight": self.shift_weight, "shift_bias": self.shift_bias}
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
        manifest = read_manifest(base.with_suffix(".json"), "probe", PROBE_SCHEMA_VERSION, ProbeManifest,
                                 "re-export the probe")
        tensors, _ = load_tensors(base.with_suffix(".safetensors"))
        required = ({"weight", "bias", "mean", "scale"} | ({"w1", "b1"} if manifest.head == "mlp" else set())
                    | ({"shift_weight", "shift_bias"} if manifest.shift is not None else set()))
        missing = required - tensors.keys()
        if missing:
            raise ArtifactError(
                f"probe file {str(base.with_suffix('.safetensors'))!r} lacks tensors {sorted(missing)} "
                f"(head={manifest.head!r}); re-export it"
            )
        return cls(manifest, tensors["weight"], tensors["bias"], tensors["mean"], tensors["scale"],
                   tensors.get("w1"), tensors.get("b1"), tensors.get("shift_weight"), tensors.get("shift_bias"))

    @classmethod
    def random(cls, spec: ModelSpec, layers: tuple[int, ...], labels: tuple[str, ...] = ("score",),
               seed: int = 0, model_id: str = "", kind: str = STAND_IN, undecided: bool = False) -> Probe:
        """A probe with random unit directions: a clearly labelled stand-in, not a calibrated probe.

        With ``undecided`` its conformal calibration puts every label in every prediction set, so a server can
        run with it and every verdict is ``uncertain`` (it never certifies nor flags anything).
        """
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((len(layers), len(labels), spec.hidden_size)).astype(np.float32)
        w /= np.linalg.norm(w, axis=-1, keepdims=True)
        manifest = ProbeManifest(
            kind=kind, labels=labels, layers=layers, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
            model_fingerprint=spec.fingerprint, model_id=model_id,
            description="random unit directions; NOT calibrated: scores carry no meaning about truth",
            conformal=ConformalCalibration(alpha=0.1, thresholds={label: 1.0 for label in labels},
                                           n_cal={label: 0 for label in labels}) if undecided else None,
        )
        zeros = np.zeros((len(layers), spec.hidden_size), np.float32)
        return cls(manifest, w, np.zeros((len(layers), len(labels)), np.float32), zeros, zeros + 1)
