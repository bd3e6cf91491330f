"""One calibrated answer confidence from several signals: a small logistic combiner with a certificate.

The signals of an answer — the on-policy answer probe's logit, the pre-generation gate's logit, the
answer's mean token log-probability, the probe's shift score — rank answers differently well on different
questions. :class:`Combiner` is a logistic read-out over their standardised values (plain data: names,
weights, bias, means, scales), and its :class:`guard.selective.SelectiveCalibration` stores the
calibration split of the combined confidence, so a threshold is certified by Learn-then-Test at any
requested ``alpha`` (:meth:`Combiner.threshold_at`). A signal missing at serving time is refused: a
combination is only certified for the signals it was calibrated with.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from guard.errors import ArtifactError
from guard.selective import SelectiveCalibration

__all__ = ["AnswerSampling", "Combiner"]


class Combiner(BaseModel):
    """``p(correct) = sigmoid(bias + sum_i weight_i * (signal_i - mean_i) / scale_i)``, with its certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signals: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    means: tuple[float, ...]
    scales: tuple[float, ...]
    selective: SelectiveCalibration

    @model_validator(mode="after")
    def _consistent(self) -> Combiner:
        n = len(self.signals)
        if not n or {len(self.weights), len(self.means), len(self.scales)} != {n}:
            raise ValueError(f"a combiner needs one weight, mean and scale per signal; got {n} signals, "
                             f"{len(self.weights)} weights, {len(self.means)} means, {len(self.scales)} scales")
        if any(not s > 0 for s in self.scales) or not all(map(math.isfinite, (*self.weights, *self.means,
                                                                               self.bias))):
            raise ValueError("a combiner's scales must be positive and its weights, means and bias finite")
        return self

    def confidence(self, values: Mapping[str, float]) -> float:
        """``p(correct)`` of one answer from its signal values.

        Raises:
            ArtifactError: a signal the combiner was calibrated with is missing or not finite.
        """
        missing = [s for s in self.signals if s not in values or not math.isfinite(values[s])]
        if missing:
            raise ArtifactError(f"the answer combiner needs signals {list(self.signals)}; {missing} are missing or "
                                f"not finite in {dict(values)}")
        z = self.bias + sum(w * (values[s] - m) / c for s, w, m, c in
                            zip(self.signals, self.weights, self.means, self.scales))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def confidences(self, columns: np.ndarray) -> np.ndarray:
        """``p(correct)`` of many answers: ``columns (n, len(signals))`` in the order of :attr:`signals`."""
        columns = np.asarray(columns, np.float64)
        if columns.ndim != 2 or columns.shape[1] != len(self.signals):
            raise ArtifactError(f"signal columns {columns.shape} do not match the combiner's signals "
                                f"{list(self.signals)}")
        z = self.bias + ((columns - np.array(self.means)) / np.array(self.scales)) @ np.array(self.weights)
        out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
        return out

    def threshold_at(self, alpha: float | None = None) -> float:
        """The certified confidence threshold at ``alpha`` (``inf``: nothing certified; always abstain)."""
        return self.selective.threshold_at(alpha)


class AnswerSampling(BaseModel):
    """Asking the model again: how many answers to draw, how, and the combiner calibrated with their agreement.

    The combiner reads the answer check's signals plus ``agreement`` (the share of ``samples`` answers drawn at
    ``temperature``, at most ``max_tokens`` tokens each, that say what the answer says: :mod:`guard.agreement`).
    Its certificate holds for answers sampled this way only, so serving draws exactly these, seeded by the
    conversation (:meth:`seed_for`): the same question asked twice draws the same samples and gets the same verdict.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int
    temperature: float
    max_tokens: int
    combiner: Combiner

    @model_validator(mode="after")
    def _sensible(self) -> AnswerSampling:
        if self.samples < 1 or self.max_tokens < 1 or not 0 < self.temperature <= 2:
            raise ValueError(f"answer sampling needs samples >= 1, max_tokens >= 1 and a temperature in (0, 2]; got "
                             f"samples={self.samples}, max_tokens={self.max_tokens}, temperature={self.temperature}")
        if "agreement" not in self.combiner.signals:
            raise ValueError(f"the sampled answer combiner must read 'agreement'; it reads "
                             f"{list(self.combiner.signals)}")
        return self

    def seed_for(self, conversation: str) -> int:
        """The samples' seed for one ``conversation`` (its prompt, or its messages as JSON): stable across runs and
        processes, so a verdict can be reproduced and audited; different conversations draw independently. Sample
        ``i`` uses ``seed + i`` (as an OpenAI server does for ``n`` answers with one seed)."""
        return int.from_bytes(hashlib.sha256(conversation.encode("utf-8")).digest()[:4], "big") >> 1
