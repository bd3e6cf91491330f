"""Artefact faults: a probe, gate or steering vector that is for another model, corrupt or incomplete is
refused with a message naming the file or the mismatch and the fix — never loaded to give silently wrong
scores. guard serve and guard proxy check the probe (and gate) against the model before the engine starts."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.http.artefacts import check_fit
from guard.errors import ArtifactError
from guard.heads import check_gate
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.steering import SteeringVector
from guard.verdicts import VerdictRule

SHIPPED = Path(__file__).resolve().parents[2] / "guard" / "probes"
PROBE, GATE = SHIPPED / "smollm2-135m-instruct", SHIPPED / "smollm2-135m-instruct-gate"
#: the default model, as the shipped artefacts describe it
SMOL = ModelSpec(model_type="llama", hidden_size=576, num_layers=30, fingerprint="3df7dd159573250b")


def _steering(spec: ModelSpec = SMOL, layers: tuple[int, ...] = (14,)) -> SteeringVector:
    return SteeringVector.from_vectors(np.ones((len(layers), spec.hidden_size), np.float32), layers, spec, kind="test")


def _probe(spec: ModelSpec = SMOL, layers: tuple[int, ...] = (14,)) -> Probe:
    return Probe.random(spec, layers, ("true", "false", "neither"))


def _gate(spec: ModelSpec = SMOL, layers: tuple[int, ...] = (14,)) -> Probe:
    return Probe.random(spec, layers, ("incorrect", "correct"), kind="pre-generation-gate")


OTHER_HIDDEN = SMOL.model_copy(update={"hidden_size": 896})
OTHER_DEPTH = SMOL.model_copy(update={"num_layers": 24})
OTHER_CONFIG = SMOL.model_copy(update={"fingerprint": "0123456789abcdef"})
MAKERS: dict[str, Callable[..., Any]] = {"probe": _probe, "gate": _gate, "steering": _steering}


@pytest.mark.parametrize("artefact", sorted(MAKERS))
@pytest.mark.parametrize(("made_for", "layers", "words"), [
    (OTHER_HIDDEN, (14,), "expects hidden_size=896 but model 'default' has 576"),
    (OTHER_DEPTH, (14,), "expects 24 layers but model 'default' has 30"),
    (SMOL, (31,), "layers [31], outside 0..29"),
    (OTHER_CONFIG, (14,), "config fingerprint 0123456789abcdef but model 'default' has 3df7dd159573250b"),
], ids=["hidden_size", "layer_count", "layer_range", "fingerprint"])
def test_an_artefact_for_another_model_is_refused_naming_the_mismatch_and_the_fix(artefact, made_for, layers, words):
    made = MAKERS[artefact](made_for, layers)
    with pytest.raises(ArtifactError) as info:
        made.check_model(SMOL, "default")
    assert words in str(info.value) and ("guard calibrate" in str(info.value) or "rebuild" in str(info.value))


def _copy(base: Path, tmp_path: Path) -> Path:
    for suffix in (".json", ".safetensors"):
        shutil.copy(base.with_suffix(suffix), tmp_path / f"a{suffix}")
    return tmp_path / "a"


def _edit_manifest(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    raw = json.loads(path.with_suffix(".json").read_text())
    edit(raw)
    path.with_suffix(".json").write_text(json.dumps(raw))


def _truncate(path: Path) -> None:
    data = path.with_suffix(".safetensors").read_bytes()
    path.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])


FILE_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated_tensors": (_truncate, "corrupt"),
    "garbage_tensors": (lambda p: p.with_suffix(".safetensors").write_bytes(b"\x00" * 4),
                        "too short to be safetensors"),
    "missing_tensors": (lambda p: p.with_suffix(".safetensors").unlink(), "cannot read tensor file"),
    "missing_manifest": (lambda p: p.with_suffix(".json").unlink(), "manifest"),
    "manifest_not_json": (lambda p: p.with_suffix(".json").write_text("{not json"), "is not valid JSON"),
    "manifest_other_schema": (lambda p: _edit_manifest(p, lambda m: m.update(schema_version=99)), "schema_version=99"),
    "manifest_lacks_hidden_size": (lambda p: _edit_manifest(p, lambda m: m.pop("hidden_size")), "is invalid"),
    "manifest_lacks_layers": (lambda p: _edit_manifest(p, lambda m: m.pop("layers")), "is invalid"),
    "manifest_disagrees_with_tensors": (lambda p: _edit_manifest(p, lambda m: m.update(hidden_size=896)), "896"),
}


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
@pytest.mark.parametrize("artefact", ["probe", "gate", "steering"])
def test_a_corrupt_or_incomplete_artefact_file_is_refused_on_load(artefact, fault, tmp_path):
    if artefact == "steering":
        base = tmp_path / "src"
        _steering().save(base)
        path = _copy(base, tmp_path)
        load: Callable[[Path], Any] = SteeringVector.load
    else:
        path, load = _copy(PROBE if artefact == "probe" else GATE, tmp_path), Probe.load
    load(path)  # the untouched copy loads
    corrupt, words = FILE_FAULTS[fault]
    corrupt(path)
    with pytest.raises(ArtifactError) as info:
        load(path)
    assert words in str(info.value)


def test_a_probe_without_calibration_or_true_label_cannot_give_verdicts():
    with pytest.raises(ArtifactError, match="no conformal calibration"):
        VerdictRule.from_probe(_probe())


def test_a_gate_from_another_calibration_is_refused_beside_the_probe():
    probe = Probe.load(PROBE)
    with pytest.raises(ArtifactError, match="gate reads layers"):
        check_gate(probe, _gate(SMOL, (3,)))
    with pytest.raises(ArtifactError, match="gate was made for model fingerprint"):
        check_gate(probe, _gate(OTHER_CONFIG, probe.layers))


def _model_folder(tmp_path: Path, hidden: int, layers: int) -> str:
    (tmp_path / "model").mkdir()
    config = {"model_type": "qwen2", "hidden_size": hidden, "num_hidden_layers": layers}
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "model")


def test_the_servers_start_up_check_refuses_the_shipped_probe_and_gate_for_another_model(tmp_path):
    model = _model_folder(tmp_path, 896, 24)
    with pytest.raises(ArtifactError, match="probe expects hidden_size=576 but model .* has 896"):
        check_fit(model, Probe.load(PROBE))
    spec = ModelSpec.from_folder(model)
    with pytest.raises(ArtifactError, match="gate expects hidden_size=576"):
        check_fit(model, _probe(spec, (3,)), Probe.load(GATE))
    check_fit(model, _probe(spec, (3,)), _gate(spec, (3,)))  # artefacts made for it pass
