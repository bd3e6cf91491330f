"""Probes shipped inside the package, found by the fingerprint of the model they were calibrated on."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SHIPPED_DIR", "shipped_probe"]

#: where calibrated probes that ship with guard live (``NAME.safetensors`` + ``NAME.json``)
SHIPPED_DIR = Path(__file__).parent / "probes"


def shipped_probe(model_fingerprint: str) -> Path | None:
    """The shipped probe calibrated for a model with this config fingerprint, or ``None``."""
    for manifest in sorted(SHIPPED_DIR.glob("*.json")):
        try:
            fingerprint = json.loads(manifest.read_text()).get("model_fingerprint")
        except (OSError, ValueError):
            continue
        if fingerprint == model_fingerprint and manifest.with_suffix(".safetensors").is_file():
            return manifest.with_suffix(".safetensors")
    return None
