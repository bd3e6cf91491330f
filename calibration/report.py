"""The calibration report: a Markdown summary plus PNG plots (layer sweep, reliability diagram).

Plots need matplotlib (the ``report`` extra); without it the summary is still written and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.pipeline import CalibrationResult

__all__ = ["write_report", "reliability_bins"]


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """``(mean confidence, accuracy, count)`` of the top class per confidence bin (non-empty bins only)."""
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    return [(float(conf[which == b].mean()), float(hit[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def _plots(result: CalibrationResult, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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


def write_report(result: CalibrationResult, out_dir: str | Path) -> Path:
    """Write ``report.md`` (and plots, when matplotlib is installed) into ``out_dir``; return the summary's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = result.probe.manifest
    plots = _plots(result, out)
    lines = [
        f"# Probe calibration: {m.model_id}",
        "",
        f"- kind: `{m.kind}`, layer {list(m.layers)}, labels {list(m.labels)}",
        f"- model fingerprint: `{m.model_fingerprint}`",
        f"- conformal: {m.conformal}",
        "",
        "## Held-out metrics (test split, disjoint from training and calibration)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in result.metrics.items()],
        "",
        "## Layer sweep (true vs false, validation part of the training split)",
        "",
        "| layer | AUROC |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in sorted(result.layer_auroc.items())],
        "",
    ]
    if plots:
        lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    else:
        lines += ["Plots skipped: install the `report` extra (matplotlib) to get them.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
