from __future__ import annotations

import pytest

from guard.capture_spec import HOOKS_VERSION, CaptureSpec, check_endpoint
from guard.config import GuardConfig
from guard.errors import ConfigError
from guard.request_options import RequestOptions, parse_request_options


def test_request_without_guard_key_is_not_guarded():
    assert parse_request_options(None) is None
    assert parse_request_options({"other": 1}) is None


def test_request_options_roundtrip_through_extra_args():
    opts = RequestOptions(key="abc-1", hidden=True)
    assert parse_request_options(opts.to_extra_args()) == opts


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, 5, "ünï"])
def test_invalid_guard_key_names_the_field_value_and_fix(bad):
    with pytest.raises(ConfigError, match="guard_key=.*expected 1-128 characters"):
        parse_request_options({"guard_key": bad})


def test_hidden_without_key_is_an_error_not_silently_ignored():
    with pytest.raises(ConfigError, match="add guard_key"):
        parse_request_options({"guard_hidden": 1})


def test_invalid_hidden_flag_is_rejected():
    with pytest.raises(ConfigError, match="guard_hidden=2"):
        parse_request_options({"guard_key": "a", "guard_hidden": 2})


def test_capture_spec_roundtrips_through_additional_config():
    spec = CaptureSpec(layers=(3, 14), probe="/p.safetensors", hidden=True)
    assert CaptureSpec.from_additional_config(spec.to_additional_config()) == spec
    assert CaptureSpec.from_additional_config({}) is None


def test_capture_spec_of_another_hooks_version_is_refused():
    raw = CaptureSpec(layers=(1,)).to_additional_config()
    raw["guard"]["hooks_version"] = HOOKS_VERSION + 1
    with pytest.raises(ConfigError, match="hooks_version"):
        CaptureSpec.from_additional_config(raw)


@pytest.mark.parametrize("bad", [None, "", "http://x", "localhost:5555"])
def test_score_endpoint_of_unknown_scheme_is_refused_with_the_accepted_forms(bad):
    with pytest.raises(ConfigError, match="expected inproc://NAME, ipc:///path.sock or tcp://host:port"):
        check_endpoint(bad)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555",
                                      "ipc:///tmp/x.sock", "inproc://scores"])
def test_a_loopback_or_local_score_endpoint_is_accepted(endpoint):
    assert check_endpoint(endpoint) == endpoint


def test_a_tcp_score_endpoint_off_loopback_needs_the_explicit_opt_in(monkeypatch):
    monkeypatch.delenv("GUARD_SCORE_REMOTE", raising=False)
    with pytest.raises(ConfigError, match="not on the loopback interface.*GUARD_SCORE_REMOTE=1"):
        check_endpoint("tcp://10.0.0.7:5555")
    with pytest.raises(ConfigError, match="not on the loopback"):
        check_endpoint("tcp://0.0.0.0:5555")  # every interface
    monkeypatch.setenv("GUARD_SCORE_REMOTE", "1")
    assert check_endpoint("tcp://10.0.0.7:5555") == "tcp://10.0.0.7:5555"


def test_score_endpoint_is_not_part_of_the_compile_cache_relevant_spec():
    assert "endpoint" not in CaptureSpec(layers=(1,)).to_additional_config()["guard"]


def test_config_reads_env_then_overrides(monkeypatch):
    monkeypatch.setenv("GUARD_LAYERS", "3,5")
    monkeypatch.setenv("GUARD_ENFORCE_EAGER", "1")
    cfg = GuardConfig.build(max_model_len=512)
    assert cfg.layers == (3, 5) and cfg.enforce_eager and cfg.max_model_len == 512
    assert GuardConfig.build(layers=(7,)).layers == (7,)


def test_config_rejects_bad_env_value_with_its_name(monkeypatch):
    monkeypatch.setenv("GUARD_LAYERS", "3,x")
    with pytest.raises(ConfigError, match="GUARD_LAYERS='3,x'"):
        GuardConfig.build()


def test_config_rejects_duplicate_layers():
    with pytest.raises(ConfigError, match="distinct"):
        GuardConfig.build(layers=(3, 3))
