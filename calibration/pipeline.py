"""``select -> fit -> shift -> conformalize -> export``: from labelled statements to a calibrated probe artefact.

1. Statements (true / false / neither) from many relations, templates and surface forms, negations in the
   mix (:mod:`calibration.statements`), with the model's knowledge test: true/false statements of facts the
   model does not know leave the splits and are reported apart (:mod:`calibration.knowledge`).
2. Residual-stream features of every statement through the vLLM capture, at a sweep of layers.
3. Splits by fact, and one held-out template per relation (:mod:`calibration.splits`).
4. Family, regularisation and window of layers chosen by leave-one-domain-out and leave-one-template-out
   validation on the training split (:mod:`calibration.choose`); the chosen one is fitted on it.
5. The shift head: a domain classifier over the training domains; ``beta`` chosen on left-out domains
   (:mod:`calibration.shift_fit`), where the same folds give the per-domain verdict table.
6. Mondrian split-conformal thresholds on the untouched calibration split.
7. Test-split metrics (seen and held-out templates, negated statements, facts the model does not know), then
   export (safetensors + manifest with metrics, conformal and shift calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.activations import collect_vllm
from calibration.choose import Selection, select_probe
from calibration.engine_port import GuardEngine
from calibration.export import fit_probe_layer, item_scores, probe_from
from calibration.families import DEFAULT_L2, FAMILIES, fitter
from calibration.fit import softmax
from calibration.knowledge import known_facts
from calibration.progress import Progress, note
from calibration.selection import transfer_matrix
from calibration.shift_fit import (
    FoldVerdicts,
    choose_beta,
    fit_domain_head,
    lodo_verdicts,
    standardised_mean,
    verdict_table,
)
from calibration.splits import DatasetSplits, dataset_splits, split_indices
from calibration.statements import LABELS, Statement, generate_statements
from guard.conformal import MondrianConformal
from guard.errors import ConfigError
from guard.evaluation import auroc, verdict_metrics
from guard.model_spec import ModelSpec
from guard.probe import ConformalCalibration, Probe
from guard.shift import ShiftCalibration

__all__ = ["CalibrationResult", "DatasetSplits", "FAMILIES", "dataset_splits", "split_indices", "best_window",
           "calibrate", "default_sweep"]


@dataclass
class CalibrationResult:
    """What calibration produced: the probe, where it went, and the numbers behind it."""

    probe: Probe
    path: Path | None
    #: per sweep layer: median left-out-domain AUROC of a logistic read-out (stage 1 of the selection)
    layer_auroc: dict[int, float]
    metrics: dict[str, float] = field(default_factory=dict)
    #: held-out class probabilities, labels and statement indices (for reports)
    test_probs: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    test_index: np.ndarray | None = None
    selection: Selection | None = None
    #: per left-out domain: the verdict table of a probe that never saw it, with the shift rule at ``beta``
    lodo: dict[str, dict[str, float]] = field(default_factory=dict)
    #: per ``beta`` tried: the worst and median left-out-domain confidently-wrong share and coverage
    beta_table: dict[float, dict[str, float]] = field(default_factory=dict)
    #: facts the model does not know: how their statements were judged
    unknown: dict[str, float] = field(default_factory=dict)
    #: ``transfer[a][b]``: AUROC on domain ``b``'s held-out statements of a logistic read-out fitted on domain ``a``
    #: alone (at the probe's first layer)
    transfer: dict[str, dict[str, float]] = field(default_factory=dict)


def default_sweep(num_layers: int) -> tuple[int, ...]:
    """Every second decoder layer from 2 up to the second-to-last."""
    return tuple(range(2, num_layers - 1, 2))


def best_window(layer_auroc: dict[int, float], width: int) -> tuple[int, ...]:
    """The ``width`` consecutive sweep layers with the highest mean AUROC."""
    layers = sorted(layer_auroc)
    width = max(1, min(width, len(layers)))
    starts = range(len(layers) - width + 1)
    best = max(starts, key=lambda i: sum(layer_auroc[x] for x in layers[i : i + width]))
    return tuple(layers[best : best + width])


def calibrate(llm: GuardEngine, out: str | Path | None = None, statements: list[Statement] | None = None,
              alpha: float = 0.1, seed: int = 0, model_id: str = "", family: str = "auto", window: int | None = None,
              known_only: bool = True, negations: bool = True, shift: bool = True,
              features_dir: str | Path | None = None) -> CalibrationResult:
    """Run the whole pipeline on a ``GuardedLLM`` started with ``capture_hidden`` at the sweep layers.

    Args:
        family: ``auto`` (choose among logistic and mlp by left-out validation) or one of :data:`FAMILIES`.
        window: a fixed number of consecutive sweep layers (``None``: chosen by the selection).
        known_only: drop true/false statements of facts the model does not know from the splits.
        negations: train on negated statements too (the default).
        shift: fit the shift head (needs statements of at least three domains).
        features_dir: stream the activations to ``.npy`` files there instead of memory (sets larger than RAM;
            see :func:`calibration.activations.collect_vllm`).

    Raises:
        ConfigError: an unknown probe family, or too few calibration items for ``alpha``.
    """
    if family != "auto" and family not in FAMILIES:
        raise ConfigError(f"probe family {family!r} is unknown; expected auto or one of {', '.join(FAMILIES)}")
    spec = ModelSpec.from_folder(llm.model_path)
    statements = statements or generate_statements(seed)
    labels = np.array([LABELS.index(s.label) for s in statements])
    domains = np.array([s.domain or "statements" for s in statements])
    template_index = np.array([int(s.template.rsplit("/", 1)[-1]) if "/" in s.template else 0 for s in statements])
    feats = collect_vllm(llm, [s.text for s in statements], spec.fingerprint, keep_tokens=family == "mil",
                         features_dir=features_dir)
    known, unknown = known_facts(llm, statements) if known_only else (set(), set())
    splits = dataset_splits(statements, unknown, seed, negations)
    train, cal, test = splits.train, splits.cal, splits.test
    x = feats["last"]
    sweep = llm.spec.layers
    families = ("logistic", "mlp") if family == "auto" else ("logistic" if family == "mil" else family,)
    note("calibrate", f"{len(statements)} statements, {len(known)} known and {len(unknown)} unknown facts; choosing "
         f"among {', '.join(families)} by left-out domains and templates")
    selection = select_probe(x, labels, domains, template_index, splits.negated, train, families, seed, window,
                             splits.facts)
    best = selection.best
    chosen_family = "mil" if family == "mil" else best.family
    l2 = DEFAULT_L2["mil"][0] if family == "mil" else best.l2
    chosen = tuple(sweep[i] for i in best.window)
    note("calibrate", f"chose {best.label(sweep)}")
    fits = [fit_probe_layer(chosen_family, feats, li, labels, train, l2, seed) for li in best.window]

    def probs(idx: np.ndarray) -> np.ndarray:
        return softmax(np.mean([item_scores(chosen_family, feats, li, idx, f) for li, f in zip(best.window, fits)],
                               axis=0))

    def zbar(idx: np.ndarray) -> np.ndarray:
        return standardised_mean(x, idx, best.window, fits)

    cp = MondrianConformal(alpha).fit(probs(cal), labels[cal])
    shift_part, shifted_test = None, np.zeros(len(test), bool)
    lodo: dict[str, dict[str, float]] = {}
    beta_table: dict[float, dict[str, float]] = {}
    if shift and len(set(domains[train].tolist())) >= 3:
        # judged: the left-out domain's training and calibration statements (the test split stays untouched)
        with Progress(len(set(domains[train].tolist())), "shift head (left-out domains)", unit="domains") as bar:
            folds = lodo_verdicts(x, labels, domains, train, cal, np.sort(np.concatenate([train, cal])), best.family,
                                  best.l2, best.window, alpha, seed, progress=lambda _: bar.update())
        beta, beta_table = choose_beta(folds, labels, splits.negated)
        lodo = _lodo_rows(folds, beta, labels, splits.negated)
        head = fit_domain_head(zbar(train), domains[train])
        cal_shift = np.sort(head.shift(zbar(cal)))
        calib = ShiftCalibration(domains=head.domains, beta=beta, scores=np.round(cal_shift, 6).tolist(),
                                 description=f"beta chosen on {len(folds)} left-out domains: confidently-wrong share "
                                             f"<= {beta_table[beta]['confidently_wrong_worst']:.3f} on every one")
        shift_part = (head, calib)
        shifted_test = np.array([calib.shifted(v) for v in head.shift(zbar(test))], bool)
    p_test = probs(test)
    sets = cp.predict_sets(p_test)
    metrics = verdict_metrics(p_test, labels[test], sets)
    metrics |= _test_metrics(p_test, sets, shifted_test, labels[test], splits, test)
    metrics.update({"n_train": float(len(train)), "n_cal": float(len(cal)), "n_test": float(len(test)),
                    "facts_known": float(len(known)), "facts_unknown": float(len(unknown)),
                    "lodo_auroc_worst": float(min(v["all"] for v in selection.by_domain.values())),
                    "lodo_auroc_median": float(np.median([v["all"] for v in selection.by_domain.values()]))})
    if lodo:
        metrics["lodo_confidently_wrong_worst"] = max(r["confidently_wrong"] for r in lodo.values())
        metrics["lodo_coverage_worst"] = min(r["coverage"] for r in lodo.values())
    unknown_report = _unknown_report(statements, splits, probs, cp)
    transfer = transfer_matrix(fitter("logistic", DEFAULT_L2["logistic"][0], seed), x[:, best.window[0]], labels,
                               domains, train, np.sort(np.concatenate([cal, test])))
    assert cp.thresholds is not None and cp.counts is not None  # fit sets both
    conformal = ConformalCalibration(alpha=alpha, thresholds=dict(zip(LABELS, cp.thresholds.tolist())),
                                     n_cal=dict(zip(LABELS, cp.counts.tolist())),
                                     scores=dict(zip(LABELS, cp.calibration_scores())))
    probe = probe_from(fits, chosen, chosen_family, spec, model_id or str(llm.model_path), metrics, conformal, seed,
                       shift_part, dtype=getattr(llm, "dtype", None) or "float32")  # the engine's, auto resolved
    path = probe.save(out) if out is not None else None
    return CalibrationResult(probe, path, {sweep[i]: v for i, v in selection.layer_auroc.items()}, metrics, p_test,
                             labels[test], test, selection, lodo, beta_table, unknown_report, transfer)


def _test_metrics(p: np.ndarray, sets: np.ndarray, shifted: np.ndarray, labels: np.ndarray, splits: DatasetSplits,
                  test: np.ndarray) -> dict[str, float]:
    """The test split's verdict table, and AUROC on held-out versus seen templates and on negated statements."""
    table = verdict_table(p, sets, shifted, labels, splits.negated[test])
    out = {f"test_{k}": v for k, v in table.items() if k not in ("n", "auroc")}
    for name, mask in (("held_out_templates", splits.held_template[test]),
                       ("seen_templates", ~splits.held_template[test])):
        tf = mask & (labels < 2)
        if (labels[tf] == 0).any() and (labels[tf] == 1).any():
            out[f"auroc_{name}"] = auroc(p[tf, 0] - p[tf, 1], labels[tf] == 0)
    return out


def _lodo_rows(folds: list[FoldVerdicts], beta: float, labels: np.ndarray, negated: np.ndarray
               ) -> dict[str, dict[str, float]]:
    return {f.domain: verdict_table(f.probs, f.sets, f.typicality < beta, labels[f.index], negated[f.index])
            for f in folds}


def _unknown_report(statements: list[Statement], splits: DatasetSplits, probs: Any,
                    cp: MondrianConformal) -> dict[str, float]:
    """Statements of facts the model does not know: the share judged confidently right, wrong, or not at all."""
    idx = np.flatnonzero(splits.is_unknown & ~np.isin(splits.facts, splits.facts[splits.train]))
    if not len(idx):
        return {}
    labels = np.array([LABELS.index(statements[i].label) for i in idx])
    p = probs(idx)
    sets = cp.predict_sets(p)
    single = sets.sum(axis=1) == 1
    right = single & sets[np.arange(len(idx)), labels]
    both = (labels == 0).any() and (labels == 1).any()
    return {"n": float(len(idx)), "auroc": auroc(p[:, 0] - p[:, 1], labels == 0) if both else float("nan"),
            "confidently_right": float(right.mean()), "confidently_wrong": float((single & ~right).mean()),
            "neither_or_uncertain": float((~single | sets[:, 2]).mean())}
