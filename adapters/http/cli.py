"""The HTTP servers' commands: ``guard serve`` and ``guard proxy``.

Registered by the ``guard`` command through :func:`register` (see ``guard/__main__.py``); the web
stack is imported only when a command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``serve`` and ``proxy`` to the ``guard`` command's subparsers."""
    serve = sub.add_parser("serve", help="OpenAI-compatible server with verdicts in a `guard` field (docs/serving.md)")
    serve.add_argument("--model", default=None, help="'default', an HF folder or a hub id")
    serve.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the model)")
    _listen_flags(serve)
    serve.add_argument("--gate", default=None, help="pre-generation gate (default: the gate shipped with the probe)")
    serve.add_argument("--no-gate", action="store_true", help="serve without a pre-generation gate")
    serve.add_argument("--steering", default=None, help="steering vector for mode 'steer' (default: the one shipped "
                       "for the model, if any)")
    serve.add_argument("--steer-alpha", type=float, default=None, help="default steering strength (default: the "
                       "vector's)")
    serve.add_argument("--eager", action="store_true", help="run the engine without torch.compile")
    serve.add_argument("--engine-port", type=int, default=None, metavar="PORT",
                       help="also serve vLLM's own app, unguarded, on 127.0.0.1:PORT (comparisons; off by default)")
    _hardening_flags(serve)
    _vllm_args(serve)
    serve.set_defaults(handler=_serve)

    proxy = sub.add_parser("proxy", help="guard fields in front of any OpenAI-compatible API, read by a local model")
    proxy.add_argument("--upstream", default=None, help="the foreign API's base URL, e.g. https://api.example.com/v1")
    proxy.add_argument("--model", default=None, help="reader model: 'default', an HF folder or a hub id")
    proxy.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the reader)")
    _listen_flags(proxy)
    proxy.add_argument("--eager", action="store_true", help="run the reader engine without torch.compile")
    proxy.add_argument("--upstream-timeout", type=float, default=None, help="seconds per read from the upstream")
    proxy.add_argument("--upstream-guarded", action="store_true", default=None,
                       help="the upstream is guard serve: pass the guard object on (mode 'steer' then works)")
    _hardening_flags(proxy)
    _vllm_args(proxy)
    proxy.set_defaults(handler=_proxy)


def _listen_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    parser.add_argument("--config", default=None, help="YAML settings file (see adapters/http/settings.py)")
    parser.add_argument("--mode", default=None, help="default guard mode: flag (default), abstain or pass")


def _vllm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vllm_args", nargs="*", metavar="-- VLLM_ARGS",
                        help="after a lone --: any `vllm serve` arguments for the engine, e.g. -- --max-num-seqs 4 "
                             "--dtype bfloat16 --tensor-parallel-size 2 (after the config file's vllm_args; they win "
                             "over guard's engine defaults)")


def _hardening_flags(parser: argparse.ArgumentParser) -> None:
    """The failure policy, content logging and shutdown deadline (docs/operations.md)."""
    parser.add_argument("--on-guard-failure", default=None, choices=("fail_open", "fail_closed"),
                        help="when the guard cannot judge an answer: pass it marked unverified (fail_open, default) "
                             "or abstain (fail_closed)")
    parser.add_argument("--log-content", action="store_true", default=None,
                        help="log prompts and completions (off by default; the log then holds user data)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="clients must send 'Authorization: Bearer KEY' (prefer GUARD_API_KEY: ps shows arguments)")
    parser.add_argument("--otel", action="store_true", default=None,
                        help="OpenTelemetry spans for requests and upstream calls, to the process's tracer provider "
                             "or OTLP per OTEL_* variables (needs pip install 'guard[otel]')")
    parser.add_argument("--shutdown-timeout", type=float, default=None, metavar="SECONDS",
                        help="on SIGTERM, let running requests finish for at most this long, then abort the rest "
                             "(default 5)")


def _serve(args: argparse.Namespace) -> int:
    from adapters.defaults import default_gate, default_probe, default_steering
    from adapters.http.launch import run
    from adapters.http.settings import ServeSettings

    settings = ServeSettings.build(config=args.config, model=args.model, probe=args.probe, host=args.host,
                                   port=args.port, mode=args.mode, enforce_eager=args.eager or None, gate=args.gate,
                                   use_gate=False if args.no_gate else None, on_guard_failure=args.on_guard_failure,
                                   log_content=args.log_content, steering=args.steering, steer_alpha=args.steer_alpha,
                                   shutdown_timeout=args.shutdown_timeout, engine_port=args.engine_port,
                                   api_key=args.api_key)
    settings = _with_vllm_args(ServeSettings, settings, args)
    probe = settings.probe
    if probe is None:
        probe = default_probe(settings.model)
        settings = settings.model_copy(update={"probe": probe})
    if settings.use_gate and settings.gate is None:
        settings = settings.model_copy(update={"gate": default_gate(settings.model, probe)})
    if settings.steering is None:
        settings = settings.model_copy(update={"steering": default_steering(settings.model)})
    return _until_interrupted(lambda: run(settings))


def _proxy(args: argparse.Namespace) -> int:
    from adapters.defaults import default_probe
    from adapters.http.launch import run_proxy
    from adapters.http.settings import ProxySettings

    settings = ProxySettings.build(config=args.config, upstream=args.upstream, model=args.model, probe=args.probe,
                                   host=args.host, port=args.port, mode=args.mode, enforce_eager=args.eager or None,
                                   upstream_timeout=args.upstream_timeout, on_guard_failure=args.on_guard_failure,
                                   log_content=args.log_content, upstream_guarded=args.upstream_guarded,
                                   shutdown_timeout=args.shutdown_timeout, api_key=args.api_key)
    settings = _with_vllm_args(ProxySettings, settings, args)
    if settings.probe is None:
        settings = settings.model_copy(update={"probe": default_probe(settings.model)})
    return _until_interrupted(lambda: run_proxy(settings))


def _with_vllm_args(cls: Any, settings: Any, args: argparse.Namespace) -> Any:
    """The settings with the arguments after ``--`` appended to the config's ``vllm_args`` (validated again, so
    mirrored flags such as --max-model-len update their settings)."""
    if not args.vllm_args:
        return settings
    values = {name: getattr(settings, name) for name in settings.model_fields_set}
    return cls.build(**{**values, "vllm_args": (*settings.vllm_args, *args.vllm_args)})


def _until_interrupted(serve: Callable[[], None]) -> int:
    """Serve until Ctrl-C or SIGTERM (by then the engine has been stopped); exit status 0."""
    try:
        serve()
    except KeyboardInterrupt:
        pass
    return 0
