"""guard proxy settings: the foreign upstream URL, with serve's precedence and clear refusals."""

from __future__ import annotations

import pytest

from adapters.http.settings import ProxySettings, ServeSettings
from guard.errors import ConfigError


def test_the_upstream_follows_defaults_yaml_env_flag_precedence(tmp_path, monkeypatch):
    config = tmp_path / "proxy.yaml"
    config.write_text("upstream: http://from-yaml:9000/v1\nmode: abstain\nmodel: default\n")
    assert ProxySettings.build(config=str(config)).upstream == "http://from-yaml:9000/v1"
    monkeypatch.setenv("GUARD_UPSTREAM", "https://from-env.example/api/v1/")
    from_env = ProxySettings.build(config=str(config))
    assert (from_env.upstream, from_env.mode) == ("https://from-env.example/api/v1", "abstain")
    assert ProxySettings.build(config=str(config), upstream="http://flag:1").upstream == "http://flag:1/v1"


def test_the_reader_engine_settings_are_serves_and_the_gate_is_off():
    s = ProxySettings.build(upstream="http://127.0.0.1:9000/v1", model="default", upstream_timeout=30)
    assert (s.model, s.upstream_timeout, s.use_gate, s.port) == ("default", 30.0, False, 8000)
    with pytest.raises(ConfigError, match="no pre-generation gate"):
        ProxySettings.build(upstream="http://127.0.0.1:9000", use_gate=True)


@pytest.mark.parametrize(("url", "needle"), [
    ("ftp://host/v1", "expected an http:// or https:// base url"),
    ("api.example.com/v1", "expected an http:// or https:// base url"),
    ("http://host:port/v1", "port"),
    ("http://host/v1?key=1", "without query or fragment"),
])
def test_a_bad_upstream_url_is_refused_naming_its_source(url, needle):
    with pytest.raises(ConfigError) as info:
        ProxySettings.build(upstream=url)
    assert needle in str(info.value) and "(from --upstream)" in str(info.value) and "guard proxy" in str(info.value)


def test_credentials_in_the_upstream_url_are_refused_without_being_echoed():
    with pytest.raises(ConfigError) as info:
        ProxySettings.build(upstream="https://user:sk-very-secret@api.example.com/v1")
    assert "sk-very-secret" not in str(info.value) and "authorization header" in str(info.value)


def test_a_missing_upstream_says_how_to_give_one():
    with pytest.raises(ConfigError, match="upstream is required: pass --upstream, set GUARD_UPSTREAM"):
        ProxySettings.build()


def test_guard_serve_does_not_accept_an_upstream(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("upstream: http://x/v1\n")
    with pytest.raises(ConfigError, match="'upstream' .* is not a setting of guard serve"):
        ServeSettings.build(config=str(config))


def test_the_cli_refuses_a_proxy_without_upstream_before_starting_anything(capsys, monkeypatch):
    from guard.__main__ import build_parser, main

    monkeypatch.delenv("GUARD_UPSTREAM", raising=False)
    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # main() sets it; restored after the test
    args = build_parser().parse_args(["proxy", "--upstream", "http://h:1/v1", "--upstream-timeout", "5", "--eager"])
    assert (args.upstream, args.upstream_timeout, args.eager) == ("http://h:1/v1", 5.0, True)
    assert main(["proxy", "--port", "9"]) == 2
    assert "upstream is required: pass --upstream" in capsys.readouterr().err
