"""Probes shipped inside the package, found by the fingerprint of the model they were calibrated on."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SHIPPED_DIR", "GATE_KIND", "shipped_probe"]

#: where calibrated probes that ship with guard live (``NAME.safetensors`` + ``NAME.json``)
SHIPPED_DIR = Path(__file__).parent / "probes"
#: manifest ``kind`` of pre-generation gates (predict answer correctness from the question)
GATE_KIND = "pre-generation-gate"


def shipped_probe(model_fingerprint: str, gate: bool = False) -> Path | None:
    """The shipped probe (or, with ``gate``, pre-generation gate) calibrated for a model with this fingerprint."""
    for manifest in sorted(SHIPPED_DIR.glob("*.json")):
        try:
            raw = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict) or (raw.get("kind") == GATE_KIND) != gate:
            continue
        if raw.get("model_fingerprint") == model_fingerprint and manifest.with_suffix(".safetensors").is_file():
            return manifest.with_suffix(".safetensors")
    return None
