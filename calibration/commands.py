"""``guard calibrate`` and ``guard evaluate``: the calibration toolkit's command-line jobs.

Both run the real engine: calibration collects activations through the vLLM capture, evaluation
scores statements with the probe *inside* the engine (exactly what serving will see).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.statements import LABELS, Statement
from guard.errors import ArtifactError, ConfigError
from guard.evaluation import verdict_metrics
from guard.probe import Probe

__all__ = ["run_calibrate", "run_evaluate", "score_statements", "evaluate_statements", "format_table", "dumps"]


def run_calibrate(model: str, out: str | Path, layers: Sequence[int] | None = None, family: str = "logistic",
                  alpha: float = 0.1, seed: int = 0, statements_file: str | None = None, eager: bool = True,
                  known_only: bool = True, negations: bool = False) -> dict[str, Any]:
    """Calibrate a probe for ``model`` and write ``OUT/probe.{safetensors,json}`` and ``OUT/report.md``.

    Returns:
        A summary: chosen layer, metrics, and where the artefacts went.
    """
    from adapters.model_store import resolve_model
    from adapters.vllm.engine import GuardedLLM
    from calibration.pipeline import calibrate, default_sweep
    from calibration.report import write_report
    from calibration.user_files import load_statements
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec

    folder = resolve_model(model)
    spec = ModelSpec.from_folder(folder)
    sweep = tuple(layers) if layers else default_sweep(spec.num_layers)
    statements = load_statements(statements_file) if statements_file else None
    out = Path(out)
    config = GuardConfig.build(model=model, probe=None, layers=sweep, capture_hidden=True, enforce_eager=eager,
                               max_model_len=512)
    with GuardedLLM(config) as llm:
        result = calibrate(llm, out / "probe", statements=statements, alpha=alpha, seed=seed, family=family,
                           model_id=model, known_only=known_only, negations=negations)
    report = write_report(result, out)
    return {"probe": str(result.path), "report": str(report), "layers": list(result.probe.layers),
            "layer_auroc": result.layer_auroc, "metrics": result.metrics}


def score_statements(llm: Any, texts: Sequence[str]) -> np.ndarray:
    """Class probabilities ``(n, k)`` of each text from the probe running *in the engine*.

    Pooling follows the probe's manifest: the last token's scores, or the maximum over the text's
    tokens (multiple-instance probes); scores of several layers are averaged.
    """
    from vllm import SamplingParams

    if llm.probe is None:
        raise ConfigError("scoring statements needs an engine started with a probe")
    pooling = llm.probe.manifest.pooling
    out = []
    for res in llm.generate(list(texts), SamplingParams(max_tokens=1, temperature=0.0)):
        n = len(res.prompt_token_ids)
        keep = res.scores.positions < n
        scores = res.scores.scores[keep].mean(axis=1)  # (prompt tokens, k)
        if len(scores) != n:
            raise ArtifactError(f"engine delivered scores for {len(scores)} of {n} prompt tokens; is prefix caching on?")
        out.append(scores[-1] if pooling == "last" else scores.max(axis=0))
    return llm.probe.probabilities(np.stack(out)[:, None, :])  # layers already averaged


def evaluate_statements(llm: Any, statements: Sequence[Statement]) -> dict[str, float]:
    """AUROC, accuracy, macro-F1, ECE and (when the probe carries conformal thresholds) coverage and set size."""
    probe: Probe = llm.probe
    if tuple(probe.labels) != LABELS:
        raise ArtifactError(f"probe labels {list(probe.labels)} are not {list(LABELS)}; evaluate needs a three-way probe")
    probs = score_statements(llm, [s.text for s in statements])
    labels = np.array([LABELS.index(s.label) for s in statements])
    sets = probe.conformal()
    return verdict_metrics(probs, labels, None if sets is None else sets.predict_sets(probs))


def run_evaluate(probe: str, statements_file: str, model: str = "default", eager: bool = True) -> dict[str, Any]:
    """Evaluate ``probe`` on a labelled statements file through the engine."""
    from adapters.vllm.engine import GuardedLLM
    from calibration.user_files import load_statements
    from guard.config import GuardConfig

    statements = load_statements(statements_file)
    config = GuardConfig.build(model=model, probe=probe, enforce_eager=eager, max_model_len=512)
    with GuardedLLM(config) as llm:
        metrics = evaluate_statements(llm, statements)
        alpha = llm.probe.manifest.conformal.alpha if llm.probe.manifest.conformal else None
    return {"probe": probe, "statements": statements_file, "alpha": alpha, "metrics": metrics}


def format_table(summary: dict[str, Any]) -> str:
    """A readable two-column table of a summary's metrics."""
    rows = [f"{k:<22} {v:.4f}" if isinstance(v, float) else f"{k:<22} {v}" for k, v in summary["metrics"].items()]
    head = [f"{k}: {v}" for k, v in summary.items() if k not in ("metrics", "layer_auroc")]
    return "\n".join(head + ["", f"{'metric':<22} value", *rows])


def dumps(summary: dict[str, Any]) -> str:
    """JSON with NaN written as null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        return v

    return json.dumps(clean(summary), indent=2)
