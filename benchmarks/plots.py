"""Figures of the ``guard bench`` suite, drawn from the JSON records alone (so any record can be re-plotted).

Each function writes one PNG and returns ``True``, or returns ``False`` without matplotlib (the
``report`` extra); the JSON record is complete either way. Re-plot a record without re-running it::

    python -m benchmarks.plots benchmarks/results/bench-selective-cpu.json   # writes the .png beside it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from calibration.report import pyplot

__all__ = ["plot_latency", "plot_quality", "plot_selective", "plot_record"]

_SIGNALS = {"answer_probe": "answer probe p(true)", "logprob": "mean token log-prob (baseline)",
            "consistency": "sampling consistency (baseline)", "gate": "pre-generation gate p(correct)",
            "gate_and_probe": "gate x answer probe"}


def _save(fig: Any, plt: Any, path: str | Path) -> bool:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency(record: dict[str, Any], path: str | Path) -> bool:
    """Per metric, each arm's median ratio against plain vLLM (min..max bars) at every concurrency."""
    plt = pyplot()
    if plt is None:
        return False
    levels = list(record["summary"])
    arms = [a for a in ("guarded", "steered", "opted_out") if a in record["summary"][levels[0]]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = np.arange(len(levels))
    for ax, (metric, name) in zip(axes, (("throughput_tok_s", "throughput"), ("ttft_s", "time to first token"),
                                         ("itl_s", "inter-token latency"))):
        for i, arm in enumerate(arms):
            cells = [record["summary"][c][arm][f"{metric}_ratio"] for c in levels]
            med = np.array([c["median"] for c in cells])
            err = np.array([[m - c["min"] for m, c in zip(med, cells)], [c["max"] - m for m, c in zip(med, cells)]])
            ax.errorbar(x + (i - 1) * 0.12, med, yerr=err, fmt="o", capsize=3, label=arm)
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set(xticks=x, xticklabels=levels, xlabel="concurrency (requests per batch)",
               ylabel=f"{name}: arm / plain vLLM", title=name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    proxy = record.get("proxy")
    note = (f"; proxy adds {proxy['guard_processing_ms_per_request']:.2f} ms/request, "
            f"{proxy['guard_processing_ms_per_chunk']:.3f} ms/chunk (server clock)") if proxy else ""
    fig.suptitle(f"guard vs plain vLLM, median of {record['rounds']} rounds (min..max){note}", fontsize=10)
    return _save(fig, plt, path)


def plot_quality(record: dict[str, Any], path: str | Path) -> bool:
    """Per dataset: metrics per layer with the shipped probe and baselines, and the cross-domain AUROC matrix."""
    plt = pyplot()
    if plt is None:
        return False
    datasets = {name: ds for name, ds in record["datasets"].items() if "per_layer" in ds}  # not the held-out topics
    if not datasets:
        return False
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.2 * len(datasets)), squeeze=False)
    for row, (name, ds) in zip(axes, datasets.items()):
        ax = row[0]
        layers = [int(k) for k in ds["per_layer"]]
        for metric, style in (("auroc_true_vs_false", "o-"), ("accuracy", "s-"), ("macro_f1", "^-")):
            ax.plot(layers, [ds["per_layer"][str(k)][metric] for k in layers], style,
                    label=f"per-layer probe: {metric}")
        if ds.get("shipped_probe"):
            ax.axhline(ds["shipped_probe"]["auroc_true_vs_false"], color="black", lw=1.5,
                       label=f"shipped probe AUROC ({ds['shipped_probe']['auroc_true_vs_false']:.3f})")
        for base, colour in (("mean_logprob", "tab:red"), ("max_softmax", "tab:purple")):
            value = ds["baselines"][base]["auroc_true_vs_false"]
            if value is not None:
                ax.axhline(value, color=colour, ls="--", lw=1, label=f"{base} AUROC ({value:.3f})")
        ax.set(xlabel="decoder layer", ylabel="held-out metric", ylim=(0, 1.02),
               title=f"{name}: per layer (test split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        _matrix(row[1], ds.get("cross_domain"), name)
    return _save(fig, plt, path)


def _matrix(ax: Any, cross: dict[str, Any] | None, name: str) -> None:
    if not cross or len(cross["domains"]) < 2:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{name}: one domain only, no cross-domain matrix", ha="center", va="center")
        return
    doms = cross["domains"]
    grid = np.array([[np.nan if cross["auroc"][a][b] is None else cross["auroc"][a][b] for b in doms] for a in doms])
    im = ax.imshow(grid, vmin=0.4, vmax=1.0, cmap="viridis")
    for i in range(len(doms)):
        for j in range(len(doms)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 0.7 else "black")
    ax.set(xticks=range(len(doms)), yticks=range(len(doms)), xlabel="test domain", ylabel="train domain",
           title=f"{name}: true-vs-false AUROC, layer {cross['layer']}")
    ax.set_xticklabels(doms, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(doms, fontsize=8)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)


def plot_selective(record: dict[str, Any], path: str | Path) -> bool:
    """Risk-coverage with the certified threshold's realised risk over splits, its spread, and outcome rates."""
    plt = pyplot()
    if plt is None:
        return False
    methods, alpha = record["methods"], record["alpha"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    for i, (name, rep) in enumerate(methods.items()):
        colour = f"C{i}"
        ax.plot(rep["curve"]["coverage"], rep["curve"]["risk"], color=colour,
                label=f"{_SIGNALS.get(name, name)} (AURC {rep['aurc']:.3f})")
        splits = rep["per_split"]
        ax.scatter(splits["coverage"], splits["risk"], s=6, alpha=0.25, color=colour)
    ax.axhline(alpha, ls="--", color="grey", label=f"alpha = {alpha}")
    ax.set(xlabel="coverage (share answered)", ylabel="risk (error rate among answered)", ylim=(0, 1), xlim=(0, 1),
           title="risk-coverage; dots: certified threshold on a test half")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    names = list(methods)
    risks = [[r for r in methods[n]["per_split"]["risk"] if r is not None] or [np.nan] for n in names]
    ax.boxplot(risks, showfliers=True)
    for i, n in enumerate(names):
        ax.text(i + 1, 1.13, f"risk>alpha {methods[n]['violation_rate']:.2f}\ncertified {methods[n]['certified']:.2f}",
                ha="center", va="top", fontsize=7)
    ax.axhline(alpha, ls="--", color="grey")
    ax.set(ylabel="realised risk on the test half", ylim=(0, 1.15),
           title=f"realised risk over {record['splits']} splits (delta {record['delta']})")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax = axes[2]
    bottom = np.zeros(len(names))
    for outcome, colour in (("correct", "tab:green"), ("hallucinated", "tab:red"), ("abstained", "tab:grey")):
        values = np.array([methods[n][outcome] for n in names])
        ax.bar(names, values, bottom=bottom, color=colour, label=outcome)
        bottom += values
    unguarded = record["accuracy"]
    ax.axhline(unguarded, color="black", lw=1, ls=":", label=f"answer everything: correct {unguarded:.2f}")
    ax.set(ylabel="share of questions", ylim=(0, 1.18), title="outcomes at the certified threshold (mean over splits)")
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.legend(fontsize=7, ncol=2, loc="upper center")
    return _save(fig, plt, path)


_PLOTS = {"latency": plot_latency, "quality": plot_quality, "selective": plot_selective}


def plot_record(record_path: str | Path) -> Path:
    """Draw a saved record's figure beside it (``X.json`` -> ``X.png``); returns the PNG's path.

    Raises:
        ValueError: the record is not one of the suite's (its ``benchmark`` is not latency, quality or selective).
    """
    record = json.loads(Path(record_path).read_text())
    kind = record.get("benchmark")
    if kind not in _PLOTS:
        raise ValueError(f"{record_path} has benchmark={kind!r}; expected one of {sorted(_PLOTS)}")
    out = Path(record_path).with_suffix(".png")
    _PLOTS[kind](record, out)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(plot_record(arg))
