"""The on-policy gate: one read-out of the model's own answers, served before and after the answer.

Fitted on the model's graded greedy answers (:mod:`calibration.onpolicy`), at the layers the probe reads
(the gate rides along with it, :mod:`guard.heads`): one L2-regularised logistic read-out per layer, trained
on the prompt's last row *and* the mean answer row of every answer (both labelled with whether the answer
was right). The engine scores it on every row, so the server has two signals per answer without anything
but the probe's matmuls: ``gate`` (its logit on the prompt's last row) and ``answer`` (its logit averaged
over the answer's rows: the logit of the mean row, the read-out being linear); the answer combiner adds the
mean token log-probability, which the engine returns with the tokens. The study
(:mod:`calibration.answer_study`) found the answer's mean row the best reading that needs no answer
vocabulary, and the joint read-out as good as two separate ones at either place.

Everything is measured and certified **leave-one-domain-out**: each relation's answers are scored by a
read-out and a combiner fitted on the other relations only (the combiner on signals those relations' read-outs
gave without seeing this one either: :func:`cross_fitted_answer_check`). Those out-of-domain confidences are the
stored calibration split of the answer :class:`~guard.combiner.Combiner` (so its Learn-then-Test
certificate is about questions on relations it was not fitted on) and of the gate's own selective
calibration; the shipped read-out and combiner are then fitted on everything. The gate carries the question
scope of its calibration questions (:mod:`guard.scope`): left out, a relation's questions are ranked by the gate
no better than chance on several relations, so it decides on questions worded as calibrated ones only; the
report's ``gate_scope`` (:mod:`calibration.gate_scope`) measures both sides of that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.answer_study import domain_auroc
from calibration.fit import fit_logistic, sigmoid
from calibration.gate import GATE_L2, GATE_LABELS, fit_layers
from calibration.gate_scope import fact_folds, scope_of, scope_report
from calibration.grading import grade
from calibration.onpolicy import OnPolicyAnswer
from calibration.readings import reading_features
from calibration.selective import selective_report
from guard.answer_check import ANSWER_SIGNALS, SAMPLED_SIGNALS, mean_logprob
from guard.combiner import AnswerSampling, Combiner
from guard.errors import ConfigError
from guard.model_spec import ModelSpec
from guard.probe import Probe, ProbeManifest
from guard.probe_manifest import Dtype
from guard.selective import SelectiveCalibration
from guard.shipped import GATE_KIND

__all__ = ["COMBINER_L2", "SamplingSettings", "joint_lodo_logits", "cross_fitted_answer_check", "fit_answer_gate"]

#: ridge penalty of the three-signal combiner (standardised signals, thousands of answers)
COMBINER_L2 = 1.0


def _per_layer_logits(train: np.ndarray, target: np.ndarray, held: Sequence[np.ndarray], l2: float) -> list[np.ndarray]:
    """Logits (layers averaged) of each array in ``held`` under per-layer read-outs fitted on ``train``."""
    out = [np.zeros(len(h)) for h in held]
    for li in range(train.shape[1]):
        w, b, mean, scale = fit_logistic(train[:, li].astype(np.float64), target, l2=l2)
        for o, h in zip(out, held):
            o += ((h[:, li].astype(np.float64) - mean) / scale) @ w + b
    return [o / train.shape[1] for o in out]


def joint_lodo_logits(prompt: np.ndarray, mean: np.ndarray, correct: np.ndarray, domains: np.ndarray,
                      l2: float = GATE_L2) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-domain ``(gate, answer)`` logits: each domain's prompt and mean-answer rows ``(n, L, H)`` scored by a
    joint read-out fitted on the other domains' rows of both kinds.

    Raises:
        ConfigError: a domain's training part lacks correct or incorrect answers.
    """
    gate, answer = np.zeros(len(correct)), np.zeros(len(correct))
    for domain in sorted(set(domains.tolist())):
        held, fit = domains == domain, domains != domain
        if correct[fit].all() or not correct[fit].any():
            raise ConfigError(f"leaving out {domain!r} (of {sorted(set(domains.tolist()))}) leaves answers of one "
                              "grade only; need right and wrong ones (more questions, or other relations)")
        train = np.concatenate([prompt[fit], mean[fit]])
        gate[held], answer[held] = _per_layer_logits(train, np.concatenate([correct[fit], correct[fit]]),
                                                     [prompt[held], mean[held]], l2)
    return gate, answer


def cross_fitted_answer_check(prompt: np.ndarray, mean: np.ndarray, logprob: np.ndarray, correct: np.ndarray,
                              groups: np.ndarray | None = None, folds: int = 5, seed: int = 0,
                              l2: float = GATE_L2, agreement: np.ndarray | None = None) -> np.ndarray:
    """The answer check's ``p(correct)`` with nothing scored by a fit that saw its group's grades (with
    ``agreement``, ``(n,)`` the samples' agreement: the check with samples, ``answer_samples``).

    For each group: the combiner is fitted on out-of-group signals of the *other* groups (their read-outs
    fitted without this group either), and the group is scored by a read-out fitted on all other groups —
    the way the shipped check is made (read-out on everything, combiner on out-of-group signals).

    Args:
        prompt / mean: ``(n, L, H)`` last-prompt and mean-answer rows; ``logprob``: ``(n,)`` mean token log-probs.
        groups: each item's group (e.g. its relation, for left-out domains); ``None``: ``folds`` random folds.
        l2: the read-out's ridge penalty (the shipped read-out's).

    Raises:
        ConfigError: fewer than three groups, or a training part lacks correct or incorrect answers.
    """
    correct = np.asarray(correct, bool)
    groups = np.random.default_rng(seed).permutation(len(correct)) % folds if groups is None else np.asarray(groups)
    out = _cross_fit(np.asarray(prompt), np.asarray(mean), logprob, correct, groups, l2, agreement)
    return out[0] if agreement is None else np.asarray(out[3])


def _cross_fit(prompt: np.ndarray, mean: np.ndarray, logprob: np.ndarray, correct: np.ndarray, groups: np.ndarray,
               l2: float, extra: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`cross_fitted_answer_check`'s confidences, the out-of-group ``(gate, answer)`` logits it scores, and,
    given ``extra`` ``(n,)`` (one more signal fitted on nothing, e.g. the samples' agreement), the confidences of
    the combiner that also reads it (else ``None``)."""
    if len(set(groups.tolist())) < 3:
        raise ConfigError(f"cross-fitting the answer check needs at least 3 groups (the combiner is fitted on "
                          f"out-of-group signals of the other groups); got {len(set(groups.tolist()))}: "
                          f"{sorted(set(groups.tolist()))[:5]}")
    lp = np.array([mean_logprob(float(v), 1) for v in logprob])
    outer = np.stack([*joint_lodo_logits(prompt, mean, correct, groups, l2), lp], axis=1)  # each group's signals
    more = None if extra is None else np.asarray(extra, np.float64)
    out, out_more = np.zeros(len(correct)), None if more is None else np.zeros(len(correct))
    for group in sorted(set(groups.tolist())):
        held, rest = groups == group, groups != group
        gate, answer = joint_lodo_logits(prompt[rest], mean[rest], correct[rest], groups[rest], l2)
        inner = np.stack([gate, answer, lp[rest]], axis=1)
        w, b, mu, sc = fit_logistic(inner, correct[rest], l2=COMBINER_L2)
        out[held] = sigmoid(((outer[held] - mu) / sc) @ w + b)
        if more is not None and out_more is not None:
            w, b, mu, sc = fit_logistic(np.column_stack([inner, more[rest]]), correct[rest], l2=COMBINER_L2)
            out_more[held] = sigmoid(((np.column_stack([outer[held], more[held]]) - mu) / sc) @ w + b)
    return out, outer[:, 0], outer[:, 1], out_more


def _combiner(names: tuple[str, ...], signals: np.ndarray, correct: np.ndarray, calibration: np.ndarray, alpha: float,
              delta: float) -> Combiner:
    """The combiner over ``signals`` fitted on every answer, certified on the out-of-domain ``calibration``
    confidences."""
    w, b, means, scales = fit_logistic(signals, correct, l2=COMBINER_L2)
    return Combiner(signals=names, weights=tuple(map(float, w)), bias=float(b), means=tuple(map(float, means)),
                    scales=tuple(map(float, scales)),
                    selective=SelectiveCalibration.fit(calibration, correct, alpha, delta, label="correct"))


@dataclass(frozen=True)
class SamplingSettings:
    """How the samples of the sampled combiner were drawn (what serving must draw again)."""

    samples: int
    temperature: float
    max_tokens: int


def _quality(signal: np.ndarray, correct: np.ndarray, domains: np.ndarray) -> dict[str, float]:
    per = np.array(list(domain_auroc(signal, correct, domains).values()))
    return {"lodo_median": float(np.median(per)), "lodo_worst": float(per.min()),
            "lodo_below_chance": float((per < 0.5).sum()), "lodo_domains": float(len(per))}


def fit_answer_gate(answers: Sequence[OnPolicyAnswer], layer_index: Sequence[int], layers: tuple[int, ...],
                    spec: ModelSpec, model_id: str, alpha: float = 0.2, gate_alpha: float = 0.3, delta: float = 0.1,
                    l2: float = GATE_L2, dtype: Dtype = "float32", agreement: np.ndarray | None = None,
                    sampling: SamplingSettings | None = None) -> tuple[Probe, dict[str, Any]]:
    """Fit, measure and certify the on-policy gate with its answer combiner (see the module).

    Args:
        answers: graded greedy answers with their rows (every stored layer).
        layer_index: which stored layers the gate reads (those of the probe it rides along with).
        layers: the model layers at ``layer_index``.
        alpha: the answer combiner's stored alpha (requests may ask for another).
        gate_alpha: the pre-generation gate's stored alpha.
        agreement / sampling: each answer's samples' agreement (:func:`guard.agreement.agreement`) and how the
            samples were drawn: the gate then also carries the sampled combiner (:class:`AnswerSampling`), fitted
            and certified the same way with ``agreement`` as a fourth signal.

    Returns:
        The gate artefact and a report: leave-one-domain-out quality of ``gate``, ``answer``, ``combined`` and the
        ``logprob`` baseline, and certified selective answering of ``combined`` and ``logprob`` at ``alpha``.

    Raises:
        ConfigError: fewer than three domains, or a domain's training part lacks one of the grades.
    """
    if len(layer_index) != len(layers):
        raise ConfigError(f"layer_index {list(layer_index)} and layers {list(layers)} must be the same length")
    correct = np.array([grade(a.text, a.item.answers, a.item.distractors, a.item.question) for a in answers])
    domains = np.array([a.item.domain for a in answers])
    if len(set(domains.tolist())) < 3:
        raise ConfigError(f"the on-policy gate is certified leave-one-domain-out: it needs answers on at least 3 "
                          f"relations; got {sorted(set(domains.tolist()))}")
    prompt = reading_features(answers, "prompt")[0][:, list(layer_index)]
    mean = reading_features(answers, "mean")[0][:, list(layer_index)]
    mean_lp = np.array([mean_logprob(float(a.token_logprobs.sum()), a.token_logprobs.size) for a in answers])
    if (agreement is None) != (sampling is None) or (agreement is not None and len(agreement) != len(answers)):
        raise ConfigError("the sampled combiner needs both each answer's agreement (one per answer) and the sampling "
                          "settings, or neither")
    combined, gate, answer, sampled = _cross_fit(prompt, mean, mean_lp, correct, domains, l2, agreement)
    signals = np.stack([gate, answer, mean_lp], axis=1)
    logprob = np.exp(mean_lp)
    combiner = _combiner(ANSWER_SIGNALS, signals, correct, combined, alpha, delta)
    answer_sampling = None
    scored = [("gate", gate), ("answer", answer), ("combined", combined), ("logprob", logprob)]
    if agreement is not None and sampling is not None and sampled is not None:
        answer_sampling = AnswerSampling(samples=sampling.samples, temperature=sampling.temperature,
                                         max_tokens=sampling.max_tokens, combiner=_combiner(
                                             SAMPLED_SIGNALS, np.column_stack([signals, agreement]), correct, sampled,
                                             alpha, delta))
        scored += [("agreement", np.asarray(agreement, np.float64)), ("sampled", sampled)]
    quality = {name: _quality(v, correct, domains) for name, v in scored}
    templates, questions = [a.item.template for a in answers], [a.item.question for a in answers]
    new_facts, _ = joint_lodo_logits(prompt, mean, correct, fact_folds([a.item.fact for a in answers]), l2)
    report = {"n": len(answers), "accuracy": float(correct.mean()), "alpha": alpha, "delta": delta,
              "signals": quality,
              "gate_scope": scope_report(templates, questions, domains, gate, new_facts, correct),
              "selective": {name: {k: v for k, v in selective_report(c, correct, alpha, delta).items() if k != "curve"}
                            for name, c in scored if name in ("combined", "logprob", "sampled")}}
    tensors = fit_layers(np.concatenate([prompt, mean]).astype(np.float64), np.concatenate([correct, correct]), l2)
    manifest = ProbeManifest(
        kind=GATE_KIND, labels=GATE_LABELS, layers=layers, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
        model_fingerprint=spec.fingerprint, model_id=model_id,
        description=f"on-policy gate: predicts whether the model's own answer is correct, from the question's last "
                    f"prompt token and from the answer's tokens (layers {list(layers)}, averaged); trained on "
                    f"{len(answers)} graded closed-book answers; certified leave-one-domain-out",
        metrics={"n_train": float(len(answers)), "accuracy_of_answers": float(correct.mean()),
                 **{f"{name}_{k}": v for name, s in quality.items() for k, v in s.items()}},
        selective=SelectiveCalibration.fit(sigmoid(gate), correct, gate_alpha, delta, label="correct"),
        answer_combiner=combiner, answer_sampling=answer_sampling, dtype=dtype,
        question_scope=scope_of(templates, questions, list(domains)))
    return Probe(manifest, *tensors), report
