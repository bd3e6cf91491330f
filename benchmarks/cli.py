"""``guard bench latency|quality|selective|calibrate``: the benchmark suite behind one command each.

Each command starts the engine(s) it needs (``calibrate`` needs none), prints a table, and writes a JSON record
(and, but for ``calibrate``, a PNG beside it; default ``benchmarks/results/bench-NAME-DEVICE.{json,png}``, relative
to the working directory). The ``guard`` command registers it (:func:`register`); the benchmarks are imported only when
a bench runs. They run from a checkout: the wheel does not install this package.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["BENCHES", "register", "add_bench_parser", "run_bench", "default_out"]

#: bench name -> (module, help)
BENCHES = {
    "latency": ("benchmarks.overhead",
                "plain vLLM vs guarded vs guarded+steering: throughput, TTFT, inter-token ratios"),
    "quality": ("benchmarks.quality", "probe quality per layer, shipped probe, cross-domain matrix, logprob baselines"),
    "selective": ("benchmarks.selective_qa",
                  "selective QA: risk-coverage and realised risk of the certified threshold"),
    "calibrate": ("benchmarks.probe_fit", "probe fitting at a large model's width: the old Newton solver vs L-BFGS, "
                  "wall time and peak memory (no engine)"),
}


def register(sub: Any) -> None:
    """Add ``bench`` to the ``guard`` command's subparsers, run by :func:`run_bench`."""
    add_bench_parser(sub)


def add_bench_parser(sub: Any) -> None:
    """Add ``bench`` with one subcommand per benchmark to the ``guard`` command's subparsers."""
    import importlib

    bench = sub.add_parser("bench", help="run a benchmark of the suite (JSON + PNG into benchmarks/results/)")
    bench.set_defaults(handler=run_bench)
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, (module, text) in BENCHES.items():
        p = bench_sub.add_parser(name, help=text, description=text)
        importlib.import_module(module).add_arguments(p)


def default_out(name: str) -> str:
    """``benchmarks/results/bench-NAME-DEVICE.json`` (``cuda`` when a GPU is visible, else ``cpu``)."""
    import torch

    return os.path.join("benchmarks", "results", f"bench-{name}-{'cuda' if torch.cuda.is_available() else 'cpu'}.json")


def run_bench(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the benchmark ``args.bench`` chose; returns the exit status."""
    import importlib

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if args.out is None:
        args.out = default_out(args.bench)
    command = getattr(args, "command_line", None) or "guard " + " ".join(sys.argv[1:] if argv is None else argv)
    return importlib.import_module(BENCHES[args.bench][0]).execute(args, command)
