"""Which signal tells whether the model's own answer is right, on relations it was not fitted on.

:func:`study_answers` takes the model's graded greedy answers (:mod:`calibration.onpolicy`) and its
sampled answers, and scores every candidate signal **leave-one-domain-out** (each relation's answers are
scored by read-outs fitted on the other relations only):

* on-policy answer probes at every reading of :mod:`calibration.readings`, trained on *whether the answer
  is correct*, and semantic-entropy probes trained on *whether the model's samples agree with it*
  (one logistic read-out per layer, averaged, as the engine scores probes);
* the baselines: mean token log-probability, semantic entropy of the samples, and the share of samples
  that say the same as the greedy answer (sampling consistency);
* a small logistic combiner over the best of them (the form :class:`guard.combiner.Combiner` stores).

For each it reports the AUROC against correctness (pooled, median and worst left-out domain, median over
left-out wordings (probes fitted on the other wordings of other facts), and median
over answers whose answer tokens were found — the fair number for the exact readings, since an answer that
names no candidate at all is almost always wrong and its reading falls back to another token), and
selective answering certified by Learn-then-Test over random calibration/test halvings
(:func:`calibration.selective.selective_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.fit import fit_logistic, sigmoid
from calibration.gate import GATE_L2
from calibration.grading import grade
from calibration.onpolicy import OnPolicyAnswer
from calibration.questions import answer_vocabulary
from calibration.readings import READINGS, reading_features
from calibration.selective import selective_report
from calibration.semantic import class_entropy, semantic_classes
from guard.agreement import agreement as any_question
from guard.errors import ConfigError
from guard.evaluation import auroc

__all__ = ["sample_signals", "lodo_logits", "lowo_logits", "domain_auroc", "study_answers", "CONSISTENT"]

#: an answer counts as *consistent* (the semantic-entropy probe's target) when this share of samples agree
CONSISTENT = 0.6


def sample_signals(answers: Sequence[OnPolicyAnswer], samples: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Semantic entropy of each question's samples and the share of samples that agree with the greedy answer:
    with the relation's answer vocabulary (``sample_agreement``) and without, for any question
    (``agreement_any_question``, :func:`guard.agreement.agreement`: what serving computes)."""
    entropy, agreement = np.zeros(len(answers)), np.zeros(len(answers))
    for i, (a, drawn) in enumerate(zip(answers, samples)):
        keys = semantic_classes([a.text, *drawn], answer_vocabulary(a.item.domain), a.item.question)
        entropy[i] = class_entropy(keys[1:])
        agreement[i] = float(np.mean([k == keys[0] for k in keys[1:]])) if drawn else 0.0
    generic = np.array([any_question(a.text, drawn, a.item.question) for a, drawn in zip(answers, samples)])
    return {"semantic_entropy": entropy, "sample_agreement": agreement, "agreement_any_question": generic}


def _fit_score(features: np.ndarray, target: np.ndarray, fit_on: np.ndarray, held: np.ndarray, what: str,
               l2: float) -> np.ndarray:
    """Logits of the ``held`` items under per-layer logistic read-outs (averaged) fitted on ``fit_on``."""
    if target[fit_on].all() or not target[fit_on].any():
        raise ConfigError(f"leaving out {what} leaves a training part with one class (or none); need both")
    per_layer = []
    for li in range(features.shape[1]):
        w, b, mean, scale = fit_logistic(features[fit_on, li].astype(np.float64), target[fit_on], l2=l2)
        per_layer.append(((features[held, li].astype(np.float64) - mean) / scale) @ w + b)
    out: np.ndarray = np.mean(per_layer, axis=0)
    return out


def lodo_logits(features: np.ndarray, target: np.ndarray, domains: np.ndarray, l2: float = GATE_L2) -> np.ndarray:
    """Each domain's items scored by read-outs fitted on the other domains (``features (n, L, H)``).

    Raises:
        ConfigError: a domain's training part lacks one of the two classes.
    """
    out = np.zeros(len(target))
    for domain in sorted(set(domains.tolist())):
        held = domains == domain
        out[held] = _fit_score(features, target, ~held, held, repr(domain), l2)
    return out


def lowo_logits(features: np.ndarray, target: np.ndarray, wordings: np.ndarray, facts: np.ndarray,
                l2: float = GATE_L2) -> np.ndarray:
    """Each wording's items scored by read-outs fitted on the *other* wordings of *other* facts: facts fall in two
    fixed halves, and a half's items in wording ``w`` are scored by a fit on the other half's other wordings
    (another wording of the same question would leak whether the model knows the fact).

    Raises:
        ConfigError: a training part lacks one of the two classes.
    """
    names = sorted(set(facts.tolist()))
    half = np.array([names.index(f) % 2 for f in facts.tolist()])
    out = np.zeros(len(target))
    for wording in sorted(set(wordings.tolist())):
        for side in (0, 1):
            held = (wordings == wording) & (half == side)
            if held.any():
                out[held] = _fit_score(features, target, (wordings != wording) & (half != side), held,
                                       f"wording {wording!r}", l2)
    return out


def _wording_median(signal: np.ndarray, correct: np.ndarray, wordings: np.ndarray) -> float:
    """Median over wordings of the AUROC on that wording's answers (all relations together)."""
    return float(np.median([auroc(signal[wordings == w], correct[wordings == w])
                            for w in sorted(set(wordings.tolist())) if 0 < correct[wordings == w].mean() < 1]))


def domain_auroc(signal: np.ndarray, correct: np.ndarray, domains: np.ndarray,
                 mask: np.ndarray | None = None) -> dict[str, float]:
    """AUROC of ``signal`` against ``correct`` within each domain that has both outcomes (10+ items)."""
    mask = np.ones(len(correct), bool) if mask is None else mask
    out = {}
    for domain in sorted(set(domains.tolist())):
        keep = (domains == domain) & mask
        if keep.sum() >= 10 and 0 < correct[keep].mean() < 1:
            out[domain] = auroc(signal[keep], correct[keep])
    return out


def _summary(signal: np.ndarray, correct: np.ndarray, domains: np.ndarray, spanned: np.ndarray) -> dict[str, float]:
    per = np.array(list(domain_auroc(signal, correct, domains).values()))
    spanned_per = np.array(list(domain_auroc(signal, correct, domains, spanned).values()))
    return {"auroc": auroc(signal, correct), "lodo_median": float(np.median(per)), "lodo_worst": float(per.min()),
            "lodo_median_spanned": float(np.median(spanned_per))}


def study_answers(answers: Sequence[OnPolicyAnswer], samples: Sequence[Sequence[str]], layer_index: Sequence[int],
                  alpha: float = 0.2, delta: float = 0.1, splits: int = 200, seed: int = 0) -> dict[str, Any]:
    """Every signal's left-out-domain quality and certified selective answering (see the module docstring).

    Args:
        layer_index: which of the stored layers the probes read (averaged), e.g. the statement probe's.

    Returns:
        ``n``, ``accuracy``, ``spanned`` (share of answers whose answer tokens were found), ``signals``
        (name -> AUROC summary), ``selective`` (name -> selective report at ``alpha``), ``best_probe``, ``per_domain``.
    """
    correct = np.array([grade(a.text, a.item.answers, a.item.distractors, a.item.question) for a in answers])
    domains = np.array([a.item.domain for a in answers])
    spanned = np.array([a.span is not None and a.span[0] < len(a.answer_rows) for a in answers])
    logprob = np.array([a.mean_logprob for a in answers])
    logprob[~np.isfinite(logprob)] = -30.0
    wordings = np.array([a.item.template.rsplit("/", 1)[-1] for a in answers])
    facts = np.array([a.item.fact for a in answers])
    by_wording: dict[str, np.ndarray] = {}
    drawn = sample_signals(answers, samples)
    consistent = drawn["sample_agreement"] >= CONSISTENT
    confidence: dict[str, np.ndarray] = {"logprob": np.exp(logprob), "semantic_entropy": np.exp(-drawn[
        "semantic_entropy"]), "sample_agreement": drawn["sample_agreement"],
        "agreement_any_question": drawn["agreement_any_question"]}
    for how in READINGS:
        features = reading_features(answers, how)[0][:, list(layer_index)]
        confidence[f"probe_{how}"] = sigmoid(lodo_logits(features, correct, domains))
        confidence[f"se_probe_{how}"] = sigmoid(lodo_logits(features, consistent, domains))
        if len(set(wordings.tolist())) < 2:
            continue
        # left-out wordings: fitted on the other wordings, on no question about a fact it scores
        by_wording[f"probe_{how}"] = lowo_logits(features, correct, wordings, facts)
        by_wording[f"se_probe_{how}"] = lowo_logits(features, consistent, wordings, facts)
    signals = {name: _summary(v, correct, domains, spanned) for name, v in confidence.items()}
    for name, v in confidence.items():  # signals fitted on nothing are read the same on every wording
        fitted = name.startswith(("probe_", "se_probe_"))
        signals[name]["lowo_median"] = (_wording_median(by_wording[name], correct, wordings) if name in by_wording
                                        else float("nan") if fitted else _wording_median(v, correct, wordings))
    probes = [n for n in signals if n.startswith(("probe_", "se_probe_")) and n != "probe_prompt"]
    # chosen on answers whose answer tokens were found: elsewhere an exact reading falls back to another token,
    # and "the answer names no candidate at all" (almost always wrong) would be credited to the probe
    best_probe = max(probes, key=lambda n: signals[n]["lodo_median_spanned"])
    combos = {"combined_probe_gate_logprob": (best_probe, "probe_prompt", "logprob"),
              "combined_agreement_logprob": ("sample_agreement", "logprob"),
              "combined_all": ("sample_agreement", best_probe, "probe_prompt", "logprob"),
              "combined_any_question": ("agreement_any_question", "probe_mean", "probe_prompt", "logprob")}
    for name, parts in combos.items():
        columns = np.stack([confidence[p] for p in parts], axis=1)
        # a logistic combiner over the signals, fitted per left-out domain (the columns as one "layer")
        confidence[name] = sigmoid(lodo_logits(columns[:, None, :], correct, domains, l2=1.0))
        signals[name] = _summary(confidence[name], correct, domains, spanned)
        signals[name]["lowo_median"] = float("nan")  # the combiner is fitted per left-out domain only
    selective = {name: {k: v for k, v in selective_report(c, correct, alpha, delta, splits, seed).items()
                        if k != "curve"} for name, c in confidence.items()}
    per_domain = {name: domain_auroc(confidence[name], correct, domains)
                  for name in ("logprob", "sample_agreement", best_probe, "probe_prompt")}
    return {"n": len(answers), "accuracy": float(correct.mean()), "spanned": float(spanned.mean()),
            "accuracy_spanned": float(correct[spanned].mean()), "alpha": alpha, "delta": delta,
            "signals": signals, "selective": selective, "best_probe": best_probe, "combinations": combos,
            "per_domain": per_domain, "domain_accuracy": {d: float(correct[domains == d].mean())
                                                          for d in sorted(set(domains.tolist()))}}
