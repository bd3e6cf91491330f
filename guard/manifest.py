"""What every artefact (probe, gate, steering vector) shares: reading its versioned JSON manifest and
refusing to run against a model it was not made for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from guard.errors import ArtifactError
from guard.model_spec import ModelSpec

__all__ = ["ModelBound", "read_manifest", "check_model_fit"]

M = TypeVar("M", bound=BaseModel)


class ModelBound(Protocol):
    """The manifest fields that tie an artefact to one model."""

    hidden_size: int
    num_layers: int
    layers: tuple[int, ...]
    model_fingerprint: str


def read_manifest(path: Path, what: str, schema_version: int, model: type[M], fix: str) -> M:
    """Read and validate ``path`` as a ``what`` manifest of ``schema_version``.

    Args:
        what: the artefact's name in messages, e.g. ``"probe"``.
        fix: how to get a good one, e.g. ``"re-export the probe"``.

    Raises:
        ArtifactError: missing, not JSON, another schema version, or invalid (names the file and the fix).
    """
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ArtifactError(f"{what} manifest {str(path)!r} is missing ({exc.strerror}); {fix} with its .json") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{what} manifest {str(path)!r} is not valid JSON ({exc}); {fix}") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != schema_version:
        raise ArtifactError(f"{what} manifest {str(path)!r} has schema_version={version!r}; this guard reads "
                            f"version {schema_version}; {fix} with this guard version")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{what} manifest {str(path)!r} is invalid: {exc}") from exc


def check_model_fit(manifest: ModelBound, spec: ModelSpec, model_id: str, what: str, verb: str, fix: str) -> None:
    """Refuse an artefact whose manifest does not fit the model ``spec``.

    Args:
        what: the artefact's name in messages (``"probe"``); verb: what it does to its layers (``"reads"``).

    Raises:
        ArtifactError: hidden size, layer count, layer range or config fingerprint disagree.
    """
    m = manifest
    if m.hidden_size != spec.hidden_size:
        raise ArtifactError(f"{what} expects hidden_size={m.hidden_size} "
                            f"but model {model_id!r} has {spec.hidden_size}; {fix}")
    if m.num_layers != spec.num_layers:
        raise ArtifactError(f"{what} expects {m.num_layers} layers but model {model_id!r} has {spec.num_layers}; {fix}")
    bad = [layer for layer in m.layers if not 0 <= layer < spec.num_layers]
    if bad:
        raise ArtifactError(f"{what} {verb} layers {bad}, "
                            f"outside 0..{spec.num_layers - 1} of model {model_id!r}; {fix}")
    if m.model_fingerprint != spec.fingerprint:
        raise ArtifactError(f"{what} was made for a model with config fingerprint {m.model_fingerprint} but model "
                            f"{model_id!r} has {spec.fingerprint}; {fix}")
