"""guard serve settings: defaults < YAML file < GUARD_* environment < command-line flags, and clear refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.http.settings import ServeSettings
from guard.errors import ConfigError


@pytest.fixture
def yaml_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("port: 9001\nmode: abstain\nhost: 0.0.0.0\nscore_timeout: 2.5\nabstain_message: Not sure.\n")
    return path


def test_defaults_listen_on_loopback_in_flag_mode():
    s = ServeSettings.build()
    assert (s.host, s.port, s.mode, s.model, s.probe, s.served_name) == ("127.0.0.1", 8000, "flag", "default", None,
                                                                        "default")


def test_each_layer_overrides_the_one_below(yaml_file, monkeypatch):
    from_yaml = ServeSettings.build(config=str(yaml_file))
    assert (from_yaml.port, from_yaml.mode, from_yaml.host, from_yaml.score_timeout) == (
        9001, "abstain", "0.0.0.0", 2.5)
    monkeypatch.setenv("GUARD_PORT", "9002")
    monkeypatch.setenv("GUARD_MODE", "pass")
    from_env = ServeSettings.build(config=str(yaml_file))
    assert (from_env.port, from_env.mode, from_env.host) == (9002, "pass", "0.0.0.0")
    from_flags = ServeSettings.build(config=str(yaml_file), port=9003, mode=None)  # None: flag not given
    assert (from_flags.port, from_flags.mode, from_flags.abstain_message) == (9003, "pass", "Not sure.")


def test_the_config_file_can_come_from_the_environment(yaml_file, monkeypatch):
    monkeypatch.setenv("GUARD_CONFIG", str(yaml_file))
    assert ServeSettings.build().port == 9001


@pytest.mark.parametrize(("where", "needle"), [
    ("flag", "port=70000 (from --port) is invalid"),
    ("env", "port='eighty' (from GUARD_PORT) is invalid"),
    ("yaml", "(from config file"),
])
def test_a_bad_value_names_the_setting_its_source_and_what_was_expected(where, needle, tmp_path, monkeypatch):
    flags = {}
    if where == "flag":
        flags["port"] = 70000
    elif where == "env":
        monkeypatch.setenv("GUARD_PORT", "eighty")
    else:
        path = tmp_path / "bad.yaml"
        path.write_text("score_timeout: -1\n")
        flags["config"] = str(path)
    with pytest.raises(ConfigError) as info:
        ServeSettings.build(**flags)
    assert needle in str(info.value) and "fix" in str(info.value)


def test_a_bad_mode_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="mode='redact' .*'pass', 'flag', 'abstain' or 'steer'"):
        ServeSettings.build(mode="redact")


def test_an_unknown_yaml_key_is_refused_with_the_known_ones(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("prot: 9000\n")
    with pytest.raises(ConfigError, match="'prot' .* is not a setting of guard serve: expected one of .*port"):
        ServeSettings.build(config=str(path))


@pytest.mark.parametrize(("text", "needle"), [
    (None, "cannot be read"),
    ("- a\n- b\n", "holds a list; expected a mapping"),
    ("port: [\n", "is not valid YAML"),
    ("config: other.yaml\n", "cannot name another one"),
])
def test_an_unusable_config_file_is_refused(text, needle, tmp_path):
    path = tmp_path / "serve.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        ServeSettings.build(config=str(path))


def test_settings_are_frozen():
    s = ServeSettings.build()
    with pytest.raises(ValidationError, match="frozen"):
        s.port = 1
