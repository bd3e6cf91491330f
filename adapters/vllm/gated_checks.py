"""The offline engine's checks around a guarded answer: the pre-generation gate on the prompt's last row and the
answer check on the whole answer (with its samples' agreement), read from a :class:`GuardedCompletion`'s gate columns
as ``guard serve`` reads them from the score channel. Used by :func:`adapters.vllm.gated.generate_guarded`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from adapters.vllm.engine import GuardedCompletion, GuardedLLM
from guard.agreement import agreement
from guard.answer_check import AnswerDecision, AnswerRule, AnswerTally
from guard.errors import ConfigError
from guard.gating import GateDecision, GateRule
from guard.options import GuardOptions

__all__ = ["answer_rule", "answers_and_samples", "check_answer", "gate_decision"]


def _prompt_row(completion: GuardedCompletion) -> int | None:
    """Index of the prompt's last token among the completion's scored rows (``None``: no scores, or no row for it,
    e.g. with prefix caching)."""
    if completion.gate_scores is None or completion.scores is None:
        return None
    where = np.flatnonzero(completion.scores.positions == len(completion.prompt_token_ids) - 1)
    return int(where[0]) if len(where) else None


def answer_rule(llm: GuardedLLM, options: GuardOptions) -> AnswerRule | None:
    """The answer check the options ask for (``None``: none, or mode ``pass``).

    Raises:
        ConfigError: ``answer_check`` without an on-policy gate that carries an answer combiner.
    """
    if not options.answer_check or options.mode == "pass":
        return None
    if llm.gate is None or llm.gate.manifest.answer_combiner is None:
        raise ConfigError("options.answer_check needs an engine started with an on-policy gate that carries an answer "
                          "combiner (GuardConfig(gate=PATH), PATH made by `guard calibrate-answers --ship PATH`); "
                          "or set GuardOptions(answer_check=False)")
    return AnswerRule(llm.gate, offset=0)


def answers_and_samples(llm: GuardedLLM, rule: AnswerRule | None, options: GuardOptions,
                         prompts: Sequence[str | list[int]], params: Any
                         ) -> tuple[list[GuardedCompletion], list[list[str]] | None]:
    """The guarded answers and, for ``options.answer_samples``, each prompt answered again (unguarded, as the gate's
    sampling says) in the same engine batch.

    Raises:
        ConfigError: ``answer_samples`` with a gate calibrated without samples.
    """
    if rule is None or not options.answer_samples:
        return llm.generate(list(prompts), params), None
    if rule.sampling is None:
        raise ConfigError("options.answer_samples needs a gate calibrated with samples (an answer sampling in its "
                          "manifest: `guard calibrate-answers --ship PATH`); or set GuardOptions(answer_samples=False)")
    from vllm import SamplingParams

    how, n = rule.sampling, len(prompts)
    extra = [p for p in prompts for _ in range(how.samples)]
    seeds = [how.seed_for(p if isinstance(p, str) else json.dumps(p)) for p in prompts]  # same prompt, same samples
    again = [SamplingParams(temperature=how.temperature, max_tokens=how.max_tokens, seed=seed + i)
             for seed in seeds for i in range(how.samples)]
    done = llm.generate([*prompts, *extra], [params] * n + again, guard=[True] * n + [False] * len(extra))
    drawn = [c.text for c in done[n:]]
    return done[:n], [drawn[i : i + how.samples] for i in range(0, len(drawn), how.samples)]


def check_answer(rule: AnswerRule | None, options: GuardOptions, completion: GuardedCompletion,
                  samples: list[str] | None = None, question: str = "") -> AnswerDecision | None:
    """The answer check's decision from the completion's gate columns (``None``: no check, or no prompt row);
    with ``samples``, their agreement with the answer joins it."""
    row = _prompt_row(completion)
    if rule is None or row is None or completion.gate_scores is None or completion.scores is None:
        return None
    n = len(completion.prompt_token_ids)
    positions, tally = completion.scores.positions, AnswerTally()
    rule.add_prompt_row(tally, completion.gate_scores[row])
    tokens = len(completion.token_ids)
    rule.add_answer_rows(tally, completion.gate_scores[(positions >= n) & (positions < n + tokens - 1)])
    tally.add_logprobs(completion.token_logprobs, tokens)
    if samples is not None:
        tally.agreement, tally.samples = agreement(completion.text, samples, question), len(samples)
    return rule.decide(tally, options.answer_alpha, tokens=tokens)


def gate_decision(llm: GuardedLLM, options: GuardOptions, completion: GuardedCompletion,
          question: str) -> GateDecision | None:
    """The pre-generation gate's decision on the completion's prompt row (``None``: no gate, gate off, mode ``pass``,
    or no prompt row)."""
    row = _prompt_row(completion)
    if llm.gate is None or not options.gate or options.mode == "pass" or row is None or completion.gate_scores is None:
        return None  # without the prompt's last row (prefix caching) the gate stays undecided
    return GateRule(llm.gate, offset=0).decide(completion.gate_scores[row], options.gate_alpha, question)
