"""``guard bench calibrate``: the cost of fitting probes at a large model's width, before and after L-BFGS.

Calibration fits one logistic read-out per class (true / false / neither, one-vs-rest) per layer and fold
(:func:`calibration.families.fit_layer`). Until L-BFGS, every fit ran Newton's method: an ``(H + 1)^2`` Hessian
built in ``O(n H^2)`` and solved in ``O(H^3)`` per step, a minute and more per layer at ``H = 4096``. Two arms, each
in its own child process (so its memory is its own), on the same synthetic features:

- ``newton`` (before): :func:`_newton_one_vs_rest`, the solver calibration used until then (the same operations),
  kept here as the baseline only;
- ``lbfgs`` (after): :func:`calibration.families.fit_layer`, what ``guard calibrate`` runs now (preconditioned
  L-BFGS above ``calibration.fit.NEWTON_MAX_FEATURES`` features).

Features imitate a residual stream (:func:`features`): the default model's spectrum of directions, isotropic noise,
four huge ("massive activation") features and a class signal, float32 as collected. Wall time is per layer (three
binary fits); memory is the child's peak RSS during the fits (Linux: the peak is reset once the features are made)
and what the fits added to the RSS before them. The Newton arm fits ``--baseline-layers`` layers only (it is that
slow); its time for all layers is extrapolated and labelled so. Both arms fit the first layer, where their class
probabilities are compared. A crossover sweep at smaller widths (``--crossover``, one layer, L-BFGS forced at every
width) shows where Newton is still the faster solver, which is where ``NEWTON_MAX_FEATURES`` keeps it.

Usage::

    guard bench calibrate --out benchmarks/results/bench-calibrate-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ARMS", "add_arguments", "execute", "features", "run", "summary_text"]

ARMS = ("newton", "lbfgs")
L2 = 30.0  # the first logistic penalty guard calibrate tries (calibration.families.DEFAULT_L2)
CLASS_SEPARATION = 3.0  # norm of each class's mean shift: held-out accuracy 0.85 at H = 4096, n = 4000
_ROOT = Path(__file__).resolve().parents[1]


def features(rows: int, hidden: int, layer: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One layer's synthetic residual-stream features ``(rows, hidden)`` float32 and labels ``(rows,)``.

    The spectrum follows the default model's (standardised, ``n = 4000``): the ``i``-th direction carries variance
    ``0.17 H / i`` (its top one 17 % of the total), over isotropic noise; four features are huge and offset
    ("massive activations"). Made in blocks of rows, so no temporary is larger than a block.
    """
    rng = np.random.default_rng([seed, layer])
    rank = min(1024, hidden)
    spectrum = np.sqrt(0.17 * hidden / np.arange(1, rank + 1))
    mix = rng.standard_normal((rank, hidden)) * (spectrum / np.sqrt(hidden))[:, None]  # (rank, H), rows ~orthogonal
    centres = rng.standard_normal((classes, hidden)) * (CLASS_SEPARATION / np.sqrt(hidden))
    labels = rng.integers(0, classes, rows)
    x = np.empty((rows, hidden), np.float32)
    for start in range(0, rows, 512):
        part = slice(start, min(rows, start + 512))
        block = rng.standard_normal((part.stop - start, rank)) @ mix + rng.standard_normal((part.stop - start, hidden))
        block += centres[labels[part]]
        block[:, :4] = block[:, :4] * 50 + 100
        x[part] = block
    return x, labels


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _newton_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0,
                     iters: int = 30) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The BASELINE: ``calibration.fit.fit_logistic`` as it was before L-BFGS (Newton's method): the same operations,
    its helpers inlined."""
    x, y = np.asarray(x, np.float64), np.asarray(y, bool)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])  # (n, H + 1)
    theta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = _sigmoid(z @ theta)
        grad = z.T @ (p - y) + reg * theta
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1]), mean, scale


def _newton_one_vs_rest(x: np.ndarray, labels: np.ndarray, n_classes: int, l2: float) -> tuple[np.ndarray, ...]:
    """The BASELINE: ``fit_layer("logistic", ...)`` before L-BFGS (``fit_one_vs_rest`` over the Newton fit)."""
    x = np.asarray(x, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    ws, bs = [], []
    for c in range(n_classes):
        w, b, m, s = _newton_logistic(x, labels == c, l2=l2)
        ws.append(w / s * scale)
        bs.append(b - np.sum(w / s * (m - mean)))
    return np.stack(ws), np.array(bs), mean, scale


def _probabilities(x: np.ndarray, tensors: tuple[np.ndarray, ...]) -> np.ndarray:
    weight, bias, mean, scale = tensors
    s = ((x - mean) / scale) @ weight.T + bias  # (n, k)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _fitter(arm: str, force_lbfgs: bool = False) -> Any:
    """The arm's ``fit(x, labels, k) -> tensors``; ``force_lbfgs``: L-BFGS at every width (the crossover sweep)."""
    import calibration.fit
    from calibration.families import fit_layer

    if arm == "newton":
        return lambda x, labels, k: _newton_one_vs_rest(x, labels, k, L2)
    if force_lbfgs:
        calibration.fit.NEWTON_MAX_FEATURES = 0  # this child process only
    return lambda x, labels, k: fit_layer("logistic", x, labels, k, L2)


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def _status_kib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process from ``/proc/self/status`` (KiB); ``getrusage``'s peak where
    there is no such file."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return float(next(line.split()[1] for line in lines if line.startswith(f"{field}:")))


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``), so the peak read after the fits is
    theirs and not the feature generation's; ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _child() -> None:
    """One arm in this process: read its spec (JSON on stdin), fit, print its record (JSON on stdout)."""
    spec = json.loads(sys.stdin.read())
    fit = _fitter(spec["arm"], spec.get("force_lbfgs", False))
    data = [features(spec["rows"], spec["hidden"], li, spec["classes"], spec["seed"]) for li in range(spec["layers"])]
    import scipy.optimize  # noqa: F401  # imported lazily by the fit: not part of its time or memory
    reset = _reset_peak()
    before = _status_kib("VmRSS")
    seconds, first = [], None
    for x, labels in data:
        start = time.perf_counter()
        tensors = fit(x, labels, spec["classes"])
        seconds.append(round(time.perf_counter() - start, 3))
        first = first or tensors
    peak = _status_kib("VmHWM")  # before scoring, whose copies are not the fit's
    if spec.get("probs") and first is not None:
        np.save(spec["probs"], _probabilities(data[0][0].astype(np.float64), first))
    print(json.dumps({"seconds_per_layer": seconds, "peak_rss_mib": _mib(peak), "rss_before_fit_mib": _mib(before),
                      "fit_extra_rss_mib": _mib(peak - before), "peak_reset_before_fit": reset}))


def _run_child(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one arm in a fresh interpreter with ``threads`` BLAS threads; its record."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
           **{name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    code = "from benchmarks.probe_fit import _child; _child()"
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {spec['arm']} arm failed ({done.returncode}):\n{done.stderr[-2000:]}")
    record: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def run(rows: int = 4000, hidden: int = 4096, layers: int = 8, baseline_layers: int = 1, classes: int = 3,
        threads: int = 1, crossover: tuple[int, ...] = (64, 256, 1024), seed: int = 0) -> dict[str, Any]:
    """Both arms at ``hidden`` (and the crossover widths), each in its own process; the record.

    Raises:
        ValueError: a count is not positive, or the baseline has more layers than the run.
    """
    if min(rows, hidden, layers, baseline_layers, classes, threads) < 1 or baseline_layers > layers:
        raise ValueError(f"rows={rows} hidden={hidden} layers={layers} baseline_layers={baseline_layers} "
                         f"classes={classes} threads={threads}: expected positive counts, baseline_layers <= layers")
    base = {"rows": rows, "hidden": hidden, "classes": classes, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="guard-bench-fit-") as tmp:
        folder = Path(tmp)
        arms = {arm: _run_child({**base, "arm": arm, "layers": baseline_layers if arm == "newton" else layers,
                                 "probs": str(folder / f"{arm}.npy")}, threads) for arm in ARMS}
        p_new, p_old = np.load(folder / "lbfgs.npy"), np.load(folder / "newton.npy")
    per_layer = {arm: float(np.median(arms[arm]["seconds_per_layer"])) for arm in ARMS}
    arms["newton"]["all_layers_s_extrapolated"] = round(per_layer["newton"] * layers, 1)
    arms["lbfgs"]["all_layers_s"] = round(sum(arms["lbfgs"]["seconds_per_layer"]), 1)
    sweep = []
    for width in crossover:
        cell = {arm: _run_child({**base, "hidden": width, "arm": arm, "layers": 1, "force_lbfgs": True}, threads)
                for arm in ARMS}
        sweep.append({"hidden": width, **{f"{arm}_s": cell[arm]["seconds_per_layer"][0] for arm in ARMS},
                      **{f"{arm}_fit_extra_rss_mib": cell[arm]["fit_extra_rss_mib"] for arm in ARMS}})
    return {"rows": rows, "hidden": hidden, "layers": layers, "baseline_layers": baseline_layers, "classes": classes,
            "l2": L2, "blas_threads": threads, "arms": arms,
            "speedup_per_layer": round(per_layer["newton"] / per_layer["lbfgs"], 2),
            "max_probability_difference": float(np.abs(p_new - p_old).max()), "crossover": sweep}


def summary_text(record: dict[str, Any]) -> str:
    """A few lines: per-layer time, peak memory, agreement, crossover."""
    new, old = record["arms"]["lbfgs"], record["arms"]["newton"]
    lines = [f"probe fits at H={record['hidden']}, n={record['rows']}, {record['classes']} classes one-vs-rest, "
             f"{record['blas_threads']} BLAS thread(s):",
             f"  newton (before): {np.median(old['seconds_per_layer']):8.1f} s/layer over {record['baseline_layers']} "
             f"layer(s), {record['layers']} layers ~{old['all_layers_s_extrapolated']} s (extrapolated); peak RSS "
             f"{old['peak_rss_mib']} MiB (+{old['fit_extra_rss_mib']} over the RSS before the fits)",
             f"  lbfgs  (after):  {np.median(new['seconds_per_layer']):8.1f} s/layer, {record['layers']} layers "
             f"{new['all_layers_s']} s; peak RSS {new['peak_rss_mib']} MiB (+{new['fit_extra_rss_mib']} over the RSS "
             f"before the fits)",
             f"  speed-up per layer {record['speedup_per_layer']}x; class probabilities agree to "
             f"{record['max_probability_difference']:.1e}"]
    lines += [f"  H={c['hidden']}: newton {c['newton_s']:.2f} s, lbfgs {c['lbfgs_s']:.2f} s per layer"
              for c in record["crossover"]]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``guard bench calibrate``."""
    parser.add_argument("--rows", type=int, default=4000, help="statements (rows) per layer (default 4000)")
    parser.add_argument("--hidden", type=int, default=4096, help="hidden size (default 4096)")
    parser.add_argument("--layers", type=int, default=8, help="layers the new solver fits (default 8)")
    parser.add_argument("--baseline-layers", type=int, default=1,
                        help="layers the old Newton solver fits (default 1: minutes each; the rest is extrapolated)")
    parser.add_argument("--classes", type=int, default=3, help="one-vs-rest classes (default 3, as guard's probe)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per arm (default 1: a shared machine "
                        "slows multi-threaded BLAS unpredictably)")
    parser.add_argument("--crossover", default="64,256,1024", help="comma-separated smaller widths to time both "
                        "solvers at, L-BFGS forced where calibration would still use Newton ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path")


def execute(args: argparse.Namespace, command: str) -> int:
    """Run both arms, print the summary and write the JSON record."""
    from benchmarks.machine import machine
    from benchmarks.record import save_record

    started, load_start = time.time(), os.getloadavg()[0]
    crossover = tuple(int(w) for w in args.crossover.split(",") if w.strip())
    result = run(args.rows, args.hidden, args.layers, args.baseline_layers, args.classes, args.threads, crossover,
                 args.seed)
    record = {"benchmark": "calibrate", "command": command, "machine": machine("numpy", "scipy"),
              "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)], **result,
              "wall_s": round(time.time() - started, 1)}
    save_record(args.out, record, summary_text(record))
    return 0
