"""The guard's CPU cost per streamed chunk in process, with warm caches and with caches evicted between chunks.

``guard serve`` handles each upstream chunk in :func:`adapters.http.serve.streaming._guard_chunk` (what the
server's ``guard_cpu_seconds`` times). Here that function runs without an engine or a network: the
shipped probe and gate, a fused score row per token published into a real
:class:`~adapters.http.score_feed.ScoreFeed` one step late (as the engine delivers them), and vLLM-shaped
chat chunks (16 tokens, a sentence closing at the 8th). Per chunk, the thread CPU time of parsing the
upstream JSON, of the guard's work and of encoding the client's chunk is recorded, in two arms that
alternate every round:

- ``warm``: chunk after chunk, as a profiler in a loop sees it;
- ``evicted``: a 64 MiB buffer is written between chunks, as an engine on the same CPU does when it
  sweeps the model's weights through the caches every step (a 135M-parameter float32 model is
  540 MB), so every chunk starts with the server's code and data out of the caches.

The ``evicted`` arm is what a CPU deployment pays (the live server's ``guard_cpu_seconds`` per chunk
comes out close to it); ``warm`` is the floor, near what a GPU deployment pays, where the weights
never pass through the CPU's caches.

Usage::

    python -m benchmarks.chunk_cost --out benchmarks/results/chunk-cost-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.protocol import guarded_request
from adapters.http.serve.session import GuardSession
from adapters.http.serve.streaming import _guard_chunk, _Stream
from adapters.http.sse import encode, parse_chunk
from benchmarks.latency import distribution
from benchmarks.machine import machine
from benchmarks.record import save_record, timed_record
from guard.gating import GateRule
from guard.metrics import GuardMetrics
from guard.probe import Probe
from guard.scores import ScoreSegment
from guard.shipped import SHIPPED_DIR
from guard.verdicts import VerdictRule

__all__ = ["ARMS", "PARTS", "main", "run"]

ARMS = ("warm", "evicted")
PARTS = ("parse", "guard", "encode")
PROBE = "smollm2-135m-instruct"
TOKENS = ["The", " capital", " of", " France", " is", " Paris", ".", " It", " lies", " on", " the", " Seine",
          " river", " and", " is", " large"]  # a sentence closes at the 8th token (" It" begins the next)
PROMPT_TOKENS = 30
_EVICT_BYTES = 64 << 20


class _Setup:
    """The shipped probe and gate, as guard serve loads them."""

    def __init__(self) -> None:
        probe = Probe.load(SHIPPED_DIR / f"{PROBE}.safetensors")
        gate = Probe.load(SHIPPED_DIR / f"{PROBE}-gate.safetensors")
        self.rule, self.gate = VerdictRule.from_probe(probe), GateRule(gate, offset=probe.outputs)
        self.shape = (len(probe.manifest.layers), probe.outputs + len(gate.labels))  # labels, shift, gate
        self.metrics = GuardMetrics()


def _chunk(i: int, last: bool) -> str:
    """vLLM's ``i``-th chat chunk (token ids on, the prompt's ids on the first; the tokens repeat past 16)."""
    text = TOKENS[i % len(TOKENS)]
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text} if i else {"role": "assistant", "content": text},
                              "logprobs": None, "finish_reason": "length" if last else None, "token_ids": [1000 + i]}
    chunk: dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m",
                             "choices": [choice]}
    if i == 0:
        chunk["prompt_token_ids"] = list(range(PROMPT_TOKENS))
    return json.dumps(chunk)


def _drive(coroutine: Any) -> Any:
    """Run a coroutine that never suspends (every score it waits for has arrived)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the chunk's guard work waited for a score: the bench publishes every score before it")


def _request(setup: _Setup, mode: str, rng: np.random.Generator, evict: np.ndarray | None) -> np.ndarray:
    """One streamed answer; returns the CPU seconds ``(chunks, parts)``."""
    feed = ScoreFeed()
    request = guarded_request({"model": "m", "messages": [{"role": "user", "content": "?"}], "stream": True,
                               "guard": {"mode": mode}}, "chat_completions", "m", "flag")
    session = GuardSession(setup.rule, request.options, request.key, feed, setup.metrics, 5.0, gate=setup.gate)
    stream = _Stream(None, request, session)  # type: ignore[arg-type]  # the relay is not used by _guard_chunk
    feed.publish([ScoreSegment(request.key, 0, rng.normal(size=(PROMPT_TOKENS, *setup.shape)).astype(np.float32))])
    out = np.zeros((len(TOKENS), len(PARTS)))
    for i in range(len(TOKENS)):
        if i:  # the previous token's score: it came with this step
            row = rng.normal(size=(1, *setup.shape)).astype(np.float32)
            feed.publish([ScoreSegment(request.key, PROMPT_TOKENS + i - 1, row)])
        data = _chunk(i, i == len(TOKENS) - 1)
        if evict is not None:
            evict[::16] += 1  # one write per cache line
        t0 = time.thread_time()
        chunk = parse_chunk(data, "bench")
        t1 = time.thread_time()
        shaped = _drive(_guard_chunk(stream, chunk))
        t2 = time.thread_time()
        encode(shaped)
        out[i] = (t1 - t0, t2 - t1, time.thread_time() - t2)
    session.close()
    return out


def run(requests: int = 100, rounds: int = 5, modes: tuple[str, ...] = ("flag", "abstain")) -> dict[str, Any]:
    """Per-chunk CPU microseconds by arm, mode and part, with per-round medians and per-position means.

    Raises:
        ValueError: a count is not positive.
    """
    if min(requests, rounds) < 1:
        raise ValueError(f"requests={requests}, rounds={rounds}: expected positive integers")
    setup, rng = _Setup(), np.random.default_rng(0)
    evict = np.zeros(_EVICT_BYTES // 4, np.float32)
    for mode in modes:  # untimed: first calls, lazy imports
        _request(setup, mode, rng, None)
    samples: dict[str, dict[str, list[np.ndarray]]] = {a: {m: [] for m in modes} for a in ARMS}
    for r in range(rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            for mode in modes:
                samples[arm][mode].append(np.stack([_request(setup, mode, rng, evict if arm == "evicted" else None)
                                                    for _ in range(requests)]))
    results: dict[str, Any] = {}
    for arm in ARMS:
        for mode in modes:
            per_round = [s.mean(axis=(0, 1)) * 1e6 for s in samples[arm][mode]]  # (parts,) µs per chunk
            everything = np.concatenate(samples[arm][mode]) * 1e6  # (requests, chunks, parts)
            results[f"{arm}/{mode}"] = {
                "per_chunk_us": {p: float(np.median([x[j] for x in per_round])) for j, p in enumerate(PARTS)},
                "per_round_us": {p: [float(x[j]) for x in per_round] for j, p in enumerate(PARTS)},
                "guard_by_position_us": everything[:, :, 1].mean(axis=0).round(1).tolist(),
                "guard_per_chunk_distribution_us": distribution(everything[:, :, 1].ravel().tolist()),
            }
    return {"requests": requests, "rounds": rounds, "modes": list(modes), "tokens": len(TOKENS),
            "evict_bytes": _EVICT_BYTES, "results": results}


def summary_text(record: dict[str, Any]) -> str:
    """One line per arm and mode: µs per chunk for each part."""
    lines = [f"CPU per streamed chunk in process ({record['requests']} requests x {record['tokens']} chunks x "
             f"{record['rounds']} rounds per arm; median of round means, µs):"]
    for name, res in record["results"].items():
        us = res["per_chunk_us"]
        lines.append(f"  {name:16s} parse {us['parse']:6.1f}  guard {us['guard']:6.1f}  encode {us['encode']:6.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run and print (and with ``--out`` save) the record."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chunk_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="streamed answers per arm, mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    record = timed_record("python -m benchmarks.chunk_cost " + " ".join(sys.argv[1:] if argv is None else argv),
                          machine("numpy", "pydantic"), lambda: run(args.requests, args.rounds))
    save_record(args.out, record, summary_text(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
