"""``guard calibrate-answers``: the model answers guard's questions, and every answer signal is compared.

Collects (or reuses) the on-policy answers and samples in ``OUT/answers.{safetensors,json}``, runs
:func:`calibration.answer_study.study_answers` and writes ``OUT/study.json`` and ``OUT/study.md``.
With ``--ship PATH`` it also fits the on-policy gate and its answer combiner
(:func:`calibration.answer_gate.fit_answer_gate`, at the probe's layers) and writes it to ``PATH`` (its
leave-one-domain-out report to ``OUT/gate.json``): the gate that ``guard serve`` loads for ``answer_check``.
Collection runs the engine for about 35 minutes on two CPU cores (2,598 questions, 5 samples each);
``--limit`` takes the first questions only, for a quick look.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from calibration.progress import add_quiet_option

__all__ = ["add_answers_parser", "run_answers", "format_study", "STUDY_LAYERS"]

#: layers the answers' rows are kept at (the study's probes read the statement probe's 12 and 14)
STUDY_LAYERS = (6, 8, 10, 12, 14, 16, 18, 20, 22)


def add_answers_parser(sub: Any) -> None:
    """Register ``guard calibrate-answers``."""
    p = sub.add_parser("calibrate-answers", help="answer guard's questions through the engine and compare every "
                       "signal of answer correctness on left-out domains (on-policy probes, sampling, log-prob)")
    p.add_argument("--out", required=True, help="output folder (answers.safetensors/json, study.json, study.md)")
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=5, help="sampled answers per question (default 5)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions (default: all)")
    p.add_argument("--alpha", type=float, default=0.2, help="tolerated error rate among answers (default 0.2)")
    p.add_argument("--reuse", action="store_true", help="analyse OUT/answers.{safetensors,json} again, no engine")
    p.add_argument("--ship", default=None, metavar="PATH",
                   help="also fit the on-policy gate with its answer combiner and save it to PATH (.safetensors)")
    p.add_argument("--probe", default=None, metavar="PATH",
                   help="the probe the shipped gate rides along with (its layers; default: the model's shipped probe)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_quiet_option(p)
    p.set_defaults(handler=_cli)


def run_answers(out: str | Path, model: str = "default", samples: int = 5, temperature: float = 0.7,
                limit: int | None = None, alpha: float = 0.2, reuse: bool = False, ship: str | Path | None = None,
                probe: str | Path | None = None) -> dict[str, Any]:
    """Collect (unless ``reuse``), study, and write the study (and, with ``ship``, the on-policy gate); returns it.

    Raises:
        ConfigError: ``ship`` without a probe to ride along with, or the probe reads layers the answers lack.
    """
    from calibration.answer_store import load_answers, save_answers
    from calibration.answer_study import study_answers

    out = Path(out)
    if not reuse:
        from adapters.vllm.engine import GuardedLLM
        from calibration.onpolicy import collect_answers, sample_answers
        from calibration.questions import generate_questions
        from guard.config import GuardConfig

        items = generate_questions(0)[:limit]
        config = GuardConfig.build(model=model, probe=None, layers=STUDY_LAYERS, capture_hidden=True,
                                   enforce_eager=True, max_model_len=512)
        with GuardedLLM(config) as llm:
            answers = collect_answers(llm, items)
            drawn = sample_answers(llm, items, k=samples, temperature=temperature)
        save_answers(out / "answers", answers, drawn, STUDY_LAYERS)
    answers, drawn, layers = load_answers(out / "answers")
    study = study_answers(answers, drawn, [layers.index(12), layers.index(14)], alpha=alpha)
    study |= {"model": model, "samples": samples, "temperature": temperature, "layers": [12, 14]}
    if ship is not None:
        study["gate"] = _ship(answers, drawn, temperature, layers, model, probe, ship, alpha)
        (out / "gate.json").write_text(json.dumps(study["gate"], indent=1, default=float), encoding="utf-8")
    (out / "study.json").write_text(json.dumps(study, indent=1, default=float), encoding="utf-8")
    (out / "study.md").write_text(format_study(study), encoding="utf-8")
    return study


def _ship(answers: Any, drawn: list[list[str]], temperature: float, stored: tuple[int, ...], model: str,
          probe: str | Path | None, ship: str | Path, alpha: float) -> dict[str, Any]:
    """Fit the on-policy gate at the probe's layers (with the sampled combiner, from the samples' agreement), save
    it to ``ship``; its report."""
    from adapters.model_store import resolve_model
    from calibration.answer_gate import SamplingSettings, fit_answer_gate
    from calibration.onpolicy import SAMPLE_MAX_TOKENS
    from guard.agreement import agreement
    from guard.errors import ConfigError
    from guard.model_spec import ModelSpec
    from guard.probe import Probe
    from guard.shipped import shipped_probe

    spec = ModelSpec.from_folder(resolve_model(model))
    probe_path = probe if probe is not None else shipped_probe(spec.fingerprint)
    if probe_path is None:
        raise ConfigError(f"--ship needs the probe the gate rides along with: no probe ships for model {model!r}; "
                          "pass --probe PATH")
    ridden = Probe.load(probe_path)
    layers = ridden.layers
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        raise ConfigError(f"the probe reads layers {list(layers)} but the answers keep layers {list(stored)} only "
                          f"({missing} missing); collect them again with those layers")
    agreed = np.array([agreement(a.text, d, a.item.question) for a, d in zip(answers, drawn)])
    counts = {len(d) for d in drawn}
    if len(counts) != 1:
        raise ConfigError(f"the stored answers have {sorted(counts)} samples per question; the sampled combiner needs "
                          "the same number for every question: collect them again")
    how = SamplingSettings(samples=counts.pop(), temperature=temperature, max_tokens=SAMPLE_MAX_TOKENS)
    gate, report = fit_answer_gate(answers, [stored.index(layer) for layer in layers], tuple(layers), spec, model,
                                   alpha=alpha, dtype=ridden.manifest.dtype, agreement=agreed, sampling=how)
    report["path"] = str(gate.save(ship))
    return report


def format_study(study: dict[str, Any]) -> str:
    """The study as a markdown table: one row per signal."""
    lines = [f"{study['n']} answers, model accuracy {study['accuracy']:.3f}; answer tokens found in "
             f"{study['spanned']:.3f} of them (accuracy there {study['accuracy_spanned']:.3f}). Left-out-domain "
             f"AUROC; selective answering certified by Learn-then-Test at alpha = {study['alpha']}, delta = "
             f"{study['delta']} over random halvings. Best probe: `{study['best_probe']}`.", "",
             "| signal | AUROC | left-out domain: median | worst | median, answers with tokens found | "
             "left-out wording: median | certified | coverage | risk |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in study["signals"].items():
        sel = study["selective"][name]
        lines.append(f"| {name} | {s['auroc']:.3f} | {s['lodo_median']:.3f} | {s['lodo_worst']:.3f} | "
                     f"{s['lodo_median_spanned']:.3f} | {s['lowo_median']:.3f} | {sel['certified']:.2f} | "
                     f"{sel['coverage']:.3f} | "
                     f"{sel['risk']:.3f} |")
    return "\n".join(lines) + "\n"


def _cli(args: argparse.Namespace) -> int:
    from calibration.commands import dumps
    from calibration.progress import quiet
    from guard.errors import GuardError

    if args.samples < 1 or (args.limit is not None and args.limit < 20):
        raise GuardError(f"--samples={args.samples} / --limit={args.limit}: expected at least 1 sample and, when "
                         "given, at least 20 questions")
    with quiet(args.quiet):
        study = run_answers(args.out, args.model, args.samples, args.temperature, args.limit, args.alpha, args.reuse,
                            args.ship, args.probe)
    print(dumps(study) if args.json else format_study(study))
    return 0
