"""Start-up check of guard serve's and guard proxy's artefacts against the model, before the engine starts.

The engine's workers refuse an artefact made for another model too, but only after vLLM has spent a
minute or more starting, and from a child process whose log the user must read. Checking here, as
soon as the probe is loaded, makes ``guard serve --probe WRONG`` exit at once with the reason (hidden
size, layer count, layer range or config fingerprint) and the fix.
"""

from __future__ import annotations

from pathlib import Path

from adapters.model_store import resolve_model
from guard.manifest import check_model_fit
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.steering import SteeringVector

__all__ = ["check_fit"]


def check_fit(model: str, probe: Probe, gate: Probe | None = None, steering: SteeringVector | None = None) -> None:
    """Refuse a probe (and gate, and steering vector) that was not made for ``model``.

    Args:
        model: the ``model`` setting (``default``, a folder, or a hub id: a hub id is left to the engine,
            which checks once it has downloaded the config).

    Raises:
        ArtifactError: an artefact's hidden size, layer count, layers or fingerprint do not fit the model.
        ModelError: a local model folder without ``config.json``.

    Example:
        >>> check_fit("default", Probe.load("probe-for-another-model.safetensors"))  # doctest: +SKIP
        Traceback (most recent call last):
        guard.errors.ArtifactError: probe expects hidden_size=896 but model 'default' has 576; run `guard calibrate ...`
    """
    folder = Path(resolve_model(model))
    if not (folder / "config.json").is_file():
        return
    spec = ModelSpec.from_folder(folder)
    probe.check_model(spec, model)
    if gate is not None:
        check_model_fit(gate.manifest, spec, model, "gate", "reads",
                        f"run `guard calibrate --model {model}` to build a probe and gate for this model")
    if steering is not None:
        steering.check_model(spec, model)
