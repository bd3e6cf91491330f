"""Steering directions (probe, per-domain), the manifest's default strength, and the gated-steering pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adapters.vllm.engine import GuardedCompletion
from adapters.vllm.gated import (
    feed_completion,
    steer_strength,
    steered_request,
    token_pieces,
)
from calibration.statements import generate_statements
from calibration.steer_command import steering_statements
from calibration.steering import mean_difference, probe_difference
from guard.conformal import MondrianConformal
from guard.errors import ArtifactError, ConfigError, DataError
from guard.model_spec import ModelSpec
from guard.options import GuardOptions
from guard.policy import StreamGuard
from guard.probe import Probe
from guard.scores import TokenScores
from guard.shipped import SHIPPED_DIR
from guard.steering import STEERING_SCHEMA_VERSION, SteeringVector
from guard.verdicts import SteerPoint, VerdictRule

SPEC = ModelSpec(model_type="llama", hidden_size=8, num_layers=4, fingerprint="abc")


def _vector(default_alpha: float | None = None) -> SteeringVector:
    return SteeringVector.from_vectors(np.ones((1, 8), np.float32), (2,), SPEC, kind="t", default_alpha=default_alpha)


def test_default_alpha_roundtrips_and_a_manifest_without_it_still_loads_at_schema_version_1(tmp_path):
    _vector(0.15).save(tmp_path / "with")
    assert SteeringVector.load(tmp_path / "with").manifest.default_alpha == 0.15
    _vector().save(tmp_path / "without")
    raw = json.loads((tmp_path / "without.json").read_text())
    del raw["default_alpha"]  # written by a guard from before the field
    (tmp_path / "without.json").write_text(json.dumps(raw))
    back = SteeringVector.load(tmp_path / "without")
    assert back.manifest.default_alpha is None and back.manifest.schema_version == STEERING_SCHEMA_VERSION == 1


def test_non_finite_default_alpha_is_refused_at_load(tmp_path):
    _vector(0.1).save(tmp_path / "sv")
    raw = json.loads((tmp_path / "sv.json").read_text())
    (tmp_path / "sv.json").write_text(json.dumps(raw).replace("0.1", "Infinity"))
    with pytest.raises(ArtifactError, match="invalid"):
        SteeringVector.load(tmp_path / "sv")


def _probe(rng: np.random.Generator, labels=("true", "false", "neither")) -> Probe:
    probe = Probe.random(SPEC, layers=(1, 2), labels=labels, seed=3)
    probe.scale = rng.uniform(0.5, 2.0, (2, 8)).astype(np.float32)
    return probe


def test_probe_direction_raises_the_true_minus_false_score_fastest():
    rng = np.random.default_rng(0)
    probe = _probe(rng)
    direction = probe_difference(probe)  # (L, H)
    h = rng.standard_normal((1, 2, 8)).astype(np.float32)

    def margin(rows: np.ndarray) -> np.ndarray:
        s = probe.score(rows)[0]  # (L, k)
        return s[:, 0] - s[:, 1]

    step = 1e-2
    gain = margin(h + step * direction / np.linalg.norm(direction, axis=-1, keepdims=True)) - margin(h)
    for _ in range(20):  # any other unit step of the same size raises the margin less
        other = rng.standard_normal((2, 8))
        other_gain = margin(h + step * other / np.linalg.norm(other, axis=-1, keepdims=True)) - margin(h)
        assert np.all(gain >= other_gain - 1e-6)


def test_probe_direction_is_scaled_like_the_normalised_mean_difference():
    rng = np.random.default_rng(1)
    probe = _probe(rng)
    features = rng.standard_normal((30, 2, 8)) * np.array([2.0, 20.0])[None, :, None]
    labels = np.arange(30) % 2
    got = probe_difference(probe, features)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1),
                               np.linalg.norm(mean_difference(features, labels, normalize=True), axis=-1), rtol=1e-5)
    with pytest.raises(DataError, match="probe's layers"):
        probe_difference(probe, features[:, :1])


def test_probe_direction_needs_true_and_false_labels():
    with pytest.raises(ArtifactError, match="'true' and 'false'"):
        probe_difference(Probe.random(SPEC, layers=(1,), labels=("correct", "incorrect")))


def test_domain_statements_are_affirmative_true_and_false_of_that_domain_only():
    statements = generate_statements()
    chosen = steering_statements(statements, "capital")
    assert chosen and {s.domain for s in chosen} == {"capital"} and {s.label for s in chosen} == {"true", "false"}
    assert not any(s.negated for s in chosen)
    with pytest.raises(ConfigError, match="'atlantis'.*expected one of .*capital"):
        steering_statements(statements, "atlantis")


def test_steer_strength_prefers_the_request_then_the_vectors_default_else_says_how_to_fix():
    assert steer_strength(GuardOptions(mode="steer", steer_alpha=0.3), _vector(0.1)) == 0.3
    assert steer_strength(GuardOptions(mode="steer"), _vector(0.1)) == 0.1
    assert steer_strength(GuardOptions(mode="abstain"), None) is None
    with pytest.raises(ConfigError, match="--default-alpha"):
        steer_strength(GuardOptions(mode="steer"), _vector())
    with pytest.raises(ConfigError, match="steering vector"):
        steer_strength(GuardOptions(mode="steer", steer_alpha=0.3), None)


def _completion(n_prompt: int, tokens: list[int], rows: np.ndarray | None = None) -> GuardedCompletion:
    positions = np.arange(n_prompt + len(tokens) - 1)
    scores = None if rows is None else TokenScores("k", positions, rows, None)
    return GuardedCompletion(list(range(100, 100 + n_prompt)), tokens, "", scores)


def _point(how: str, position: int | None) -> SteerPoint:
    return SteerPoint(kind="sentence", how=how, alpha=0.1, strength=0.2, position=position, kept_chars=0)


def test_continue_request_keeps_the_tokens_before_the_flagged_sentence_and_shrinks_max_tokens():
    completion = _completion(5, [1, 2, 3, 4, 5, 6])
    prompt, steer_from, max_tokens = steered_request(_point("continue", 8), completion, 16)
    assert prompt == completion.prompt_token_ids + [1, 2, 3]  # positions 5, 6, 7 kept; position 8 is steered
    assert (steer_from, max_tokens) == (7, 13)  # row 7 produces the token at position 8


def test_regenerate_request_starts_again_from_the_prompt():
    completion = _completion(5, [1, 2, 3])
    assert steered_request(_point("regenerate", None), completion, 16) == (completion.prompt_token_ids, 4, 16)


def test_token_pieces_join_to_the_text_and_hold_back_split_characters(model_path_or_skip):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path_or_skip)
    text = "Lima is the capital of Peru. Café ☕ costs 3€."
    ids = tok(text)["input_ids"]
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces) and "" in pieces  # a multi-byte character spans two tokens


@pytest.fixture
def model_path_or_skip() -> str:
    from adapters.model_store import resolve_model
    from guard.errors import ModelError

    try:
        return resolve_model("default")
    except ModelError as exc:  # the model folder is prepared by scripts/setup.sh
        pytest.skip(f"default model not prepared: {exc}")


def test_feeding_a_completion_stops_where_the_guard_asks_to_steer():
    rule = VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, [np.arange(1, 20) / 20] * 2))
    guard = StreamGuard(rule, GuardOptions(mode="steer"), steer_strength=0.2)
    good, bad = np.log([[0.95, 0.05]]), np.log([[0.05, 0.95]])  # (L=1, k) raw scores
    rows = np.stack([good] * 3 + [good, good, bad, bad, good])  # positions 0..7: prompt 0-2, answer from 3
    completion = _completion(3, [10, 11, 12, 13, 14, 15], rows)
    events = feed_completion(guard, completion, ["Good.", " Bad", ".", " More", ".", ""], start=3)
    assert guard.stopped and guard.steered.position == 4 and "".join(e.text for e in events) == "Good."


def test_the_default_model_ships_a_steering_vector_found_apart_from_its_probe_and_gate():
    from guard.shipped import shipped_probe, shipped_steering

    fingerprint = json.loads((SHIPPED_DIR / "smollm2-135m-instruct.json").read_text())["model_fingerprint"]
    steering = shipped_steering(fingerprint)
    assert steering is not None and steering.name == "smollm2-135m-instruct-steering.safetensors"
    assert shipped_probe(fingerprint).name == "smollm2-135m-instruct.safetensors"
    assert shipped_probe(fingerprint, gate=True).name == "smollm2-135m-instruct-gate.safetensors"
    vector = SteeringVector.load(steering)
    assert vector.manifest.default_alpha is not None and vector.manifest.default_alpha > 0
    assert shipped_steering("no-such-model") is None
