"""Steering-vector artefacts: one direction per decoder layer, added to the residual stream.

A steering vector holds ``vectors (L, H)`` float32 for the decoder ``layers`` it steers. A request
that steers with strength ``alpha`` gets ``alpha * vectors[l]`` added to the residual stream after
decoder layer ``layers[l]`` (HF ``hidden_states[layers[l] + 1]``) at the token positions it chose;
:meth:`SteeringVector.apply` is the numpy reference of that addition.

Strength is bounded: a request may move a steered row by at most :data:`MAX_SHIFT` times the
median residual-stream norm the vector was built against (``residual_norm`` in the manifest), so
``|alpha| <= MAX_SHIFT * residual_norm / max(norms)`` (:attr:`SteeringVector.max_alpha`). Past that
the residual stream leaves the range the model was trained on, and values that overflow to
infinity there are written into the KV cache, whose blocks later requests reuse.

On disk a steering vector is ``NAME.safetensors`` (tensors) beside ``NAME.json`` (the manifest),
like a probe. The manifest names the model it was made for, and :meth:`SteeringVector.check_model`
refuses a vector made for another model. The device copy and the hook live in ``adapters.vllm``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from guard.errors import ArtifactError
from guard.manifest import check_model_fit, read_manifest
from guard.model_spec import ModelSpec
from guard.tensorfile import load_tensors, save_tensors

__all__ = ["MAX_SHIFT", "STEERING_SCHEMA_VERSION", "SteeringManifest", "SteeringVector", "strength_limit",
           "within_bound"]

STEERING_SCHEMA_VERSION = 1
#: the most a request may move a steered row, in median residual-stream norms
#: (``|alpha| * norm <= this * residual_norm``)
MAX_SHIFT = 4.0


def within_bound(alpha: float, max_alpha: float) -> bool:
    """Whether ``alpha`` is a finite strength within ``[-max_alpha, max_alpha]``."""
    return math.isfinite(alpha) and abs(alpha) <= max_alpha


def strength_limit(max_alpha: float) -> str:
    """The bound on steering strengths, and why, for error messages.

    Example:
        >>> strength_limit(4.0)[:52]
        'steering strengths must be finite and within [-4, 4]'
    """
    return (f"steering strengths must be finite and within [-{max_alpha:.4g}, {max_alpha:.4g}] for this steering "
            f"vector (a steered row may move by at most {MAX_SHIFT:g} median residual-stream norms; more drives the "
            "model's hidden states out of range)")


class SteeringManifest(BaseModel):
    """The JSON manifest stored beside a steering vector's tensors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = STEERING_SCHEMA_VERSION
    kind: str = Field(description="how the directions were made, e.g. 'mean-difference'")
    layers: tuple[int, ...] = Field(min_length=1)
    hidden_size: int
    num_layers: int
    model_fingerprint: str
    model_id: str = ""
    description: str = ""
    #: Euclidean norm of each layer's vector, in ``layers`` order (a record of the scale alpha multiplies)
    norms: tuple[float, ...] = ()
    #: the strength a request gets when it asks to steer without one (``None``: it must give one)
    default_alpha: float | None = Field(default=None, allow_inf_nan=False)
    #: median Euclidean norm of the residual stream at the steered layers when the vector was built
    #: (``None``: unknown; the largest vector norm stands in for it, so ``|alpha| <= MAX_SHIFT``)
    residual_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class SteeringVector:
    """A frozen set of steering directions, one per steered decoder layer.

    Args:
        manifest: the manifest; ``norms`` is recomputed from ``vectors``.
        vectors: ``(L, H)`` directions for ``manifest.layers``.

    Raises:
        ArtifactError: the vectors' shape disagrees with the manifest, or they hold NaN/infinity.

    Example:
        >>> spec = ModelSpec(model_type="llama", hidden_size=4, num_layers=2, fingerprint="x")
        >>> sv = SteeringVector.from_vectors(np.ones((1, 4), np.float32), (1,), spec, kind="demo")
        >>> sv.apply(np.zeros((2, 1, 4), np.float32), alpha=0.5)[0, 0].tolist()
        [0.5, 0.5, 0.5, 0.5]
    """

    def __init__(self, manifest: SteeringManifest, vectors: np.ndarray) -> None:
        expected = (len(manifest.layers), manifest.hidden_size)
        if tuple(np.shape(vectors)) != expected:
            raise ArtifactError(
                f"steering tensor 'vectors' has shape {tuple(np.shape(vectors))} but the manifest "
                f"(layers={list(manifest.layers)}, hidden_size={manifest.hidden_size}) implies {expected}; "
                "rebuild the steering vector for this model"
            )
        if not np.all(np.isfinite(vectors)):
            raise ArtifactError("steering tensor 'vectors' holds NaN or infinity; rebuild the steering vector")
        if len(set(manifest.layers)) != len(manifest.layers) or any(x < 0 for x in manifest.layers):
            raise ArtifactError(f"steering layers {list(manifest.layers)} must be distinct non-negative indices")
        self.vectors = np.asarray(vectors, np.float32)
        norms = tuple(float(n) for n in np.linalg.norm(self.vectors.astype(np.float64), axis=-1))
        if max(norms) == 0.0:
            raise ArtifactError("steering tensor 'vectors' is all zeros: it steers nowhere; "
                                "rebuild the steering vector")
        self.manifest = manifest.model_copy(update={"norms": norms})
        # rounded to 6 decimals: a vector scaled to the residual norm and stored in float32 reads back a hair
        # longer than it, and that noise must not refuse the bound itself (alpha = MAX_SHIFT)
        self.max_alpha = round(MAX_SHIFT * (manifest.residual_norm or max(norms)) / max(norms), 6)
        if manifest.default_alpha is not None and not self.allows(manifest.default_alpha):
            raise ArtifactError(f"the steering manifest's default_alpha={manifest.default_alpha!r} is out of range: "
                                f"{self.limit_text()}; rebuild with a smaller --default-alpha")

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, layers: tuple[int, ...], spec: ModelSpec, kind: str,
                     model_id: str = "", description: str = "", default_alpha: float | None = None,
                     residual_norm: float | None = None) -> SteeringVector:
        """Wrap ``(L, H)`` directions for ``layers`` of the model described by ``spec``.

        ``residual_norm`` is the median residual-stream norm at those layers (it bounds the strength).
        """
        manifest = SteeringManifest(kind=kind, layers=tuple(layers), hidden_size=spec.hidden_size,
                                    num_layers=spec.num_layers, model_fingerprint=spec.fingerprint,
                                    model_id=model_id, description=description, default_alpha=default_alpha,
                                    residual_norm=residual_norm)
        return cls(manifest, vectors)

    def allows(self, alpha: float) -> bool:
        """Whether ``alpha`` is a finite strength within ``[-max_alpha, max_alpha]``.

        Example:
            >>> spec = ModelSpec(model_type="llama", hidden_size=4, num_layers=2, fingerprint="x")
            >>> sv = SteeringVector.from_vectors(np.ones((1, 4), np.float32), (1,), spec, kind="demo")
            >>> sv.allows(4.0), sv.allows(4.5), sv.allows(float("nan"))
            (True, False, False)
        """
        return within_bound(alpha, self.max_alpha)

    def limit_text(self) -> str:
        """Why and where strengths are bounded, for messages."""
        return strength_limit(self.max_alpha)

    @property
    def layers(self) -> tuple[int, ...]:
        """Decoder layer indices the vector steers."""
        return self.manifest.layers

    def apply(self, hidden: np.ndarray, alpha: float) -> np.ndarray:
        """Numpy reference: residual-stream rows ``(n, L, H)`` at the steered layers plus ``alpha * vectors``."""
        hidden = np.asarray(hidden)
        if hidden.ndim != 3 or hidden.shape[1:] != self.vectors.shape:
            n_l, h = self.vectors.shape
            raise ArtifactError(f"steering expects rows of shape (n, {n_l}, {h}), got {hidden.shape}")
        steered: np.ndarray = hidden + np.float32(alpha) * self.vectors
        return steered

    def check_model(self, spec: ModelSpec, model_id: str = "") -> None:
        """Refuse a steering vector that was not made for ``spec``.

        Raises:
            ArtifactError: hidden size, layer count, layer range or config fingerprint disagree.
        """
        check_model_fit(self.manifest, spec, model_id, "steering vector", "steers",
                        f"rebuild the steering vector from activations of model {model_id or '<model>'}")

    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` and ``PATH.json``; returns the tensor file's path."""
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(base.with_suffix(".safetensors"), {"vectors": self.vectors}, {"format": "guard-steering"})
        base.with_suffix(".json").write_text(self.manifest.model_dump_json(indent=2) + "\n")
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Load ``PATH.safetensors`` + ``PATH.json`` (either name may be given).

        Raises:
            ArtifactError: a file is missing or corrupt, the manifest is invalid or of another schema,
                or the vectors' shape disagrees with it (names both shapes).
        """
        base = Path(path).with_suffix("")
        manifest = read_manifest(base.with_suffix(".json"), "steering", STEERING_SCHEMA_VERSION, SteeringManifest,
                                 "rebuild the steering vector")
        tensors, _ = load_tensors(base.with_suffix(".safetensors"))
        if "vectors" not in tensors:
            raise ArtifactError(f"steering file {str(base.with_suffix('.safetensors'))!r} lacks tensor 'vectors'; "
                                "rebuild it")
        return cls(manifest, tensors["vectors"])
