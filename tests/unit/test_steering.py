"""Steering artefacts, mean-difference directions, and the per-request steering options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.steering import build_steering_vector, mean_difference
from guard.capture_spec import CaptureSpec
from guard.errors import ArtifactError, ConfigError, DataError
from guard.model_spec import ModelSpec
from guard.request_options import RequestOptions, parse_request_options
from guard.steering import SteeringVector
from guard.tensorfile import save_tensors

SPEC = ModelSpec(model_type="llama", hidden_size=8, num_layers=4, fingerprint="abc")


def _vector(layers=(1, 3), seed=0) -> SteeringVector:
    rng = np.random.default_rng(seed)
    return SteeringVector.from_vectors(rng.standard_normal((len(layers), 8)).astype(np.float32), layers, SPEC,
                                       kind="test", model_id="m")


def test_steering_vector_roundtrips_through_safetensors_and_json(tmp_path):
    sv = _vector()
    path = sv.save(tmp_path / "sv")
    assert path.suffix == ".safetensors" and (tmp_path / "sv.json").is_file()
    back = SteeringVector.load(tmp_path / "sv.json")
    np.testing.assert_array_equal(back.vectors, sv.vectors)
    assert back.manifest == sv.manifest
    np.testing.assert_allclose(back.manifest.norms, np.linalg.norm(sv.vectors, axis=-1), rtol=1e-6)


def test_loader_names_expected_and_found_shapes_of_a_wrong_size_vector(tmp_path):
    _vector().save(tmp_path / "sv")
    save_tensors(tmp_path / "sv.safetensors", {"vectors": np.zeros((2, 7), np.float32)})
    with pytest.raises(ArtifactError, match=r"shape \(2, 7\).*implies \(2, 8\)"):
        SteeringVector.load(tmp_path / "sv")


def test_loader_refuses_another_schema_version_and_a_missing_manifest(tmp_path):
    _vector().save(tmp_path / "sv")
    raw = json.loads((tmp_path / "sv.json").read_text())
    (tmp_path / "sv.json").write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema_version=99"):
        SteeringVector.load(tmp_path / "sv")
    with pytest.raises(ArtifactError, match="missing"):
        SteeringVector.load(tmp_path / "absent")


@pytest.mark.parametrize("other, message", [
    (SPEC.model_copy(update={"hidden_size": 16}), "hidden_size=8 but model 'x' has 16"),
    (SPEC.model_copy(update={"num_layers": 30}), "expects 4 layers but model 'x' has 30"),
    (SPEC.model_copy(update={"fingerprint": "zzz"}), "fingerprint abc but model 'x' has zzz"),
])
def test_check_model_refuses_a_vector_made_for_another_model(other, message):
    _vector().check_model(SPEC, "x")
    with pytest.raises(ArtifactError, match=message):
        _vector().check_model(other, "x")


def test_non_finite_vectors_are_refused():
    with pytest.raises(ArtifactError, match="NaN"):
        SteeringVector.from_vectors(np.full((1, 8), np.nan, np.float32), (0,), SPEC, kind="test")


def test_apply_adds_alpha_times_the_vector_at_each_layer():
    sv = _vector()
    rows = np.random.default_rng(1).standard_normal((5, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(sv.apply(rows, 0.5), rows + 0.5 * sv.vectors[None])
    np.testing.assert_array_equal(sv.apply(rows, 0.0), rows)


def test_mean_difference_points_from_false_to_true_statements():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((40, 2, 8))
    labels = np.arange(40) % 2
    features[labels == 0] += 3.0  # true statements shifted along every axis
    direction = mean_difference(features, labels)
    expected = features[labels == 0].mean(0) - features[labels == 1].mean(0)
    np.testing.assert_allclose(direction, expected, rtol=1e-5)
    assert direction.dtype == np.float32 and direction.shape == (2, 8)


def test_normalised_mean_difference_has_the_median_residual_norm_per_layer():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((30, 2, 8)) * np.array([1.0, 10.0])[None, :, None]
    labels = rng.integers(0, 2, 30)
    direction = mean_difference(features, labels, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(direction, axis=-1),
                               np.median(np.linalg.norm(features, axis=-1), axis=0), rtol=1e-5)


def test_mean_difference_needs_both_labels_and_matching_shapes():
    with pytest.raises(DataError, match="both labels"):
        mean_difference(np.zeros((3, 1, 4)), [0, 0, 0])
    with pytest.raises(DataError, match="disagree"):
        mean_difference(np.zeros((3, 1, 4)), [0, 1])


def test_build_steering_vector_writes_a_loadable_mean_difference_artefact(tmp_path):
    rng = np.random.default_rng(4)
    features, labels = rng.standard_normal((10, 2, 8)).astype(np.float32), np.arange(10) % 2
    path = build_steering_vector(features, labels, (1, 2), SPEC, tmp_path / "truth", model_id="m")
    sv = SteeringVector.load(path)
    assert sv.manifest.kind == "mean-difference" and sv.layers == (1, 2)
    sv.check_model(SPEC, "m")


def test_steering_options_roundtrip_through_extra_args():
    opts = RequestOptions(key="k1", steer=0.25, steer_from=7)
    assert parse_request_options(opts.to_extra_args()) == opts
    assert parse_request_options({"guard_key": "k1", "guard_steer": 2}) == RequestOptions(key="k1", steer=2.0)
    assert "guard_steer" not in RequestOptions(key="k1").to_extra_args()


@pytest.mark.parametrize("bad", ["0.5", float("nan"), float("inf"), True, [1.0]])
def test_invalid_steering_strength_names_the_field(bad):
    with pytest.raises(ConfigError, match="guard_steer=.*finite number"):
        parse_request_options({"guard_key": "k", "guard_steer": bad})


@pytest.mark.parametrize("bad", [1.5, "3", True])
def test_invalid_steer_from_names_the_field(bad):
    with pytest.raises(ConfigError, match="guard_steer_from=.*integer token position"):
        parse_request_options({"guard_key": "k", "guard_steer": 1.0, "guard_steer_from": bad})


def test_a_negative_steer_from_is_an_offset_from_the_prompt_length_resolved_in_the_worker():
    opts = parse_request_options({"guard_key": "k", "guard_steer": 1.0, "guard_steer_from": -1})
    assert opts.steer_from == -1 and opts.to_extra_args()["guard_steer_from"] == -1


def test_steering_fields_without_their_prerequisites_are_refused():
    with pytest.raises(ConfigError, match="'guard_steer' was given without 'guard_key'"):
        parse_request_options({"guard_steer": 1.0})
    with pytest.raises(ConfigError, match="'guard_steer_from' was given without 'guard_steer'"):
        parse_request_options({"guard_key": "k", "guard_steer_from": 3})


def test_capture_spec_carries_steering_with_its_layers_or_not_at_all():
    spec = CaptureSpec(layers=(3,), steering="/s.safetensors", steering_layers=(5, 3))
    assert CaptureSpec.from_additional_config(spec.to_additional_config()) == spec
    with pytest.raises(ValueError, match="disagree"):
        CaptureSpec(layers=(3,), steering="/s.safetensors")


def test_the_strength_bound_lets_a_row_move_at_most_max_shift_median_residual_norms():
    from guard.steering import MAX_SHIFT

    vectors = np.zeros((2, 8), np.float32)
    vectors[0, 0], vectors[1, 1] = 2.0, 5.0  # the larger norm decides
    sv = SteeringVector.from_vectors(vectors, (1, 3), SPEC, kind="t", residual_norm=50.0)
    assert sv.max_alpha == pytest.approx(MAX_SHIFT * 50.0 / 5.0)
    assert sv.allows(sv.max_alpha) and sv.allows(-sv.max_alpha)
    assert not sv.allows(sv.max_alpha * 1.001) and not sv.allows(float("inf")) and not sv.allows(float("nan"))
    unknown = SteeringVector.from_vectors(vectors, (1, 3), SPEC, kind="t")  # no residual norm: the vector's own
    assert unknown.max_alpha == pytest.approx(MAX_SHIFT)


def test_the_residual_norm_survives_a_round_trip_and_bounds_the_loaded_vector(tmp_path):
    sv = SteeringVector.from_vectors(np.ones((1, 8), np.float32), (1,), SPEC, kind="t", residual_norm=10.0)
    back = SteeringVector.load(sv.save(tmp_path / "sv"))
    assert back.manifest.residual_norm == 10.0 and back.max_alpha == sv.max_alpha


def test_a_default_strength_beyond_the_bound_is_refused_at_load_naming_the_range():
    with pytest.raises(ArtifactError, match=r"default_alpha=9.0 is out of range: .*\[-4, 4\]"):
        SteeringVector.from_vectors(np.ones((1, 8), np.float32), (1,), SPEC, kind="t", default_alpha=9.0)


def test_an_all_zero_vector_is_refused():
    with pytest.raises(ArtifactError, match="all zeros"):
        SteeringVector.from_vectors(np.zeros((1, 8), np.float32), (1,), SPEC, kind="t")


def test_the_shipped_steering_vector_is_bounded_at_four():
    from guard.shipped import shipped_steering

    sv = SteeringVector.load(shipped_steering("3df7dd159573250b"))
    assert sv.max_alpha == pytest.approx(4.0) and sv.allows(sv.manifest.default_alpha)


def test_built_vectors_record_the_median_residual_norm_of_their_features(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((40, 2, 8)) * 3.0
    path = build_steering_vector(features, [0] * 20 + [1] * 20, (1, 3), SPEC, tmp_path / "sv")
    norms = np.median(np.linalg.norm(features, axis=-1), axis=0)
    assert SteeringVector.load(path).manifest.residual_norm == pytest.approx(norms.max())


def test_the_python_api_and_the_server_refuse_a_strength_beyond_the_bound():
    from adapters.http.errors import APIError
    from adapters.http.serve.steer import Steering
    from adapters.vllm.gated import steer_strength
    from guard.options import GuardOptions

    sv = _vector()
    with pytest.raises(ConfigError, match="out of range"):
        steer_strength(GuardOptions(mode="steer", steer_alpha=sv.max_alpha * 2), sv)
    assert steer_strength(GuardOptions(mode="steer", steer_alpha=sv.max_alpha), sv) == sv.max_alpha
    steering = Steering.of(sv, "sv.safetensors", default_strength=0.5)
    with pytest.raises(APIError) as refused:
        Steering.strength_for(steering, GuardOptions(mode="steer", steer_alpha=-sv.max_alpha * 2))
    assert refused.value.status == 400 and refused.value.param == "guard.steer_alpha"
    with pytest.raises(ConfigError, match="steer_alpha=.* is out of range"):
        Steering.of(sv, "sv.safetensors", default_strength=sv.max_alpha * 2)


def test_a_vector_scaled_to_the_residual_norm_allows_exactly_the_bound_despite_float32_storage():
    direction = np.random.default_rng(4).standard_normal(8)
    residual = 124.52705266875253
    stored = (direction / np.linalg.norm(direction) * residual).astype(np.float32)  # reads back a hair longer
    sv = SteeringVector.from_vectors(stored[None], (1,), SPEC, kind="test", model_id="m")
    sv = SteeringVector(sv.manifest.model_copy(update={"residual_norm": residual}), sv.vectors)
    assert sv.allows(4.0) and sv.allows(-4.0) and not sv.allows(4.001)
