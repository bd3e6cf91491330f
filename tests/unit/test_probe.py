from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.errors import ArtifactError
from guard.model_spec import ModelSpec
from guard.probe import Probe, ProbeManifest

SPEC = ModelSpec.from_config({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 4})


def _probe(seed: int = 0, k: int = 3) -> Probe:
    rng = np.random.default_rng(seed)
    manifest = ProbeManifest(kind="test", labels=tuple("tfn"[:k]), layers=(1, 2), hidden_size=8, num_layers=4,
                             model_fingerprint=SPEC.fingerprint)
    return Probe(manifest, rng.standard_normal((2, k, 8)).astype(np.float32),
                 rng.standard_normal((2, k)).astype(np.float32),
                 rng.standard_normal((2, 8)).astype(np.float32), rng.uniform(0.5, 2, (2, 8)).astype(np.float32))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 20))
def test_folded_weights_reproduce_the_reference_score(seed, n):
    probe = _probe(seed)
    hidden = np.random.default_rng(seed + 1).standard_normal((n, 2, 8)).astype(np.float32) * 10
    w, b = probe.folded()
    folded = np.einsum("nlh,lhk->nlk", hidden.astype(np.float64), w) + b
    np.testing.assert_allclose(folded, probe.score(hidden), rtol=1e-4, atol=1e-4)


def test_save_load_roundtrip_is_exact(tmp_path):
    probe = _probe()
    probe.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p.safetensors")
    assert loaded.manifest == probe.manifest
    for name in ("weight", "bias", "mean", "scale"):
        assert np.array_equal(getattr(loaded, name), getattr(probe, name))


def test_check_model_rejects_another_hidden_size_and_names_the_fix():
    other = ModelSpec.from_config({"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 4})
    with pytest.raises(ArtifactError, match=r"hidden_size=8 but model 'm' has 16; run `guard calibrate --model m`"):
        _probe().check_model(other, "m")


def test_check_model_rejects_another_layer_count():
    other = ModelSpec.from_config({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2})
    with pytest.raises(ArtifactError, match="expects 4 layers"):
        _probe().check_model(other, "m")


def test_check_model_rejects_a_different_config_fingerprint():
    other = ModelSpec.from_config({"model_type": "qwen2", "hidden_size": 8, "num_hidden_layers": 4})
    with pytest.raises(ArtifactError, match="fingerprint"):
        _probe().check_model(other, "m")


def test_check_model_accepts_its_own_model():
    _probe().check_model(SPEC, "m")


def test_wrong_tensor_shape_is_rejected_with_expected_shape():
    p = _probe()
    with pytest.raises(ArtifactError, match=r"'weight' has shape \(2, 3, 7\).*implies \(2, 3, 8\)"):
        Probe(p.manifest, p.weight[..., :7], p.bias, p.mean, p.scale)


def test_missing_manifest_field_refuses_to_load(tmp_path):
    _probe().save(tmp_path / "p")
    raw = json.loads((tmp_path / "p.json").read_text())
    del raw["hidden_size"]
    (tmp_path / "p.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="hidden_size"):
        Probe.load(tmp_path / "p")


def test_other_schema_version_refuses_to_load(tmp_path):
    _probe().save(tmp_path / "p")
    raw = json.loads((tmp_path / "p.json").read_text())
    raw["schema_version"] = 99
    (tmp_path / "p.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="schema_version=99"):
        Probe.load(tmp_path / "p")


def test_missing_manifest_file_names_the_path(tmp_path):
    _probe().save(tmp_path / "p")
    (tmp_path / "p.json").unlink()
    with pytest.raises(ArtifactError, match="p.json"):
        Probe.load(tmp_path / "p")


def test_random_stand_in_is_labelled_as_not_calibrated():
    probe = Probe.random(SPEC, layers=(1,))
    assert probe.manifest.kind == "stand-in" and "NOT calibrated" in probe.manifest.description


def test_probabilities_average_layers_and_conformal_sets_follow_the_manifest():
    from guard.probe import ConformalCalibration, ProbeManifest

    manifest = ProbeManifest(kind="t", labels=("true", "false", "neither"), layers=(1, 2), hidden_size=2, num_layers=4,
                             model_fingerprint="x",
                             conformal=ConformalCalibration(alpha=0.1,
                                                            thresholds={"true": 0.5, "false": 0.5, "neither": 0.1},
                                                            n_cal={"true": 9, "false": 9, "neither": 9}))
    zeros = np.zeros((2, 3, 2), np.float32)
    probe = Probe(manifest, zeros, np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32),
                  np.ones((2, 2), np.float32))
    scores = np.array([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]])  # (n, L, k)
    probs = probe.probabilities(scores)
    assert np.allclose(probs.sum(1), 1) and np.allclose(probs[0], np.exp([1, 0, 0]) / np.exp([1, 0, 0]).sum())
    assert probe.prediction_sets(probs) == [("true",), ("neither",)]
    bare = Probe(manifest.model_copy(update={"conformal": None}), zeros, np.zeros((2, 3), np.float32),
                 np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(ArtifactError, match="no conformal calibration"):
        bare.prediction_sets(probs)


def _mlp_probe(seed: int = 0, k: int = 3, m: int = 5) -> Probe:
    rng = np.random.default_rng(seed)
    manifest = ProbeManifest(kind="test-mlp", labels=tuple("tfn"[:k]), layers=(1, 2), hidden_size=8, num_layers=4,
                             model_fingerprint=SPEC.fingerprint, head="mlp")
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return Probe(manifest, f32(2, k, m), f32(2, k), f32(2, 8), rng.uniform(0.5, 2, (2, 8)).astype(np.float32),
                 w1=f32(2, m, 8), b1=f32(2, m))


def test_mlp_probe_score_equals_the_direct_numpy_formula():
    probe = _mlp_probe()
    hidden = np.random.default_rng(1).standard_normal((6, 2, 8)) * 3
    expected = np.empty((6, 2, 3))
    for n in range(6):
        for li in range(2):
            z = (hidden[n, li] - probe.mean[li]) / probe.scale[li]
            expected[n, li] = np.maximum(z @ probe.w1[li].T + probe.b1[li], 0) @ probe.weight[li].T + probe.bias[li]
    np.testing.assert_allclose(probe.score(hidden), expected, rtol=1e-6, atol=1e-6)
    assert probe.hidden_units == 5 and _probe().hidden_units == 0


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 20))
def test_folded_mlp_weights_reproduce_the_reference_score(seed, n):
    probe = _mlp_probe(seed)
    hidden = np.random.default_rng(seed + 1).standard_normal((n, 2, 8)).astype(np.float32) * 10
    w1, b1, w2, b2 = probe.folded_mlp()
    assert (w1.shape, b1.shape, w2.shape, b2.shape) == ((2, 8, 5), (2, 5), (2, 5, 3), (2, 3))
    act = np.maximum(np.einsum("nlh,lhm->nlm", hidden.astype(np.float64), w1) + b1, 0)
    folded = np.einsum("nlm,lmk->nlk", act, w2) + b2
    np.testing.assert_allclose(folded, probe.score(hidden), rtol=1e-4, atol=1e-4)


def test_folded_refuses_the_other_head_and_names_the_right_method():
    with pytest.raises(ArtifactError, match=r"MLP head; fold it with folded_mlp\(\)"):
        _mlp_probe().folded()
    with pytest.raises(ArtifactError, match=r"linear head; fold it with folded\(\)"):
        _probe().folded_mlp()


def test_mlp_probe_save_load_roundtrip_is_exact(tmp_path):
    probe = _mlp_probe()
    probe.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p.json")
    assert loaded.manifest == probe.manifest and loaded.manifest.head == "mlp"
    for name in ("weight", "bias", "mean", "scale", "w1", "b1"):
        assert np.array_equal(getattr(loaded, name), getattr(probe, name))
    hidden = np.random.default_rng(2).standard_normal((4, 2, 8))
    assert np.array_equal(loaded.score(hidden), probe.score(hidden))


def test_manifest_without_head_field_reads_as_linear(tmp_path):
    _probe().save(tmp_path / "p")
    raw = json.loads((tmp_path / "p.json").read_text())
    del raw["head"]
    (tmp_path / "p.json").write_text(json.dumps(raw))
    assert Probe.load(tmp_path / "p").manifest.head == "linear"


def test_mlp_probe_without_w1_is_rejected_naming_the_tensor(tmp_path):
    p = _mlp_probe()
    with pytest.raises(ArtifactError, match=r"needs tensors 'w1' \(2, m, 8\).*missing: 'w1'"):
        Probe(p.manifest, p.weight, p.bias, p.mean, p.scale, b1=p.b1)
    _probe().save(tmp_path / "p")  # linear tensors ...
    raw = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps({**raw, "head": "mlp"}))  # ... under an MLP manifest
    with pytest.raises(ArtifactError, match=r"lacks tensors \['b1', 'w1'\] \(head='mlp'\)"):
        Probe.load(tmp_path / "p")


@pytest.mark.parametrize(("name", "bad", "found", "implied"), [
    ("weight", lambda p: {"weight": p.weight[..., :4]}, r"\(2, 3, 4\)", r"\(2, 3, 5\)"),
    ("b1", lambda p: {"b1": p.b1[:, :3]}, r"\(2, 3\)", r"\(2, 5\)"),
    ("w1", lambda p: {"w1": p.w1[..., :7]}, r"\(2, 5, 7\)", r"\(2, 5, 8\)"),
    ("w1", lambda p: {"w1": p.w1[0]}, r"\(5, 8\)", r"\(2, m, 8\) with m >= 1"),
])
def test_mlp_probe_with_a_wrong_shape_names_tensor_found_and_expected_shapes(name, bad, found, implied):
    p = _mlp_probe()
    tensors = {"weight": p.weight, "bias": p.bias, "mean": p.mean, "scale": p.scale, "w1": p.w1, "b1": p.b1}
    tensors |= bad(p)
    with pytest.raises(ArtifactError,
                       match=rf"'{name}' has shape {found} but the manifest .*implies {implied}.*re-export"):
        Probe(p.manifest, **tensors)


def test_linear_probe_refuses_hidden_layer_tensors():
    p, q = _probe(), _mlp_probe()
    with pytest.raises(ArtifactError, match="linear probe got hidden-layer tensors 'w1'/'b1'; set head='mlp'"):
        Probe(p.manifest, p.weight, p.bias, p.mean, p.scale, w1=q.w1, b1=q.b1)
