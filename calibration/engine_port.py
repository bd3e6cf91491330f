"""What calibration needs of a guarded engine: the :class:`GuardEngine` seam.

Calibration drives a running engine (``adapters.vllm.engine.GuardedLLM`` in practice) to collect
activations, score statements and answer questions; typing against these Protocols keeps
calibration free of the adapter's concrete class, and lets tests pass a local stand-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from guard.capture_spec import CaptureSpec
from guard.probe import Probe
from guard.scores import TokenScores

__all__ = ["EngineCompletion", "GuardEngine"]


class EngineCompletion(Protocol):
    """One finished request as the engine reports it (``adapters.vllm.engine.GuardedCompletion``)."""

    @property
    def prompt_token_ids(self) -> list[int]:
        """The prompt's token ids."""

    @property
    def token_ids(self) -> list[int]:
        """The generated token ids."""

    @property
    def text(self) -> str:
        """The generated text."""

    @property
    def scores(self) -> TokenScores | None:
        """Per-token scores (and hidden rows when asked for); ``None`` when the request was not guarded."""

    @property
    def token_logprobs(self) -> list[float] | None:
        """Log-probability of each generated token, when the sampling parameters asked for ``logprobs``."""

    @property
    def shift_scores(self) -> np.ndarray | None:
        """The probe's shift columns ``(n, L, D)`` at the scored positions (probes with a shift head)."""


class GuardEngine(Protocol):
    """A guarded engine, as calibration uses it.

    Example:
        >>> def layers_read(engine: GuardEngine) -> tuple[int, ...]:
        ...     return engine.spec.layers
    """

    @property
    def spec(self) -> CaptureSpec:
        """The capture settings the engine started with (``spec.layers``: the layers it reads)."""

    @property
    def model_path(self) -> str:
        """The model folder the engine serves."""

    @property
    def probe(self) -> Probe | None:
        """The probe scored inside the engine, or ``None`` when it captures only."""

    @property
    def tokenizer(self) -> Any:  # a Hugging Face tokenizer (no stubs)
        """The model's tokenizer (chat templates for QA prompts)."""

    @property
    def llm(self) -> Any:  # vllm.LLM (no stubs)
        """The wrapped ``vllm.LLM``, for what the guarded path does not report (prompt log-probabilities)."""

    def generate(self, prompts: Sequence[str | list[int]], params: Any = None, *,
                 hidden: bool = False) -> Sequence[EngineCompletion]:
        """Generate for each prompt in one batch with ``vllm.SamplingParams`` ``params``.

        Args:
            hidden: also deliver each scored token's residual-stream rows (``scores.hidden``).
        """
