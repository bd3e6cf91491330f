"""Capture + in-engine scoring on vs off: throughput and time-to-first-token ratios, in one run.

Two engines live in this one process: plain vLLM (no guard) and the guarded engine (hooks at the
probe's layers). Three arms run in alternating order every round, so drift on a noisy machine hits
all of them: ``plain``; ``guarded`` (every request scored); ``opted_out`` (the guarded engine, no
request opts in: hooks present, no capture work). Reported numbers are medians over rounds of
per-round ratios against ``plain``.

Usage::

    python -m benchmarks.overhead --rounds 5 --out benchmarks/results/overhead-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

PROMPT = "Write a short paragraph about the history of the bicycle."


def _time_batch(llm: Any, prompts: list[str], params: Any, guarded: bool | None) -> tuple[float, int]:
    """Wall seconds and generated tokens for one batch (``None``: a plain vLLM engine)."""
    start = time.perf_counter()
    if guarded is not None:
        outs = llm.generate(prompts, params, guard=guarded)
        tokens = sum(len(o.token_ids) for o in outs)
    else:
        outs = llm.generate(prompts, params, use_tqdm=False)
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return time.perf_counter() - start, tokens


def _measure(llm: Any, guarded: bool | None, concurrency: int, new_tokens: int) -> dict[str, float]:
    from vllm import SamplingParams

    prompts = [f"{PROMPT} (variant {i})" for i in range(concurrency)]
    ttft, _ = _time_batch(llm, prompts, SamplingParams(max_tokens=1, temperature=0.0), guarded)
    wall, tokens = _time_batch(llm, prompts, SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True), guarded)
    return {"ttft_s": ttft, "throughput_tok_s": tokens / wall}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--eager", action="store_true", help="both engines in eager mode")
    parser.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the model)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from vllm import LLM

    from adapters.cli import _default_probe
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    probe = args.probe or _default_probe("default")
    cfg = GuardConfig.build(probe=probe, enforce_eager=args.eager or None, max_num_seqs=64, max_model_len=1024)
    guarded = GuardedLLM(cfg)
    plain_kwargs = {k: v for k, v in guarded.engine_kwargs.items() if k not in ("additional_config", "worker_extension_cls")}
    plain = LLM(**plain_kwargs)
    levels = [int(c) for c in args.concurrency.split(",")]
    raw: dict[str, list[dict[str, Any]]] = {str(c): [] for c in levels}
    arms = [("plain", plain, None), ("guarded", guarded, True), ("opted_out", guarded, False)]
    for c in levels:  # warm every arm at each shape
        for _, llm, g in arms:
            _measure(llm, g, c, 8)
    for r in range(args.rounds):
        for c in levels:
            order = arms[r % 3 :] + arms[: r % 3]
            row = {name: _measure(llm, g, c, args.new_tokens) for name, llm, g in order}
            raw[str(c)].append(row)
            print(f"round {r + 1}/{args.rounds} concurrency {c}: {json.dumps(row)}", flush=True)
    summary = {}
    for c, rows in raw.items():
        summary[c] = {"plain_throughput_tok_s": statistics.median(x["plain"]["throughput_tok_s"] for x in rows)}
        for arm in ("guarded", "opted_out"):
            summary[c][f"{arm}_throughput_ratio"] = statistics.median(
                x[arm]["throughput_tok_s"] / x["plain"]["throughput_tok_s"] for x in rows)
            summary[c][f"{arm}_ttft_ratio"] = statistics.median(x[arm]["ttft_s"] / x["plain"]["ttft_s"] for x in rows)
    result = {
        "benchmark": "overhead",
        "command": "python -m benchmarks.overhead " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": __import__("os").cpu_count()},
        "mode": "eager" if args.eager else guarded.worker_status()[0]["compilation_mode"],
        "probe_layers": list(guarded.spec.layers),
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "summary": summary,
        "raw": raw,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    guarded.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
