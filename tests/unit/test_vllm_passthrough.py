"""`guard serve -- <vllm serve arguments>`: settings carry them, vLLM's own parser checks them before the engine
starts, and the flags the guard must own are refused naming the flag, why, and what to use instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.http.settings import ServeSettings
from guard.errors import ConfigError

pytest.importorskip("vllm")

from adapters.vllm.server_args import api_server_argv, parse_vllm_args  # noqa: E402


def test_passed_through_flags_parse_as_vllm_reads_them():
    given = parse_vllm_args(["--max-num-seqs", "4", "--dtype", "float32", "-tp", "2", "--gpu-memory-utilization=0.5"],
                            "some/model")
    assert (given.max_num_seqs, given.dtype, given.tensor_parallel_size) == (4, "float32", 2)
    assert given.gpu_memory_utilization == 0.5


@pytest.mark.parametrize(("args", "named"), [
    (["--port", "9"], "--port=9 cannot be passed through guard serve: .*use guard's --port"),
    (["--api-key", "k"], "--api-key=.*use guard's --api-key"),
    (["--model", "other/model"], "--model='other/model' cannot be passed.*guard's --model"),
    (["other/model"], "model \\(positional\\)='other/model'"),
    (["--additional-config", "{}"], "--additional-config=.*carries guard's capture settings"),
    (["--worker-extension-cls", "x.Y"], "--worker-extension-cls='x.Y'"),
    (["--served-model-name", "x"], "--served-model-name=.*served_model_name"),
    (["--speculative-config", '{"method": "ngram"}'], "--speculative-config=.*captured rows no longer map"),
    (["-pp", "2"], "--pipeline-parallel-size=2 is not supported by guard's capture \\(only 1\\).*tensor-parallel"),
    (["--data-parallel-size", "2"], "--data-parallel-size=2 .*one guard serve per replica behind a load balancer"),
])
def test_flags_the_guard_owns_are_refused_naming_the_flag_and_the_fix(args, named):
    with pytest.raises(ConfigError, match=named):
        parse_vllm_args(args, "some/model")


@pytest.mark.parametrize(("args", "said"), [
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--max-num-seqs", "many"], "argument --max-num-seqs: invalid int value: 'many'"),
])
def test_arguments_vllm_cannot_parse_fail_before_the_engine_starts_in_vllms_words(args, said):
    with pytest.raises(ConfigError, match=f"after '--' \\(or vllm_args\\) are invalid: {said}"):
        parse_vllm_args(args, "some/model")


def test_passed_through_flags_come_last_so_they_win_over_guards_own():
    kwargs = {"model": "m", "dtype": "float32", "max_num_seqs": 64, "additional_config": {"guard": {}}}
    argv = api_server_argv(kwargs, extra=["--max-num-seqs", "4", "--dtype", "bfloat16"])
    assert argv[-4:] == ["--max-num-seqs", "4", "--dtype", "bfloat16"]
    assert argv.index("--dtype") < len(argv) - 4  # guard's own value is earlier: vLLM keeps the last


def test_yaml_list_and_environment_string_both_carry_vllm_args_and_mirrored_flags_update_the_settings(
        tmp_path, monkeypatch):
    config = tmp_path / "serve.yaml"
    config.write_text("vllm_args: ['--max-model-len', '300', '--max-num-seqs=3']\n")
    settings = ServeSettings.build(config=str(config))
    assert settings.vllm_args == ("--max-model-len", "300", "--max-num-seqs=3")
    assert (settings.max_model_len, settings.max_num_seqs) == (300, 3)
    monkeypatch.setenv("GUARD_VLLM_ARGS", "--enforce-eager --chat-template '/a b/t.jinja'")
    from_env = ServeSettings.build()
    assert from_env.vllm_args == ("--enforce-eager", "--chat-template", "/a b/t.jinja") and from_env.enforce_eager


def test_the_command_line_appends_its_vllm_args_to_the_configs(tmp_path):
    from adapters.http.cli import _with_vllm_args
    from guard.__main__ import build_parser

    config = tmp_path / "serve.yaml"
    config.write_text("port: 9001\nvllm_args: ['--max-num-seqs', '3']\n")
    args = build_parser().parse_args(["serve", "--config", str(config), "--", "--max-num-seqs", "5", "--seed", "1"])
    settings = _with_vllm_args(ServeSettings, ServeSettings.build(config=str(config)), args)
    assert settings.vllm_args == ("--max-num-seqs", "3", "--max-num-seqs", "5", "--seed", "1")
    assert (settings.max_num_seqs, settings.port) == (5, 9001)


@pytest.mark.parametrize(("overrides", "named"), [
    ({"model": "x/y"}, "model='x/y' cannot be overridden in a GuardedLLM: .*GuardConfig.model"),
    ({"additional_config": {}}, "additional_config=\\{\\} cannot be overridden"),
    ({"pipeline_parallel_size": 2}, "pipeline_parallel_size=2 is not supported"),
])
def test_the_python_api_refuses_the_same_guard_owned_engine_arguments(overrides, named):
    from adapters.vllm.server_args import check_engine_overrides

    with pytest.raises(ConfigError, match=named):
        check_engine_overrides(overrides)
    check_engine_overrides({"tensor_parallel_size": 2, "dtype": "bfloat16", "max_num_seqs": 4})


def _probe_in(tmp_path, dtype: str) -> str:
    from adapters.model_store import resolve_model
    from guard.model_spec import ModelSpec
    from guard.probe import Probe

    probe = Probe.random(ModelSpec.from_folder(resolve_model("default")), (14,), labels=("true", "false"))
    probe.manifest = probe.manifest.model_copy(update={"dtype": dtype})
    return str(probe.save(tmp_path / f"probe-{dtype}"))


def test_the_engine_runs_the_dtype_its_probe_was_calibrated_in_unless_told_otherwise(tmp_path):
    from adapters.vllm.engine import engine_arguments
    from guard.config import GuardConfig

    bf16 = _probe_in(tmp_path, "bfloat16")
    assert engine_arguments(GuardConfig.build(probe=bf16), "ipc:///tmp/x")[0]["dtype"] == "bfloat16"
    assert engine_arguments(GuardConfig.build(probe=bf16, dtype="float32"), "ipc:///tmp/x")[0]["dtype"] == "float32"
    # no probe: vLLM's auto on GPUs; on this CPU float32 (auto would mean bfloat16)
    assert engine_arguments(GuardConfig.build(), "ipc:///tmp/x")[0]["dtype"] == "float32"


def test_a_probe_manifest_without_a_dtype_was_calibrated_in_float32(tmp_path):
    import json

    from guard.probe import Probe

    path = _probe_in(tmp_path, "float32")
    manifest_path = Path(path).with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("dtype")
    manifest_path.write_text(json.dumps(manifest))
    assert Probe.load(path).manifest.dtype == "float32"
