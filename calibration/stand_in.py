"""A stand-in probe: random unit directions at chosen layers, labelled as *not calibrated*.

It exercises the whole scoring path (engine capture, in-worker matmul, delivery) before a probe
has been trained; its scores say nothing about truth.
"""

from __future__ import annotations

from pathlib import Path

from guard.model_spec import ModelSpec
from guard.probe import Probe

__all__ = ["build_stand_in_probe"]


def build_stand_in_probe(model_path: str, out: str | Path, layers: tuple[int, ...] = (14,), seed: int = 0) -> Path:
    """Write a stand-in probe for the model at ``model_path``; returns its ``.safetensors`` path."""
    spec = ModelSpec.from_folder(model_path)
    probe = Probe.random(spec, layers=layers, labels=("stand_in",), seed=seed, model_id=str(model_path))
    return probe.save(out)
