"""The calibration report: a Markdown summary plus PNG plots (layer sweep, reliability diagram,
risk-coverage of selective answering against the log-probability baseline).

Plots need matplotlib (the ``report`` extra); without it the summary is still written and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from calibration.pipeline import CalibrationResult
from guard.probe import Probe

__all__ = ["generalisation_section", "write_report", "reliability_bins", "plot_risk_coverage", "pyplot"]


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """``(mean confidence, accuracy, count)`` of the top class per confidence bin (non-empty bins only)."""
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    return [(float(conf[which == b].mean()), float(hit[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


_SIGNAL_NAMES = {"answer_probe": "answer probe p(true)", "logprob": "mean token log-prob (baseline)",
                 "gate": "pre-generation gate p(correct)", "gate_and_probe": "gate x answer probe"}


def plot_risk_coverage(methods: dict[str, dict[str, Any]], path: str | Path,
                       title: str = "Selective answering") -> bool:
    """Risk-coverage curves of each signal (from :func:`calibration.selective.selective_report`).

    Returns False without matplotlib.
    """
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rep in methods.items():
        ax.plot(rep["curve"]["coverage"], rep["curve"]["risk"],
                label=f"{_SIGNAL_NAMES.get(name, name)} (AURC {rep['aurc']:.3f})")
    alpha = next(iter(methods.values()))["alpha"]
    ax.axhline(alpha, ls="--", color="grey", label=f"alpha = {alpha}")
    ax.set(xlabel="coverage (share answered)", ylabel="risk (error rate among answered)", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _plots(result: CalibrationResult, out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    names = []
    layers = sorted(result.layer_auroc)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(layers, [result.layer_auroc[i] for i in layers], marker="o")
    ax.set(xlabel="decoder layer", ylabel="held-out AUROC (true vs false)", title="Layer sweep", ylim=(0.4, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "layer_sweep.png", dpi=120)
    plt.close(fig)
    names.append("layer_sweep.png")
    if result.test_probs is not None and result.test_labels is not None:
        bins = reliability_bins(result.test_probs, result.test_labels)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect")
        ax.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label="probe")
        ax.set(xlabel="confidence (top class)", ylabel="accuracy", title="Reliability (test split)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "reliability.png", dpi=120)
        plt.close(fig)
        names.append("reliability.png")
    return names


def _conformal_line(conf: Any) -> str:
    if conf is None:
        return "none"
    thresholds = ", ".join(f"{k} {v:.4f}" for k, v in conf.thresholds.items())
    counts = ", ".join(f"{k} {v}" for k, v in conf.n_cal.items())
    kept = "kept (p-values at any alpha)" if conf.scores else "not kept"
    return f"{conf.method}, alpha {conf.alpha}; thresholds {thresholds}; calibration items {counts}; scores {kept}"


def _qa_section(qa: dict[str, dict[str, Any]], gate: Probe | None) -> list[str]:
    first = next(iter(qa.values()))
    lines = [
        "## Selective answering (guard's closed-book QA items; gate scores cross-fitted, 5 folds)",
        "",
        f"{first['n']} graded answers, model accuracy {first['accuracy']:.3f}; thresholds certified by Learn-then-Test "
        f"(alpha = {first['alpha']}, delta = {first['delta']}) on one half, applied to the other, over "
        f"{first['splits']} random halvings.",
        "",
        "| signal | AUROC | AURC | certified | coverage | risk | risk > alpha (all halvings) | correct | hallucinated "
        "| abstained |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {_SIGNAL_NAMES.get(name, name)} | {r['auroc']:.3f} | {r['aurc']:.3f} | {r['certified']:.2f} | "
          f"{r['coverage']:.3f} | {r['risk']:.3f} | {r['violation_rate']:.2f} | {r['correct']:.3f} | "
          f"{r['hallucinated']:.3f} | {r['abstained']:.3f} |" for name, r in qa.items()],
        "",
    ]
    if gate is not None:
        g = gate.manifest
        lines += [f"Pre-generation gate: `{g.kind}`, layers {list(g.layers)}, held-out metrics "
                  + ", ".join(f"{k} {v:.3g}" for k, v in g.metrics.items()), ""]
    return lines


def generalisation_section(result: CalibrationResult) -> list[str]:
    """The selection table, the left-out-domain verdict table, the ``beta`` table and the unknown facts."""
    lines: list[str] = []
    sel = result.selection
    if sel is not None:
        sweep = sorted(result.layer_auroc)
        lines += ["## Selection by generalisation (training split; leave-one-domain-out, leave-one-template-out)", "",
                  "| candidate | LODO worst | LODO median | LOTO worst | LOTO median |", "|---|---|---|---|---|"]
        lines += [f"| {c.label(sweep)} | {m['lodo_worst']:.3f} | {m['lodo_median']:.3f} | {m['loto_worst']:.3f} | "
                  f"{m['loto_median']:.3f} |" for c, m in sel.ranked[:12]]
        lines += ["", f"Chosen: **{sel.best.label(sweep)}**. Its left-out-template AUROC per template number: "
                  + ", ".join(f"{k}: {v:.3f}" for k, v in sorted(sel.by_template.items())), ""]
    if result.lodo:
        cols = ("auroc", "auroc_negated", "macro_f1", "coverage", "confidently_wrong", "confident", "shifted", "n")
        lines += ["## Left-out domains: verdicts of a probe that never saw the domain (shift rule at the chosen beta)",
                  "", "| domain | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {d} | " + " | ".join(f"{r[c]:.3f}" if c != "n" else f"{int(r[c])}" for c in cols) + " |"
                  for d, r in sorted(result.lodo.items())]
        lines.append("")
    if result.beta_table:
        lines += ["## Choosing beta (typicality below which a verdict is uncertain), on left-out domains", "",
                  "| beta | confidently wrong (worst) | (median) | coverage (worst) | (median) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {b:g} | {r['confidently_wrong_worst']:.3f} | {r['confidently_wrong_median']:.3f} | "
                  f"{r['coverage_worst']:.3f} | {r['coverage_median']:.3f} |" for b, r in result.beta_table.items()]
        lines.append("")
    if result.transfer:
        names = sorted(result.transfer)
        lines += ["## Domain x domain transfer (logistic read-out fitted on the row's domain alone, AUROC on the "
                  "column's held-out statements)", "", "| fitted on \\ scored on | " + " | ".join(n[:8] for n in names)
                  + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(f"{result.transfer[a][b]:.2f}" for b in names) + " |" for a in names]
        lines.append("")
    if result.unknown:
        lines += ["## Facts the model does not know (likelihood test; never trained on)", "",
                  *[f"- {k}: {v:.3f}" for k, v in result.unknown.items()], ""]
    return lines


def write_report(result: CalibrationResult, out_dir: str | Path, qa: dict[str, dict[str, Any]] | None = None,
                 gate: Probe | None = None) -> Path:
    """Write ``report.md`` (and plots, when matplotlib is installed) into ``out_dir``; return the summary's path.

    Args:
        qa: selective-answering reports per signal (:func:`calibration.commands.selective_methods`).
        gate: the pre-generation gate, whose held-out metrics are summarised.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = result.probe.manifest
    plots = _plots(result, out)
    if qa and plot_risk_coverage(qa, out / "risk_coverage.png"):
        plots.append("risk_coverage.png")
    lines = [
        f"# Probe calibration: {m.model_id}",
        "",
        f"- kind: `{m.kind}`, layer {list(m.layers)}, labels {list(m.labels)}",
        f"- model fingerprint: `{m.model_fingerprint}`",
        f"- conformal: {_conformal_line(m.conformal)}",
        "",
        "## Held-out metrics (test split, disjoint from training and calibration)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in result.metrics.items()],
        "",
        "## Layer sweep (true vs false: median left-out-domain AUROC of a logistic read-out, training split)",
        "",
        "| layer | AUROC |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in sorted(result.layer_auroc.items())],
        "",
        *generalisation_section(result),
    ]
    if qa:
        lines += _qa_section(qa, gate)
    if plots:
        lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    else:
        lines += ["Plots skipped: install the `report` extra (matplotlib) to get them.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
