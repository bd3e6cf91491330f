"""vLLM's own OpenAI server app, built inside this process: where ``guard serve`` runs (issue 18, part 0).

``guard serve`` used to relay HTTP to a child ``vllm.entrypoints.openai.api_server``; measured against a
prototype in one process (``benchmarks/in_server.py``, ``benchmarks/results/serve-design-cpu.json``), the
second loopback hop cost more than twice the guard's CPU per request and per streamed chunk. So the guard's
front end now builds vLLM's serving app itself, from the same ``vllm serve`` argument vector (vLLM's parser,
vLLM's engine client, vLLM's routes and state) and calls it without a socket
(:class:`adapters.http.in_process.InProcessTransport`). vLLM's engine core still runs in processes of its own,
started by its engine client; :func:`adapters.vllm.tether.tether` makes each one end with the front end, even
when the front end is SIGKILLed.

Every vLLM name this needs is imported here, behind :func:`adapters.vllm.internals.check_version`, and
``tests/unit/test_vllm_api_server.py`` fails loudly when an upgrade moves one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.vllm import internals
from adapters.vllm.tether import TETHER_ENV

__all__ = ["VllmApp", "vllm_app", "engine_dead", "engine_processes"]


@dataclass(frozen=True)
class VllmApp:
    """vLLM's serving app over a started engine, built in this process."""

    #: the ASGI app (vLLM's routes, middleware and state; its lifespan is running)
    app: Any
    #: vLLM's engine client (``AsyncLLM``)
    client: Any
    #: the ``vllm serve`` arguments the app and engine were built from
    args: Any


@asynccontextmanager
async def vllm_app(argv: Sequence[str]) -> AsyncIterator[VllmApp]:
    """Start vLLM's engine and build its OpenAI app from ``vllm serve`` arguments; stop the engine on exit.

    What ``vllm serve`` does before listening, in this process: its parser, its start-up log (version, model,
    non-default arguments), its tool/reasoning parser checks, its engine client, its app and app state, its
    lifespan (periodic stats logging). The engine core processes are tethered to this process
    (:func:`adapters.vllm.tether.tether`).

    Args:
        argv: ``vllm serve`` arguments (no program name), e.g. from
            :func:`adapters.vllm.server_args.api_server_argv` without its first three items.

    Raises:
        ConfigError: an argument vLLM's parser refuses.
        AdapterError: an untested vLLM release.
    """
    internals.check_version()
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import validate_api_server_args
    from vllm.entrypoints.serve.utils.api_utils import log_non_default_args

    from adapters.vllm.server_args import _parser

    args = _parser().parse_args(list(argv))
    validate_api_server_args(args)  # type: ignore[no-untyped-call]
    os.environ[TETHER_ENV] = str(os.getpid())  # read by tether() in the engine core processes started below
    async with build_async_engine_client(args) as client:
        log_non_default_args(args)  # once the engine's config has configured vLLM's logging
        tasks = await client.get_supported_tasks()
        app = build_app(args, tasks, client.model_config)
        await init_app_state(client, app.state, args, tasks)
        async with app.router.lifespan_context(app):
            yield VllmApp(app, client, args)


def engine_dead(client: Any) -> bool:
    """Whether vLLM's engine has died (what vLLM's own server watches before it stops)."""
    return bool(client.errored) and not bool(client.is_running)


def engine_processes(client: Any) -> dict[int, int | None]:
    """The engine core processes the client started: PID -> exit code (``None`` while it runs; negative: the
    signal that ended it). Empty where this vLLM does not say."""
    manager = getattr(getattr(getattr(client, "engine_core", None), "resources", None), "engine_manager", None)
    return {int(p.pid): p.exitcode for p in getattr(manager, "processes", ()) if p.pid is not None}
