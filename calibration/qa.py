"""Closed-book question answering through the engine: prompts, answers, grading, and what the probe saw.

Each question is put to the model through its chat template and answered greedily. What comes back
per item is everything the selective-answering evaluation and the pre-generation gate need:

* ``correct`` — the answer graded against the accepted answers (:func:`grade`);
* ``mean_logprob`` — the mean log-probability of the generated tokens (the standard baseline);
* ``answer_scores`` — the probe's per-token scores ``(m, L, k)`` of the answer's scored tokens
  (from the probe in the engine, or from :meth:`guard.probe.Probe.score` on captured rows);
* ``prompt_rows`` — the residual stream ``(L, H)`` of the question's last prompt token, the
  state the model is in *before* it answers (features of the pre-generation gate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.engine_port import EngineCompletion, GuardEngine
from calibration.grading import grade, normalise
from calibration.progress import Progress
from calibration.statements import QAItem
from guard.errors import ConfigError
from guard.probe import Probe

__all__ = ["AnsweredItem", "normalise", "grade", "qa_prompt", "last_prompt_index", "answer_questions",
           "answer_confidence"]

#: appended to every question so that answers are one short, gradable sentence
INSTRUCTION = "Answer in one short sentence."


@dataclass(frozen=True)
class AnsweredItem:
    """One question, the model's answer, its grade, and the signals scored on it."""

    item: QAItem
    answer: str
    correct: bool
    mean_logprob: float
    answer_scores: np.ndarray | None  # (m, L, k) probe scores of the answer's scored tokens
    prompt_rows: np.ndarray | None  # (L, H) residual stream of the last prompt token
    #: (L, H) mean residual stream over the answer's fed-back tokens (the prompt's row for a one-token answer); kept
    #: with ``prompt_rows``
    answer_rows: np.ndarray | None = None


def qa_prompt(tokenizer: Any, question: str) -> str:
    """The question in the model's chat template, ready for generation."""
    messages = [{"role": "user", "content": f"{question} {INSTRUCTION}"}]
    prompt: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def _mean_logprob(completion: EngineCompletion) -> float:
    """Mean log-probability of the generated tokens (``-inf`` for an empty answer)."""
    if not completion.token_logprobs:
        return float("-inf")
    return float(np.mean(completion.token_logprobs))


def last_prompt_index(completion: EngineCompletion) -> int:
    """Index, among the completion's scored positions, of the question's last prompt token.

    Raises:
        ConfigError: the engine delivered no scores, or none for that token (prefix caching skips it).
    """
    if completion.scores is None:
        raise ConfigError("the engine delivered no scores for a guarded QA prompt; is the capture installed?")
    where = np.flatnonzero(completion.scores.positions == len(completion.prompt_token_ids) - 1)
    if not len(where):
        raise ConfigError("the engine delivered no row for the last prompt token; is prefix caching on?")
    return int(where[0])


def answer_questions(llm: GuardEngine, items: Sequence[QAItem], max_tokens: int = 32, batch: int = 64,
                     prompt_rows: bool = False, probe: Probe | None = None, layer_index: Sequence[int] | None = None
                     ) -> list[AnsweredItem]:
    """Answer each question with a ``GuardedLLM`` (greedy) and grade it.

    Args:
        prompt_rows: also keep the last prompt token's residual stream and the answer's mean one (needs
            ``capture_hidden``).
        probe: score the answers with this probe on captured rows instead of the engine's own probe
            (calibration, where the engine captures a layer sweep without a probe).
        layer_index: which of the engine's capture layers ``probe`` reads (with ``probe``).

    Raises:
        ConfigError: neither the engine nor ``probe`` can score answers, ``probe`` has no ``layer_index``,
            or the engine delivered no scores (or no hidden rows where they are needed).
    """
    from vllm import SamplingParams

    if probe is not None and layer_index is None:
        raise ConfigError("scoring answers with a probe on captured rows needs layer_index (its layers in the capture)")
    need_hidden = prompt_rows or probe is not None
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=0)
    out: list[AnsweredItem] = []
    with Progress(len(items), "answering questions", unit="questions") as bar:
        for i in range(0, len(items), batch):
            chunk = list(items[i : i + batch])
            prompts = [qa_prompt(llm.tokenizer, it.question) for it in chunk]
            out += [_answered(llm, it, completion, need_hidden, prompt_rows, probe, layer_index)
                    for it, completion in zip(chunk, llm.generate(prompts, params, hidden=need_hidden))]
            bar.update(len(chunk))
    return out


def _answered(llm: GuardEngine, it: QAItem, completion: EngineCompletion, need_hidden: bool, prompt_rows: bool,
              probe: Probe | None, layer_index: Sequence[int] | None) -> AnsweredItem:
    """One completion graded, with the signals :func:`answer_questions` was asked for."""
    n = len(completion.prompt_token_ids)
    if completion.scores is None:
        raise ConfigError("the engine delivered no scores for a guarded QA prompt; is the capture installed?")
    pos = completion.scores.positions
    answer_part = pos >= n  # generated tokens that were fed back (the last one never is)
    hidden = completion.scores.hidden
    if need_hidden and hidden is None:
        raise ConfigError("the engine delivered no hidden rows; start it with capture_hidden=True")
    if probe is not None and layer_index is not None and hidden is not None:
        rows = hidden[answer_part][:, list(layer_index)]
        scores = probe.score(rows) if len(rows) else np.zeros((0, len(probe.layers), len(probe.labels)))
    elif llm.probe is not None:
        scores = completion.scores.scores[answer_part]
    else:
        scores = None
    last_prompt = answer_mean = None
    if prompt_rows and hidden is not None:
        keep = list(layer_index) if layer_index is not None else slice(None)
        last_prompt = hidden[last_prompt_index(completion)][keep].astype(np.float32)
        fed = hidden[answer_part].astype(np.float32)
        answer_mean = fed.mean(axis=0)[keep] if len(fed) else last_prompt
    correct = grade(completion.text, it.answers, it.distractors, it.question)
    return AnsweredItem(it, completion.text, correct, _mean_logprob(completion),
                        None if scores is None else np.asarray(scores, np.float32), last_prompt, answer_mean)


def answer_confidence(probe: Probe, answered: Sequence[AnsweredItem], pooling: str = "manifest") -> np.ndarray:
    """The probe's confidence that each answer is true: ``p(true)`` of the pooled answer scores.

    Pooling ``"manifest"`` follows the probe (its last scored token, or the maximum over tokens);
    ``"mean"`` averages ``p(true)`` over the answer's scored tokens. An answer without a scored token
    (a one-token answer) gets confidence 0: it is never answered selectively.
    """
    label = list(probe.labels).index("true")
    out = np.zeros(len(answered))
    for i, a in enumerate(answered):
        if a.answer_scores is None:
            raise ConfigError("answers were not scored; answer them with an engine probe or pass probe=")
        if not len(a.answer_scores):
            continue
        if pooling == "mean":
            out[i] = probe.probabilities(a.answer_scores)[:, label].mean()
        elif probe.manifest.pooling == "max":
            out[i] = probe.probabilities(a.answer_scores.max(axis=0, keepdims=True))[0, label]
        else:
            out[i] = probe.probabilities(a.answer_scores[-1:])[0, label]
    return out
