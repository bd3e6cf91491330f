"""The artefacts a model gets when none is given: its shipped probe, gate and steering vector.

A model without a shipped probe gets a random *stand-in* probe (said loudly on stderr): it exercises
the whole scoring path, its scores say nothing about truth, and its verdicts are always ``uncertain``.
Every command that starts an engine resolves its artefacts here, so they agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from adapters.model_store import resolve_model
from guard import env
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.shipped import shipped_probe, shipped_steering

__all__ = ["build_stand_in_probe", "default_gate", "default_probe", "default_steering", "stand_in_probe"]


def default_probe(model: str) -> str:
    """The probe shipped for ``model``; else a stand-in, said loudly."""
    found = shipped_probe(_fingerprint(model))
    if found is not None:
        return str(found)
    print(f"guard: no calibrated probe ships for model {model!r}; using a RANDOM stand-in probe (every verdict "
          f"'uncertain'). Run `guard calibrate --model {model} --out DIR` and pass --probe DIR/probe.safetensors",
          file=sys.stderr)
    return stand_in_probe(model)


def default_steering(model: str) -> str | None:
    """The steering vector shipped for ``model``, if any."""
    found = shipped_steering(_fingerprint(model))
    return str(found) if found is not None else None


def default_gate(model: str, probe: str) -> str | None:
    """The gate shipped for ``model`` when ``probe`` is its shipped probe (a gate reads its probe's layers)."""
    fingerprint = _fingerprint(model)
    shipped = shipped_probe(fingerprint)
    if shipped is None or Path(probe).resolve() != shipped.resolve():
        return None
    gate = shipped_probe(fingerprint, gate=True)
    return str(gate) if gate is not None else None


def stand_in_probe(model: str, layers: tuple[int, ...] | None = None) -> str:
    """A random stand-in probe for ``model`` (default: its layer 14, or its middle layer when it has fewer),
    written once per model under the guard cache."""
    folder = resolve_model(model)
    spec = ModelSpec.from_folder(folder)
    layers = layers or ((14,) if spec.num_layers > 14 else (spec.num_layers // 2,))
    name = f"stand-in-{spec.fingerprint[:12]}-layer{'-'.join(map(str, layers))}"
    path = Path(env.cache_home()) / "probes" / name
    if not path.with_suffix(".json").exists():
        build_stand_in_probe(folder, path, layers)
    return str(path.with_suffix(".safetensors"))


def build_stand_in_probe(model_path: str, out: str | Path, layers: tuple[int, ...] = (14,), seed: int = 0) -> Path:
    """Write a stand-in probe (random unit directions, labelled NOT calibrated) for the model folder
    ``model_path`` at ``layers``; returns its ``.safetensors`` path.

    Its labels are ``true`` / ``false`` and its conformal sets always hold both, so ``guard serve`` runs with it
    and every verdict is ``uncertain``; ``/healthz`` and each response's guard summary say ``calibrated: false``.
    """
    spec = ModelSpec.from_folder(model_path)
    probe = Probe.random(spec, layers=layers, labels=("true", "false"), seed=seed, model_id=str(model_path),
                         undecided=True)
    return probe.save(out)


def _fingerprint(model: str) -> str:
    return ModelSpec.from_folder(resolve_model(model)).fingerprint
