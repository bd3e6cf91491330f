"""The ``guard`` console script: it only dispatches; each layer registers its own subcommands.

``COMMAND_MODULES`` names, in help order, the modules that add subcommands: each defines
``register(subparsers)`` and sets ``handler`` (``handler(args) -> exit status``) on its parsers.
They are found by name at run time, so the core imports no outer layer and ``import guard`` never
loads this launcher. ``benchmarks`` is not installed with the wheel: from a checkout (an editable
install) it is found beside the ``guard`` package; elsewhere ``guard bench`` says where it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from guard.errors import GuardError
from guard.layout import require_own_adapters

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: the modules that register subcommands, inner layers first
COMMAND_MODULES = ("adapters.vllm.cli", "adapters.http.cli", "calibration.cli", "benchmarks.cli")
_CHECKOUT_ONLY = "benchmarks"


def build_parser() -> argparse.ArgumentParser:
    """The ``guard`` command's parser, with every layer's subcommands."""
    parser = argparse.ArgumentParser(prog="guard", description="Inference-time hallucination guard for vLLM")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        module = _commands(name)
        if module is None:
            _absent_benchmarks(sub)
        else:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``guard`` command line; returns the exit status (2 for guard errors, the message on stderr)."""
    try:
        require_own_adapters()
        args = build_parser().parse_args(argv)
        args.command_line = "guard " + " ".join(sys.argv[1:] if argv is None else argv)
        return int(args.handler(args))
    except GuardError as exc:
        print(f"guard: error: {exc}", file=sys.stderr)
        return 2


def _commands(name: str) -> ModuleType | None:
    """The module ``name``; ``None`` for the benchmarks when neither installed nor beside ``guard``."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != _CHECKOUT_ONLY:
            raise
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / _CHECKOUT_ONLY / "cli.py").is_file():
        return None
    sys.path.append(str(checkout))  # an editable install's checkout: its benchmarks run from there
    return importlib.import_module(name)


def _absent_benchmarks(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="the benchmark suite (runs from a checkout of guard's repository)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_no_benchmarks)


def _no_benchmarks(args: argparse.Namespace) -> int:
    raise GuardError("guard bench runs from a checkout of guard's repository: the benchmarks are not installed with "
                     "the wheel; clone the repository, run `bash scripts/setup.sh` there and `.venv/bin/guard bench "
                     "...` from it")


if __name__ == "__main__":
    sys.exit(main())
