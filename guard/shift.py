"""Shift: whether a token's text is like the probe's calibration data, and when it is not, an ``uncertain`` verdict.

A probe is right on text like the text it was fitted and calibrated on; on a domain it never saw it can be
confidently wrong. The shift head is a **domain classifier** over the calibration domains (capitals,
arithmetic, authors, ...) that rides in the probe's matmul:

* ``z_l = (h_l - mean[l]) / scale[l]`` are the probe's standardised rows at its layers;
* the probe stores one logistic read-out per calibration domain (``shift_weight (L, D, H)``,
  ``shift_bias (L, D)``); the engine's ``(L, D)`` shift columns, averaged over the layers and put through a
  softmax, say how surely the text belongs to each known domain;
* ``shift = 1 - max_domain p(domain)``: near 0 on text of a familiar kind, large when no domain claims it.

Left-out-domain validation chose it: a domain classifier's confidence separates statements of a domain it
never saw from familiar ones with AUROC 0.98 (median; 0.78 to 0.99 over ten left-out relations), where a
whitened distance to the training features flagged 1 % of an unseen domain's statements against 10 % of
familiar ones, and the disagreement of probes trained on different domains 5 % against 9 %
(``calibration/results/README.md``).

:class:`ShiftCalibration` stores the shift of every calibration-split statement. A token's **typicality** is
the conformal p-value ``(1 + #{calibration shifts >= shift}) / (n + 1)``; below ``beta`` the token is
*shifted*, and a sentence whose pooled row is shifted gets every label in its prediction set: its verdict is
``uncertain`` (the guard says it cannot tell). ``guard calibrate`` chooses ``beta`` on left-out domains; on
text exchangeable with the calibration split (familiar domains *and* wordings) the share it costs is about
``beta``, and more on wordings the calibration never saw.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from guard.probabilities import row_probabilities, softmax

__all__ = ["ShiftCalibration", "shift_of_columns", "shift_of_rows"]


class ShiftCalibration(BaseModel):
    """The calibration split's shift scores and the typicality below which a verdict is ``uncertain``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the calibration domains, in the order of the probe's ``shift_weight`` rows
    domains: tuple[str, ...] = Field(min_length=2)
    #: a token whose typicality p-value is below ``beta`` is shifted (0 turns the rule off)
    beta: float = Field(ge=0.0, lt=1.0)
    #: shift scores of the calibration split, sorted ascending, 6 decimals
    scores: list[float] = Field(min_length=1)
    #: how ``beta`` was chosen (for reports)
    description: str = ""

    @field_validator("scores")
    @classmethod
    def _sorted_finite(cls, scores: list[float]) -> list[float]:
        if not all(np.isfinite(scores)) or any(b < a for a, b in zip(scores, scores[1:])):
            raise ValueError("shift calibration scores must be finite and sorted ascending; re-run `guard calibrate`")
        return scores

    @property
    def dims(self) -> int:
        """Shift columns of a score row: one per calibration domain."""
        return len(self.domains)

    def typicality(self, shift: float) -> float:
        """Conformal p-value of ``shift`` among the calibration shifts (1: as typical as the most typical)."""
        above = len(self.scores) - bisect_left(self.scores, shift)
        return (1 + above) / (len(self.scores) + 1)

    def shifted(self, shift: float) -> bool:
        """Whether a token with this shift is too unlike the calibration data for a confident verdict."""
        return self.typicality(shift) < self.beta


def shift_of_columns(columns: np.ndarray) -> np.ndarray:
    """Shift scores from the engine's shift columns ``(..., L, D)``: the layers' mean, a softmax, ``1 - max``."""
    out: np.ndarray = 1.0 - softmax(np.asarray(columns, np.float64).mean(axis=-2)).max(axis=-1)
    return out


def shift_of_rows(rows: list[list[list[float]]]) -> list[float] | None:
    """:func:`shift_of_columns` of rows given as nested lists ``[row][layer][domain]`` (plain Python, a few rows).

    Returns:
        One shift per row, or ``None`` when a value is not finite.
    """
    probs = row_probabilities(rows)
    return None if probs is None else [1.0 - max(p) for p in probs]
