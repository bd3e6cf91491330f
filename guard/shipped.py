"""Artefacts shipped inside the package (probes, gates, steering vectors), found by the fingerprint of their model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED_DIR", "GATE_KIND", "shipped_probe", "shipped_steering"]

#: where calibrated probes that ship with guard live (``NAME.safetensors`` + ``NAME.json``)
SHIPPED_DIR = Path(__file__).parent / "probes"
#: manifest ``kind`` of pre-generation gates (predict answer correctness from the question)
GATE_KIND = "pre-generation-gate"


def _manifests(model_fingerprint: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Readable shipped manifests for this model whose tensor file is present, in name order."""
    for manifest in sorted(SHIPPED_DIR.glob("*.json")):
        try:
            raw = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(raw, dict) and raw.get("model_fingerprint") == model_fingerprint
                and manifest.with_suffix(".safetensors").is_file()):
            yield manifest.with_suffix(".safetensors"), raw


def shipped_probe(model_fingerprint: str, gate: bool = False) -> Path | None:
    """The shipped probe (or, with ``gate``, pre-generation gate) calibrated for a model with this fingerprint."""
    for path, raw in _manifests(model_fingerprint):
        if "labels" in raw and (raw.get("kind") == GATE_KIND) == gate:  # a steering vector has no labels
            return path
    return None


def shipped_steering(model_fingerprint: str) -> Path | None:
    """The shipped steering vector (a truthful direction, see ``guard.steering``) made for this model fingerprint."""
    for path, raw in _manifests(model_fingerprint):
        if "labels" not in raw and "norms" in raw:
            return path
    return None
