"""Selective answering on the whole answer: answer, or abstain once the answer is complete.

The on-policy gate (``calibration.answer_gate``) is one linear read-out scored on every row like the
pre-generation gate (its columns ride along with the probe's, :mod:`guard.heads`), trained on the model's
own graded answers at two places: the prompt's last token (the question, before anything is generated)
and the answer's tokens. Its manifest carries an answer :class:`~guard.combiner.Combiner` over three signals:

* ``gate`` — the read-out's logit ``z(correct) - z(incorrect)`` (layers averaged) on the prompt's last row;
* ``answer`` — the mean of that logit over the answer's scored rows (the answer's last token is never fed
  back, so it has none; an answer without a scored row takes the ``gate`` value, as in calibration);
* ``logprob`` — the mean log-probability of the answer's generated tokens (floored at :data:`LOGPROB_FLOOR`).

A request that asks for ``answer_samples`` also has the model answer again: the gate's
:class:`~guard.combiner.AnswerSampling` says how many answers to draw and how, and its second combiner adds
``agreement``, the share of them that say what the answer says (:mod:`guard.agreement`) — the strongest
signal measured on questions of relations nothing was fitted on (calibration/results/README.md).

:class:`AnswerTally` collects them for one answer (one float per scored answer row; rows past the answer's
fed-back tokens — an engine step that ran before a stop string was seen — are left out when deciding);
:class:`AnswerRule` turns a tally into ``p(correct)`` and compares it with the threshold that
Learn-then-Test certifies at the request's ``alpha`` from the stored calibration split. Unlike the
pre-generation gate, the answer check follows Learn-then-Test to the letter: where no threshold is
certified at ``alpha``, every answer is abstained on (answering would promise a risk the calibration
cannot back); the decision says so, and a larger ``alpha`` is the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from guard.errors import ArtifactError, NonFiniteScores
from guard.probe import Probe
from guard.selective import CertifiedDecision, ThresholdCache

__all__ = ["ANSWER_SIGNALS", "SAMPLED_SIGNALS", "LOGPROB_FLOOR", "AnswerDecision", "AnswerRule", "AnswerTally",
           "mean_logprob"]

#: the signals an answer combiner is calibrated with, in this order
ANSWER_SIGNALS = ("gate", "answer", "logprob")
#: the signals of the combiner of answers checked with samples (``answer_samples``), in this order
SAMPLED_SIGNALS = (*ANSWER_SIGNALS, "agreement")
#: the ``logprob`` signal of an answer without tokens (or with a log-probability of minus infinity)
LOGPROB_FLOOR = -30.0


def mean_logprob(total: float, count: int) -> float:
    """The ``logprob`` signal: the mean of ``count`` token log-probabilities summing to ``total``, floored."""
    return max(LOGPROB_FLOOR, total / count) if count and math.isfinite(total) else LOGPROB_FLOOR


class AnswerDecision(CertifiedDecision):
    """What the answer check said about one complete answer (``threshold`` ``None``: nothing certified at
    ``alpha``, so the answer is abstained on)."""

    #: the signal values the combiner read (``gate``, ``answer``, ``logprob``) and how many answer rows were scored
    gate_logit: float
    answer_logit: float
    logprob: float
    answer_rows: int
    #: the share of the samples that say what the answer says, and how many were drawn (``None`` / 0: no samples)
    agreement: float | None = None
    samples: int = 0

    def reason(self) -> str:
        """Why the answer was abstained on, in words (``""`` when it was answered)."""
        if self.answer:
            return ""
        if not self.certified:
            return (f"the answer check certifies no threshold at answer_alpha {self.alpha}: abstaining on every "
                    "answer (ask for a larger answer_alpha)")
        drawn = (f" ({self.agreement:.0%} of {self.samples} samples say the same)" if self.agreement is not None
                 else "")
        return (f"the answer check gives p(correct)={self.p_correct:.3f}{drawn} < certified threshold "
                f"{self.threshold} at answer_alpha {self.alpha}")


class AnswerTally:
    """One answer's signals as they arrive: the prompt row's logit, each answer row's logit in position order, and
    a running sum over the generated tokens' log-probabilities (``logprobs_missing``: some tokens came without
    one), and, for ``answer_samples``, the samples' agreement with the answer and how many there were."""

    __slots__ = ("gate_logit", "logits", "logprob_total", "logprob_count", "logprobs_missing", "agreement", "samples")

    def __init__(self) -> None:
        self.gate_logit: float | None = None
        self.logits: list[float] = []
        self.logprob_total = 0.0
        self.logprob_count = 0
        self.logprobs_missing = False
        self.agreement: float | None = None
        self.samples = 0

    def add_logprobs(self, values: Sequence[float] | None, tokens: int) -> None:
        """The log-probabilities of ``tokens`` more generated tokens (``None``: the upstream sent none)."""
        if values is None or len(values) < tokens:
            self.logprobs_missing = self.logprobs_missing or tokens > 0
            return
        self.logprob_total += float(sum(values))
        self.logprob_count += len(values)


class AnswerRule:
    """Reads the on-policy gate's columns from fused score rows and decides on complete answers.

    Args:
        gate: the on-policy gate artefact (labels ``("incorrect", "correct")``, an answer combiner).
        offset: index of the gate's first column in a fused row.

    Raises:
        ArtifactError: the artefact carries no answer combiner, or one over other signals.
    """

    def __init__(self, gate: Probe, offset: int) -> None:
        combiner = gate.manifest.answer_combiner
        if combiner is None:
            raise ArtifactError(f"gate {gate.manifest.kind!r} carries no answer combiner; calibrate one with "
                                "`guard calibrate-answers --ship PATH` (on the model's own graded answers)")
        if "correct" not in gate.labels or "incorrect" not in gate.labels:
            raise ArtifactError(f"the answer check reads a gate's 'incorrect' and 'correct' columns; this gate's "
                                f"labels are {list(gate.labels)}: re-run `guard calibrate-answers --ship PATH`")
        if tuple(combiner.signals) != ANSWER_SIGNALS:
            raise ArtifactError(f"the answer combiner reads signals {list(combiner.signals)}; this guard computes "
                                f"{list(ANSWER_SIGNALS)}: re-run `guard calibrate-answers --ship PATH`")
        sampling = gate.manifest.answer_sampling
        if sampling is not None and tuple(sampling.combiner.signals) != SAMPLED_SIGNALS:
            raise ArtifactError(f"the sampled answer combiner reads signals {list(sampling.combiner.signals)}; this "
                                f"guard computes {list(SAMPLED_SIGNALS)}: re-run `guard calibrate-answers --ship PATH`")
        self.gate, self.combiner, self.sampling = gate, combiner, sampling
        self._sampled = None if sampling is None else ThresholdCache(sampling.combiner.selective)
        self._yes = offset + list(gate.labels).index("correct")
        self._no = offset + list(gate.labels).index("incorrect")
        self._thresholds = ThresholdCache(combiner.selective)

    @property
    def alpha(self) -> float:
        """The alpha the combiner was calibrated at (the default of requests that set none)."""
        return self.combiner.selective.alpha

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """Per-row logits ``(n,)`` of fused rows ``(n, L, columns)`` (layers averaged).

        Raises:
            NonFiniteScores: a row holds NaN or infinite values in the gate's columns.
        """
        rows = np.asarray(rows)
        z = rows[:, :, self._yes].mean(axis=1) - rows[:, :, self._no].mean(axis=1)
        if not np.isfinite(z).all():
            bad = np.flatnonzero(~np.isfinite(z)).tolist()
            raise NonFiniteScores(f"the answer check's columns hold NaN or infinite values in {len(bad)} of {len(z)} "
                                  f"rows (row indices {bad[:8]})")
        out: np.ndarray = z.astype(np.float64)
        return out

    def add_prompt_row(self, tally: AnswerTally, row: np.ndarray) -> None:
        """The prompt's last row ``(L, columns)``: the ``gate`` signal."""
        tally.gate_logit = float(self.logits(np.asarray(row)[None])[0])

    def add_answer_rows(self, tally: AnswerTally, rows: np.ndarray) -> None:
        """The next scored answer rows ``(n, L, columns)``, in position order from the answer's first token."""
        if len(rows):
            tally.logits.extend(self.logits(rows).tolist())

    def threshold(self, alpha: float | None = None, sampled: bool = False) -> float:
        """Certified threshold at ``alpha`` (``inf`` when none) of the plain or (``sampled``) the sampled combiner;
        cached per alpha.

        Raises:
            ArtifactError: ``sampled`` but the gate carries no sampled combiner.
        """
        if not sampled:
            return self._thresholds.at(alpha)
        if self._sampled is None:
            raise ArtifactError(f"gate {self.gate.manifest.kind!r} carries no sampled answer combiner; re-run "
                                "`guard calibrate-answers --ship PATH` (it calibrates one from the samples)")
        return self._sampled.at(alpha)

    def decide(self, tally: AnswerTally, alpha: float | None = None,
               tokens: int | None = None) -> AnswerDecision | None:
        """The decision on a complete answer of ``tokens`` generated tokens (its first ``tokens - 1`` rows are read;
        ``None``: every row in the tally); ``None`` when the prompt's row or some token's log-probability never
        came (the check cannot judge). With the samples' ``agreement`` in the tally, the sampled combiner decides.

        Raises:
            ArtifactError: the tally holds an agreement but the gate carries no sampled combiner.
        """
        if tally.gate_logit is None or tally.logprobs_missing or (tokens and tally.logprob_count < tokens):
            return None
        logits = tally.logits if tokens is None else tally.logits[: max(0, tokens - 1)]
        rows = len(logits)
        answer = sum(logits) / rows if rows else tally.gate_logit
        logprob = mean_logprob(tally.logprob_total, tally.logprob_count)
        values = {"gate": tally.gate_logit, "answer": answer, "logprob": logprob}
        sampled = tally.agreement is not None
        lam = float(self.threshold(alpha, sampled))
        if sampled and self.sampling is not None:
            p = self.sampling.combiner.confidence(values | {"agreement": float(tally.agreement or 0.0)})
        else:
            p = self.combiner.confidence(values)
        certified = math.isfinite(lam)
        return AnswerDecision.model_construct(
            p_correct=round(p, 6), alpha=float(self.alpha if alpha is None else alpha),
            threshold=lam if certified else None, certified=certified, answer=bool(certified and p >= lam),
            gate_logit=round(tally.gate_logit, 6), answer_logit=round(answer, 6), logprob=round(logprob, 6),
            answer_rows=rows, agreement=None if tally.agreement is None else round(tally.agreement, 6),
            samples=tally.samples)
