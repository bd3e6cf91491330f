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

from calibration.engine_port import GuardEngine
from calibration.gate import cross_fitted_confidence, fit_gate
from calibration.pipeline import split_indices
from calibration.progress import Progress
from calibration.qa import AnsweredItem, answer_confidence, answer_questions
from calibration.selective import selective_report
from calibration.shift_fit import verdict_table
from calibration.statements import LABELS, Statement, generate_qa
from guard.errors import ArtifactError, ConfigError
from guard.evaluation import auroc, verdict_metrics
from guard.model_spec import ModelSpec
from guard.probe import Probe
from guard.shift import shift_of_columns

__all__ = ["run_calibrate", "run_evaluate", "run_evaluate_qa", "selective_methods", "score_statements",
           "judge_statements", "evaluate_statements", "format_table", "format_evaluation", "format_qa_table", "dumps",
           "EVALUATE_COLUMNS"]


def run_calibrate(model: str, out: str | Path, layers: Sequence[int] | None = None, family: str = "auto",
                  alpha: float = 0.1, seed: int = 0, statements_file: str | None = None, eager: bool = True,
                  known_only: bool = True, negations: bool = True, gate_alpha: float = 0.3,
                  delta: float = 0.1, features_dir: str | Path | None = None,
                  dtype: str | None = None) -> dict[str, Any]:
    """Calibrate a probe for ``model`` and write ``OUT/probe.{safetensors,json}``, the pre-generation gate
    ``OUT/gate.{safetensors,json}`` (trained on the model's graded answers to guard's QA items) and
    ``OUT/report.md`` with plots (layer sweep, reliability, risk-coverage against the log-probability baseline).
    With ``features_dir`` the activations stream to ``.npy`` files there (sets larger than RAM).

    Returns:
        A summary: chosen layer, metrics, and where the artefacts went.
    """
    from adapters.model_store import resolve_model
    from adapters.vllm.engine import GuardedLLM
    from calibration.pipeline import calibrate, default_sweep
    from calibration.report import write_report
    from calibration.user_files import load_statements
    from guard.config import GuardConfig

    folder = resolve_model(model)
    spec = ModelSpec.from_folder(folder)
    sweep = tuple(layers) if layers else default_sweep(spec.num_layers)
    statements = load_statements(statements_file) if statements_file else None
    out = Path(out)
    config = GuardConfig.build(model=model, probe=None, layers=sweep, capture_hidden=True, enforce_eager=eager,
                               max_model_len=512, dtype=dtype)
    with GuardedLLM(config) as llm:
        result = calibrate(llm, out / "probe", statements=statements, alpha=alpha, seed=seed, family=family,
                           model_id=model, known_only=known_only, negations=negations, features_dir=features_dir)
        layer_index = [sweep.index(layer) for layer in result.probe.layers]
        answered = answer_questions(llm, generate_qa(seed), prompt_rows=True, probe=result.probe,
                                    layer_index=layer_index)
    correct = np.array([a.correct for a in answered])
    rows = _prompt_rows(answered)
    cross_fitted = cross_fitted_confidence(rows, correct, seed=seed)  # every item scored by a gate that never saw it
    train, cal, _ = split_indices(correct.astype(int), seed, fractions=(0.5, 0.5))
    gate = fit_gate(rows, correct, train, cal, result.probe.layers, spec, model, alpha=gate_alpha, delta=delta,
                    metrics={"auroc_correct_cross_fitted": auroc(cross_fitted, correct)},
                    dtype=result.probe.manifest.dtype)
    gate_path = gate.save(out / "gate")
    qa = selective_methods(answered, result.probe, None, alpha=gate_alpha, delta=delta, seed=seed,
                           gate_confidence=cross_fitted)
    report = write_report(result, out, qa=qa, gate=gate)
    return {"probe": str(result.path), "gate": str(gate_path), "report": str(report),
            "layers": list(result.probe.layers),
            "layer_auroc": result.layer_auroc, "metrics": result.metrics, "gate_metrics": gate.manifest.metrics,
            "qa": _without_curves(qa)}


def _engine_probe(llm: GuardEngine, job: str) -> Probe:
    if llm.probe is None:
        raise ConfigError(f"{job} needs an engine started with a probe")
    return llm.probe


def _prompt_rows(answered: Sequence[AnsweredItem]) -> np.ndarray:
    """``(n, L, H)``: each answer's last-prompt-token rows."""
    rows = [a.prompt_rows for a in answered]
    if any(r is None for r in rows):
        raise ConfigError("the answers carry no prompt rows; answer them with answer_questions(..., prompt_rows=True)")
    return np.stack([r for r in rows if r is not None])


def score_statements(llm: GuardEngine, texts: Sequence[str]) -> np.ndarray:
    """Class probabilities ``(n, k)`` of each text from the probe running *in the engine*.

    Pooling follows the probe's manifest: the last token's scores, or the maximum over the text's
    tokens (multiple-instance probes); scores of several layers are averaged.
    """
    return judge_statements(llm, texts)[0]


def judge_statements(llm: GuardEngine, texts: Sequence[str], batch: int = 128) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`score_statements`, and each text's shift (``None`` for a probe without a shift head): its last token's,
    as the verdicts take it. ``batch`` texts go to the engine at a time (each a step of the progress bar)."""
    from vllm import SamplingParams

    probe = _engine_probe(llm, "scoring statements")
    pooling = probe.manifest.pooling
    out, shifts = [], []
    with Progress(len(texts), "scoring statements in the engine", unit="statements") as bar:
        for i in range(0, len(texts), batch):
            chunk = list(texts[i : i + batch])
            for res in llm.generate(chunk, SamplingParams(max_tokens=1, temperature=0.0)):
                n = len(res.prompt_token_ids)
                if res.scores is None:
                    raise ArtifactError(f"engine delivered no scores for a guarded prompt of {n} tokens; "
                                        "is the capture installed?")
                keep = res.scores.positions < n
                scores = res.scores.scores[keep].mean(axis=1)  # (prompt tokens, k)
                if len(scores) != n:
                    raise ArtifactError(f"engine delivered scores for {len(scores)} of {n} prompt tokens; "
                                        "is prefix caching on?")
                out.append(scores[-1] if pooling == "last" else scores.max(axis=0))
                if res.shift_scores is not None:  # the last token's shift, whatever the pooling
                    shifts.append(shift_of_columns(res.shift_scores[keep][-1:])[0])
            bar.update(len(chunk))
    probs = probe.probabilities(np.stack(out)[:, None, :])  # layers already averaged
    return probs, (np.array(shifts) if shifts else None)


def evaluate_statements(llm: GuardEngine, statements: Sequence[Statement]) -> dict[str, float]:
    """AUROC, accuracy, macro-F1, ECE and (when the probe carries conformal thresholds) coverage of the sets, set
    size and the verdicts: ``coverage_or_uncertain`` (the label is in the set, or the statement is shifted and so
    reported uncertain), ``confident`` (one label, not shifted), ``confidently_wrong`` (and that label is wrong),
    ``shifted`` (judged uncertain because the text is unlike the calibration domains)."""
    probe = _engine_probe(llm, "evaluating statements")
    if tuple(probe.labels) != LABELS:
        raise ArtifactError(f"probe labels {list(probe.labels)} are not {list(LABELS)}; "
                            "evaluate needs a three-way probe")
    probs, shifts = judge_statements(llm, [s.text for s in statements])
    labels = np.array([LABELS.index(s.label) for s in statements])
    sets = probe.conformal()
    metrics = verdict_metrics(probs, labels, None if sets is None else sets.predict_sets(probs))
    if sets is not None:
        rule = probe.manifest.shift
        shifted = (np.array([rule.shifted(float(v)) for v in shifts]) if rule is not None and shifts is not None
                   else np.zeros(len(labels), bool))
        table = verdict_table(probs, sets.predict_sets(probs), shifted, labels,
                              np.array([s.negated for s in statements]))
        metrics |= {"coverage_or_uncertain": table["coverage"],
                    **{k: table[k] for k in ("confident", "confidently_wrong", "shifted")}}
    return metrics


def run_evaluate(probe: str, statements_files: Sequence[str], model: str = "default",
                 eager: bool = True) -> dict[str, Any]:
    """Evaluate ``probe`` on one or more labelled statements files through the engine: one row of metrics each.

    Every file is read (and refused, naming the line) before the engine starts.
    """
    from adapters.vllm.engine import GuardedLLM
    from calibration.user_files import load_statements
    from guard.config import GuardConfig

    loaded = [(name, load_statements(name)) for name in statements_files]
    config = GuardConfig.build(model=model, probe=probe, enforce_eager=eager, max_model_len=512)
    with GuardedLLM(config) as llm:
        rows = [{"file": name, "metrics": evaluate_statements(llm, statements)} for name, statements in loaded]
        conformal = _engine_probe(llm, "evaluate").manifest.conformal
        alpha = conformal.alpha if conformal else None
    return {"probe": probe, "alpha": alpha, "files": rows}


#: the columns of ``guard evaluate``'s table
EVALUATE_COLUMNS = ("n", "auroc_true_vs_false", "macro_f1", "ece", "coverage_or_uncertain", "mean_set_size",
                    "confident", "confidently_wrong", "shifted")


def format_evaluation(summary: dict[str, Any]) -> str:
    """:func:`run_evaluate`'s result as a table: one row per file."""
    names = [str(Path(row["file"]).name) for row in summary["files"]]
    width = max([len(n) for n in names] + [4])
    heads = ("n", "auroc", "macro_f1", "ece", "covered", "set_size", "confident", "conf_wrong", "shifted")
    lines = [f"probe: {summary['probe']}", f"alpha: {summary['alpha']}", "",
             f"{'file':<{width}} " + " ".join(f"{h:>10}" for h in heads)]
    for name, row in zip(names, summary["files"]):
        m = row["metrics"]
        cells = [f"{int(m['n']):>10}"] + [f"{m[c]:>10.3f}" if c in m else f"{'-':>10}" for c in EVALUATE_COLUMNS[1:]]
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def selective_methods(answered: Sequence[AnsweredItem], probe: Probe, gate: Probe | None, alpha: float,
                      delta: float = 0.1, splits: int = 200, seed: int = 0,
                      gate_confidence: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Selective-answering reports of each confidence signal on the same graded answers.

    ``answer_probe``: the probe's ``p(true)`` of the answer; ``logprob``: ``exp`` of the answer's mean
    token log-probability (baseline); ``gate``: the pre-generation gate's ``p(correct)`` (from ``gate``,
    or precomputed, e.g. cross-fitted, in ``gate_confidence``); ``gate_and_probe``: their product.
    """
    correct = np.array([a.correct for a in answered])
    signals = {"answer_probe": answer_confidence(probe, answered),
               "logprob": np.exp(np.array([a.mean_logprob for a in answered]))}
    if gate is not None and gate_confidence is None:
        rows = _prompt_rows(answered)
        gate_confidence = gate.probabilities(gate.score(rows))[:, list(gate.labels).index("correct")]
    if gate_confidence is not None:
        signals["gate"] = np.asarray(gate_confidence, np.float64)
        signals["gate_and_probe"] = signals["gate"] * signals["answer_probe"]
    return {name: selective_report(conf, correct, alpha, delta, splits, seed) for name, conf in signals.items()}


def _without_curves(methods: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {k: v for k, v in rep.items() if k != "curve"} for name, rep in methods.items()}


def run_evaluate_qa(probe: str, qa_file: str | None = None, alpha: float = 0.1, delta: float = 0.1,
                    model: str = "default", gate: str | None = None, splits: int = 200, eager: bool = True,
                    max_tokens: int = 32, curves: bool = False) -> dict[str, Any]:
    """Answer QA items through the engine, grade them, and report selective answering per signal.

    Args:
        qa_file: ``question,answers`` CSV/JSONL (default: guard's own closed-book items).
        gate: a pre-generation gate artefact reading the probe's layers (adds ``gate`` and ``gate_and_probe``).
        curves: keep the risk-coverage points in the result.

    Raises:
        ArtifactError: the gate reads other layers than the probe.
    """
    from adapters.vllm.engine import GuardedLLM
    from calibration.user_files import load_qa
    from guard.config import GuardConfig

    items = load_qa(qa_file) if qa_file else generate_qa()
    gate_probe = Probe.load(gate) if gate else None
    config = GuardConfig.build(model=model, probe=probe, enforce_eager=eager, max_model_len=1024,
                               capture_hidden=gate_probe is not None)
    with GuardedLLM(config) as llm:
        answer_probe = _engine_probe(llm, "evaluate-qa")
        if gate_probe is not None:
            gate_probe.check_model(ModelSpec.from_folder(llm.model_path), model)
            if gate_probe.layers != answer_probe.layers:
                raise ArtifactError(f"gate {gate!r} reads layers {list(gate_probe.layers)} but probe {probe!r} reads "
                                    f"{list(answer_probe.layers)}; use the gate calibrated with this probe")
        answered = answer_questions(llm, items, max_tokens=max_tokens, prompt_rows=gate_probe is not None)
        methods = selective_methods(answered, answer_probe, gate_probe, alpha, delta, splits)
    correct = np.array([a.correct for a in answered])
    return {"probe": probe, "gate": gate, "qa": qa_file or "guard's own QA items", "n": len(items),
            "accuracy": float(correct.mean()), "alpha": alpha, "delta": delta,
            "methods": methods if curves else _without_curves(methods),
            "examples": [{"question": a.item.question, "answer": a.answer, "correct": a.correct} for a in answered[:5]]}


def format_qa_table(summary: dict[str, Any]) -> str:
    """A readable table of :func:`run_evaluate_qa`'s result: one row per confidence signal."""
    cols = ("auroc", "aurc", "certified", "coverage", "risk", "violation_rate", "correct", "hallucinated", "abstained")
    head = [f"{k}: {v}" for k, v in summary.items() if k not in ("methods", "examples")]
    rows = [f"{name:<16} " + " ".join(f"{rep[c]:>9.3f}" for c in cols) for name, rep in summary["methods"].items()]
    return "\n".join(head + ["", f"{'signal':<16} " + " ".join(f"{c[:9]:>9}" for c in cols), *rows])


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
