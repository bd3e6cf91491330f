"""Calibration's commands: ``guard calibrate``, ``guard evaluate``, ``guard evaluate-qa``, ``guard calibrate-answers``,
``guard steer build``.

Registered by the ``guard`` command through :func:`register` (see ``guard/__main__.py``); the
calibration code is imported only when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from adapters.vllm.cli import parse_layers
from guard.errors import GuardError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add this layer's subcommands to the ``guard`` command's subparsers."""
    from calibration.answers_command import add_answers_parser
    from calibration.progress import add_quiet_option
    from calibration.steer_command import add_steer_parser, run_steer_cli

    cal = sub.add_parser("calibrate", help="train and calibrate a true/false/neither probe for a model")
    cal.add_argument("--model", default="default", help="'default', an HF folder or a hub id")
    cal.add_argument("--out", required=True, help="output folder (probe.safetensors, probe.json, report.md, plots)")
    cal.add_argument("--family", default="auto", help="probe family: auto (chosen by left-out domains and templates "
                     "among logistic and mlp), logistic, mass-mean, mil or mlp")
    cal.add_argument("--layers", default=None, help="comma-separated layers to sweep (default: every second layer)")
    cal.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage per class (default 0.1)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--statements", default=None, help="your own statement,label CSV/JSONL (default: guard's own)")
    cal.add_argument("--no-negations", action="store_true",
                     help="leave negated statements out of training (they are in the mix by default)")
    cal.add_argument("--all-facts", action="store_true", help="keep facts the model does not know (no likelihood test)")
    cal.add_argument("--gate-alpha", type=float, default=0.3,
                     help="tolerated error rate among answered questions for the pre-generation gate (default 0.3)")
    cal.add_argument("--delta", type=float, default=0.1, help="failure probability of the selective guarantee "
                     "(default 0.1)")
    cal.add_argument("--features-dir", default=None, metavar="DIR",
                     help="stream activations to float32 .npy files in DIR instead of memory (sets larger than RAM); "
                          "a complete collection of the same statements there is reused")
    cal.add_argument("--dtype", default=None, choices=("auto", "float32", "bfloat16", "float16"),
                     help="engine dtype to calibrate in, recorded in the probe (default: float32 on CPUs, vLLM's auto "
                          "on GPUs); guard serve then runs that dtype")
    cal.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_quiet_option(cal)
    cal.set_defaults(handler=_calibrate)

    ev = sub.add_parser("evaluate", help="evaluate a probe on labelled statements files (scored in the engine): "
                        "one row per file")
    ev.add_argument("--probe", required=True)
    ev.add_argument("--statements", required=True, nargs="+", metavar="FILE",
                    help="one or more statement,label CSV or JSONL files")
    ev.add_argument("--model", default="default")
    ev.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_quiet_option(ev)
    ev.set_defaults(handler=_evaluate)

    qa = sub.add_parser("evaluate-qa",
                        help="answer QA items through the engine, grade them, report selective answering")
    qa.add_argument("--probe", default=None, help="answer probe (default: the probe shipped for the model)")
    qa.add_argument("--qa", default=None, help="question,answers CSV or JSONL (default: guard's own QA items)")
    qa.add_argument("--alpha", type=float, default=0.1, help="tolerated error rate among answered questions "
                    "(default 0.1)")
    qa.add_argument("--delta", type=float, default=0.1, help="failure probability of the guarantee (default 0.1)")
    qa.add_argument("--gate", default=None,
                    help="pre-generation gate artefact (default: the gate shipped for the model)")
    qa.add_argument("--no-gate", action="store_true", help="evaluate without a pre-generation gate")
    qa.add_argument("--splits", type=int, default=200, help="random calibration/test halvings (default 200)")
    qa.add_argument("--model", default="default")
    qa.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_quiet_option(qa)
    qa.set_defaults(handler=_evaluate_qa)

    add_answers_parser(sub)
    add_steer_parser(sub, handler=run_steer_cli)


def _calibrate(args: argparse.Namespace) -> int:
    from calibration import commands
    from calibration.progress import quiet

    with quiet(args.quiet):
        summary = commands.run_calibrate(args.model, args.out, parse_layers(args.layers) if args.layers else None,
                                         args.family, args.alpha, args.seed, args.statements,
                                         known_only=not args.all_facts, negations=not args.no_negations,
                                         gate_alpha=args.gate_alpha, delta=args.delta, features_dir=args.features_dir,
                                         dtype=args.dtype)
    print(commands.dumps(summary) if args.json else commands.format_table(summary))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from calibration import commands
    from calibration.progress import quiet

    with quiet(args.quiet):
        summary = commands.run_evaluate(args.probe, args.statements, args.model)
    print(commands.dumps(summary) if args.json else commands.format_evaluation(summary))
    return 0


def _evaluate_qa(args: argparse.Namespace) -> int:
    from adapters.defaults import default_gate, default_probe
    from calibration import commands
    from calibration.progress import quiet

    if args.splits < 1:
        raise GuardError(f"--splits={args.splits} is invalid: expected a positive integer")
    probe = args.probe or default_probe(args.model)
    gate = None if args.no_gate else args.gate or default_gate(args.model, probe)
    with quiet(args.quiet):
        summary = commands.run_evaluate_qa(probe, args.qa, args.alpha, args.delta, args.model, gate, args.splits)
    print(commands.dumps(summary) if args.json else commands.format_qa_table(summary))
    return 0
