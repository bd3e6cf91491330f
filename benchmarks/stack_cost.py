"""What ``guard serve``'s whole in-process stack costs per streamed chunk, without an engine: a minute's check of
what ``benchmarks.in_server --long-tokens`` measures with the engine in twenty.

The guarded app (:func:`adapters.http.serve.router.create_app`, the shipped probe and gate) calls a stand-in for
vLLM's OpenAI app through :class:`adapters.http.in_process.InProcessTransport`, as ``guard serve`` does. The
stand-in is a raw ASGI app that answers a streamed request with vLLM-shaped chunks (chat and completions, token
ids, the prompt's ids on the first chunk) and publishes a fused score row per token into the guard's
:class:`~adapters.http.score_feed.ScoreFeed` one step late, as the engine does; between chunks it yields to the
event loop (an engine step). The ``direct`` path calls the stand-in itself with the same body; both answer into
an ASGI ``send`` that keeps nothing, so the socket, equal on both paths, is left out. Per request, the thread
CPU time of each path is taken; the guard's cost is the difference of the medians, at two stream lengths, and
its slope over the chunks is the cost of one more chunk (the intercept: the fixed cost of a streamed request).

Two arms alternate every round: ``warm`` (a GPU deployment, where the engine never passes through the CPU's
caches) and ``evicted`` (a 64 MiB buffer written before every chunk on both paths, as a CPU engine sweeps its
weights through the caches every step; the write's own time cancels in the difference).

Usage::

    python -m benchmarks.stack_cost --out benchmarks/results/stack-cost-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import httpx
import numpy as np

from adapters.http.in_process import ENGINE_URL, InProcessTransport
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.router import create_app
from adapters.http.settings import ServeSettings
from benchmarks.chunk_cost import _EVICT_BYTES, PROBE, PROMPT_TOKENS, TOKENS
from benchmarks.chunk_cost import _chunk as chat_chunk
from benchmarks.machine import machine
from benchmarks.record import save_record, timed_record
from guard.gating import GateRule
from guard.heads import check_gate
from guard.probe import Probe
from guard.scores import ScoreSegment
from guard.shipped import SHIPPED_DIR

__all__ = ["ARMS", "LENGTHS", "main", "run"]

ARMS = ("warm", "evicted")
LENGTHS = (16, 48)


class _Pieces:
    """Token texts of the stand-in's ids (read by non-streamed answers only)."""

    def pieces(self, token_ids: list[int]) -> list[str]:
        return [TOKENS[i % len(TOKENS)] for i in token_ids]


def _chunk(i: int, n: int, chat: bool) -> bytes:
    """vLLM's ``i``-th event of ``n``, chat (:func:`benchmarks.chunk_cost._chunk`'s chunk) or completions."""
    if chat:
        return ("data: " + chat_chunk(i, i == n - 1) + "\n\n").encode()
    choice: dict[str, Any] = {"index": 0, "text": TOKENS[i % len(TOKENS)], "logprobs": None,
                              "finish_reason": "length" if i == n - 1 else None, "token_ids": [1000 + i]}
    if i == 0:
        choice["prompt_token_ids"] = list(range(PROMPT_TOKENS))
    chunk = {"id": "cmpl-bench", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}
    return ("data: " + json.dumps(chunk) + "\n\n").encode()


class _Stack:
    """The guarded app over the stand-in engine app, and the stand-in itself."""

    def __init__(self) -> None:
        probe = Probe.load(SHIPPED_DIR / f"{PROBE}.safetensors")
        gate_probe = Probe.load(SHIPPED_DIR / f"{PROBE}-gate.safetensors")
        check_gate(probe, gate_probe)
        self.feed = ScoreFeed()
        columns = probe.outputs + len(gate_probe.labels)
        rows = np.random.default_rng(0).normal(size=(PROMPT_TOKENS + max(LENGTHS), len(probe.manifest.layers),
                                                     columns))
        self.rows = rows.astype(np.float32)
        self.evict: np.ndarray | None = None
        client = httpx.AsyncClient(transport=InProcessTransport(self.engine), base_url=ENGINE_URL)
        self.app = create_app(ServeSettings.build(served_model_name="m"), ENGINE_URL, self.feed, probe, _Pieces(),
                              client=client, gate=GateRule(gate_probe, offset=probe.outputs))

    async def engine(self, scope: Any, receive: Any, send: Any) -> None:
        """The stand-in for vLLM's app: a streamed answer of ``max_tokens`` chunks, with the engine's scores."""
        body = json.loads((await receive())["body"])
        key, n = body["vllm_xargs"]["guard_key"], body["max_tokens"]
        chat = scope["path"].endswith("/chat/completions")
        self.feed.publish([ScoreSegment(key, 0, self.rows[:PROMPT_TOKENS])])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        for i in range(n):
            if i:  # the previous token's row comes with this step
                p = PROMPT_TOKENS + i - 1
                self.feed.publish([ScoreSegment(key, p, self.rows[p : p + 1])])
            await asyncio.sleep(0)  # an engine step
            if self.evict is not None:
                self.evict[::16] += 1  # one write per cache line
            await send({"type": "http.response.body", "body": _chunk(i, n, chat), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _call(app: Any, path: str, body: dict[str, Any]) -> None:
    raw, read = json.dumps(body).encode(), False

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "server": ("bench", 80),
             "client": ("127.0.0.1", 1), "state": {}}
    await app(scope, receive, send)


def _body(i: int, n: int, direct: bool) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": "m", "max_tokens": n, "stream": True, "temperature": 0}
    if i % 2:
        body["messages"] = [{"role": "user", "content": "What is the capital of France?"}]
    else:
        body["prompt"] = "The capital of France is"
    if direct:  # what the guard adds upstream
        body.update(vllm_xargs={"guard_key": uuid.uuid4().hex}, return_token_ids=True)
    return ("/v1/chat/completions" if i % 2 else "/v1/completions"), body


async def _requests(stack: _Stack, n: int, requests: int) -> dict[str, list[float]]:
    """CPU seconds of each guarded and each direct request (alternating, chat and completions alternating)."""
    out: dict[str, list[float]] = {"guard": [], "direct": []}
    for i in range(requests):
        for path in ("guard", "direct") if i % 2 else ("direct", "guard"):
            route, body = _body(i, n, path == "direct")
            start = time.thread_time()
            await _call(stack.app if path == "guard" else stack.engine, route, body)
            out[path].append(time.thread_time() - start)
    return out


def run(requests: int = 60, rounds: int = 3) -> dict[str, Any]:
    """Per arm: the guard's CPU per streamed request at each length, the marginal chunk cost and the fixed part.

    Raises:
        ValueError: a count is not positive.
    """
    if min(requests, rounds) < 1:
        raise ValueError(f"requests={requests}, rounds={rounds}: expected positive integers")
    stack = _Stack()
    evict = np.zeros(_EVICT_BYTES // 4, np.float32)
    for n in LENGTHS:  # untimed: first calls, lazy imports, the gate's threshold cache
        asyncio.run(_requests(stack, n, 4))
    added: dict[str, dict[int, list[float]]] = {a: {n: [] for n in LENGTHS} for a in ARMS}
    for r in range(rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            stack.evict = evict if arm == "evicted" else None
            for n in LENGTHS:
                cpu = asyncio.run(_requests(stack, n, requests))
                added[arm][n].append(float(np.median(cpu["guard"]) - np.median(cpu["direct"])) * 1e3)
    results: dict[str, Any] = {}
    (short, long) = LENGTHS
    for arm in ARMS:
        per_request = {n: float(np.median(added[arm][n])) for n in LENGTHS}
        slope = (per_request[long] - per_request[short]) / (long - short)
        results[arm] = {"per_request_ms": {str(n): per_request[n] for n in LENGTHS},
                        "per_round_per_request_ms": {str(n): added[arm][n] for n in LENGTHS},
                        "per_chunk_us": slope * 1e3, "fixed_per_request_ms": per_request[short] - slope * short}
    return {"requests": requests, "rounds": rounds, "lengths": list(LENGTHS), "evict_bytes": _EVICT_BYTES,
            "results": results}


def summary_text(record: dict[str, Any]) -> str:
    """One line per arm: the marginal chunk cost and the fixed part of a streamed request."""
    lines = [f"guard serve's in-process stack, no engine ({record['requests']} requests per path, length and round, "
             f"{record['rounds']} rounds; medians):"]
    for arm, res in record["results"].items():
        lines.append(f"  {arm:8s} {res['per_chunk_us']:6.1f} µs per chunk, {res['fixed_per_request_ms']:.2f} ms "
                     "fixed per streamed request")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run and print (and with ``--out`` save) the record."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stack_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per path, length and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    record = timed_record("python -m benchmarks.stack_cost " + " ".join(sys.argv[1:] if argv is None else argv),
                          machine("numpy", "httpx", "fastapi", "orjson"), lambda: run(args.requests, args.rounds))
    save_record(args.out, record, summary_text(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
