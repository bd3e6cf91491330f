"""Guarded generation for Python users: the guard's modes, probe-gated steering included, on a ``GuardedLLM``.

:func:`generate_guarded` runs the prompts as one batch, unsteered and scored; it feeds each
completion's tokens and probe scores into a :class:`~guard.policy.StreamGuard`, exactly as a
stream would arrive (token ``p``'s score comes with token ``p + 1``). In mode ``steer`` the answers
whose guard asked to steer — a flagged sentence, or the pre-generation gate saying no — are then
generated again in one steered batch:

* ``continue``: the prompt is the original prompt followed by the kept generated tokens (those
  before the flagged sentence's first token), so the steered tokens take positions from
  :attr:`~guard.verdicts.SteerPoint.position` on; ``max_tokens`` shrinks by what was kept.
* ``regenerate`` (and the gate): the same prompt; a fresh, steered answer.

Steering starts at the last prompt row, the row whose state produces the first steered token, and
lasts to the end. The guard is resumed and fed the steered tokens; a choice is steered at most once.
Modes ``pass``, ``flag`` and ``abstain`` need one pass (``abstain`` replaces the text by the message).
With ``options.answer_check`` the on-policy gate also judges each whole answer (:mod:`guard.answer_check`):
mode ``abstain`` sends it whole or abstains on it; the other modes report the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.vllm.engine import GuardedCompletion, GuardedLLM
from adapters.vllm.gated_checks import answer_rule, answers_and_samples, check_answer, gate_decision
from guard.answer_check import AnswerDecision
from guard.errors import ConfigError
from guard.gating import GateDecision
from guard.options import GuardOptions
from guard.policy import StreamGuard
from guard.steering import SteeringVector
from guard.verdicts import GuardEvent, GuardSummary, SteerPoint, VerdictRule

__all__ = ["GuardedAnswer", "generate_guarded", "steer_strength", "token_pieces", "feed_completion",
           "steered_request"]


@dataclass(frozen=True)
class GuardedAnswer:
    """One prompt's guarded answer.

    Attributes:
        text: what the guard let through (``abstain``: the verified sentences, then the message).
        token_ids: the answer's generated tokens: the unsteered ones, or with steering the kept
            tokens followed by the steered ones (``continue``) or just the steered ones (``regenerate``).
        summary: the response-level verdict; ``summary.steered`` says where and how it was steered.
        completion: the first, unsteered pass.
        steered_completion: the steered pass (``None`` when the answer was not steered).
        gate: the pre-generation gate's decision (``None`` without a gate or with ``options.gate`` off).
        answer_check: the answer check's decision (``None`` unless ``options.answer_check``, and when the guard
            stopped before the answer was complete: the gate or a flagged sentence abstained, or it was steered).
    """

    text: str
    token_ids: list[int]
    summary: GuardSummary
    completion: GuardedCompletion
    steered_completion: GuardedCompletion | None = None
    gate: GateDecision | None = None
    answer_check: AnswerDecision | None = None


def steer_strength(options: GuardOptions, vector: SteeringVector | None) -> float | None:
    """The steering strength of mode ``steer``: ``options.steer_alpha``, else the vector's ``default_alpha``.

    Returns ``None`` in other modes.

    Raises:
        ConfigError: mode ``steer`` without a steering vector, with neither strength, or with one out of
            the vector's range (:meth:`guard.steering.SteeringVector.allows`).

    Example:
        >>> steer_strength(GuardOptions(mode="flag"), None) is None
        True
    """
    if options.mode != "steer":
        return None
    if vector is None:
        raise ConfigError("mode 'steer' needs an engine started with a steering vector: build one with "
                          "`guard steer build --out PATH` and pass GuardConfig(steering=PATH)")
    if options.steer_alpha is not None:
        if not vector.allows(options.steer_alpha):
            raise ConfigError(f"options.steer_alpha={options.steer_alpha!r} is out of range: {vector.limit_text()}; "
                              "set a smaller GuardOptions(steer_alpha=...)")
        return options.steer_alpha
    if vector.manifest.default_alpha is None:
        raise ConfigError(f"mode 'steer' has no strength: options.steer_alpha is None and steering vector "
                          f"{vector.manifest.kind!r} records no default_alpha; set GuardOptions(steer_alpha=...) or "
                          "rebuild the vector with `guard steer build --default-alpha A`")
    return vector.manifest.default_alpha


def token_pieces(tokenizer: Any, token_ids: Sequence[int], text: str | None = None) -> list[str]:
    """Each generated token's text, as an incremental detokenizer emits it; the pieces join to the whole text.

    A token that ends inside a multi-byte character gets ``""`` and the character goes to the token
    that completes it. With ``text`` (the engine's own detokenization), any remainder goes to the last piece.
    Decodes every prefix (quadratic in the answer's length): meant for answers of tens to hundreds of tokens.
    """
    pieces, shown = [], ""
    for i in range(len(token_ids)):
        now = tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True)
        if now.endswith("\ufffd") or not now.startswith(shown):
            pieces.append("")
            continue
        pieces.append(now[len(shown):])
        shown = now
    whole = text if text is not None else tokenizer.decode(list(token_ids), skip_special_tokens=True)
    if pieces and "".join(pieces) != whole:
        joined = "".join(pieces[:-1])
        pieces[-1] = whole[len(joined):] if whole.startswith(joined) else pieces[-1]
    return pieces


def feed_completion(guard: StreamGuard, completion: GuardedCompletion, pieces: Sequence[str],
                    start: int, answer: AnswerDecision | None = None) -> list[GuardEvent]:
    """Feed a completion's generated tokens (positions from ``start``) and their scores as a stream would.

    Token ``p``'s score is fed after token ``p + 1``'s text; feeding stops early when the guard stops
    (it abstained or asks to steer), else it ends with the answer check's decision (when given) and
    :meth:`StreamGuard.finish`.
    """
    rows: dict[int, np.ndarray] = {}
    if completion.scores is not None:
        scores = completion.scores.scores
        if completion.shift_scores is not None:  # the probe's shift columns follow its labels', as a stream's rows
            scores = np.concatenate([scores, completion.shift_scores], axis=-1)
        rows = {int(p): s for p, s in zip(completion.scores.positions, scores) if p >= start}
    events = []
    for i, piece in enumerate(pieces):
        events.append(guard.add_text(start + i, piece))
        if i > 0 and (row := rows.get(start + i - 1)) is not None:
            events.append(guard.add_scores(start + i - 1, row))
        if guard.stopped:
            return events
    if answer is not None:
        events.append(guard.judge_answer(answer.answer, answer.reason(), answer.alpha))
    events.append(guard.finish())
    return events


def steered_request(point: SteerPoint, completion: GuardedCompletion, max_tokens: int) -> tuple[list[int], int, int]:
    """The steered request for ``point``: ``(prompt ids, steer_from, max_tokens)``.

    ``continue`` keeps the tokens before ``point.position``; the gate and ``regenerate`` start again
    from the prompt. Steering starts at the prompt's last row (it produces the first steered token).
    """
    kept = []
    if point.position is not None:
        kept = completion.token_ids[: point.position - len(completion.prompt_token_ids)]
    prompt = completion.prompt_token_ids + kept
    return prompt, len(prompt) - 1, max(1, max_tokens - len(kept))


class _Choice:
    """One prompt's guard and what it has let through so far."""

    def __init__(self, guard: StreamGuard, completion: GuardedCompletion, gate: GateDecision | None,
                 answer: AnswerDecision | None = None) -> None:
        self.guard, self.completion, self.gate, self.answer = guard, completion, gate, answer
        self.text: list[str] = []
        self.steered: GuardedCompletion | None = None

    def take(self, events: Sequence[GuardEvent]) -> None:
        self.text.extend(e.text for e in events)


def generate_guarded(llm: GuardedLLM, prompts: Sequence[str | list[int]], params: Any = None,
                     options: GuardOptions | None = None, *, rule: VerdictRule | None = None) -> list[GuardedAnswer]:
    """Generate guarded answers in one batch (two with steering): the guard's modes on the offline engine.

    Args:
        llm: an engine with a probe (and, for mode ``steer``, a steering vector; a gate is consulted
            when loaded and ``options.gate`` is on).
        prompts: texts or token-id lists.
        params: ``vllm.SamplingParams`` (default: greedy, 32 tokens).
        options: the guard's options for every prompt (mode, alpha, steering strength and how).
        rule: the verdict rule (default: the engine probe's).

    Returns:
        One :class:`GuardedAnswer` per prompt, in order.

    Raises:
        ConfigError: the engine has no probe, mode ``steer`` cannot steer (see :func:`steer_strength`), or
            ``options.answer_check`` without an on-policy gate (``answer_samples``: without a sampled combiner).

    Example:
        >>> answers = generate_guarded(llm, ["What is the capital of Peru?"],                   # doctest: +SKIP
        ...                            options=GuardOptions(mode="steer", steer_how="continue"))
        >>> answers[0].summary.steered                                                           # doctest: +SKIP
    """
    from vllm import SamplingParams

    options = options or GuardOptions()
    if llm.probe is None:
        raise ConfigError("guarded generation needs an engine started with a probe: GuardConfig(probe=PATH)")
    rule = rule or VerdictRule.from_probe(llm.probe)
    strength = steer_strength(options, llm.steering)
    answers = answer_rule(llm, options)
    params = params or SamplingParams(max_tokens=32, temperature=0.0)
    if answers is not None and params.logprobs is None:  # the answer check reads the tokens' log-probabilities
        params = params.clone()
        params.logprobs = 0
    choices = []
    completions, drawn = answers_and_samples(llm, answers, options, prompts, params)
    for i, completion in enumerate(completions):
        guard = StreamGuard(rule, options, steer_strength=strength, whole_answer=answers is not None)
        prompt = prompts[i]
        # the question's words are read by the gate's scope and the samples' agreement: without a gate, by nothing
        question = prompt if isinstance(prompt, str) else llm.tokenizer.decode(prompt) if llm.gate is not None else ""
        choice = _Choice(guard, completion, gate_decision(llm, options, completion, question),
                         check_answer(answers, options, completion, None if drawn is None else drawn[i], question))
        if choice.gate is not None and not choice.gate.answer:
            d = choice.gate
            choice.take([choice.guard.gate_abstain(f"the pre-generation gate gives p(correct)={d.p_correct:.3f} < "
                                                   f"certified threshold {d.threshold} at gate alpha {d.alpha}")])
        if not choice.guard.stopped:
            pieces = token_pieces(llm.tokenizer, completion.token_ids, completion.text)
            choice.take(feed_completion(choice.guard, completion, pieces, len(completion.prompt_token_ids),
                                        choice.answer))
        choices.append(choice)
    _steer(llm, [(c, c.guard.steered) for c in choices if c.guard.steered is not None and c.guard.stopped], params)
    return [_answer(c) for c in choices]


def _steer(llm: GuardedLLM, asked: list[tuple[_Choice, SteerPoint]], params: Any) -> None:
    """One batch of steered generations for the choices that asked (each with its steer point); resume and feed
    their guards."""
    if not asked:
        return
    choices = [c for c, _ in asked]
    requests = [steered_request(point, c.completion, params.max_tokens) for c, point in asked]
    per_request = []
    for _, _, max_tokens in requests:
        sp = params.clone()
        sp.max_tokens = max_tokens
        per_request.append(sp)
    outs = llm.generate([p for p, _, _ in requests], per_request, steer=[c.guard.steer_strength for c in choices],
                        steer_from=[s for _, s, _ in requests])
    for choice, out in zip(choices, outs):
        choice.steered = out
        choice.take([choice.guard.resume()])
        pieces = token_pieces(llm.tokenizer, out.token_ids, out.text)
        choice.take(feed_completion(choice.guard, out, pieces, len(out.prompt_token_ids)))


def _answer(choice: _Choice) -> GuardedAnswer:
    completion, steered = choice.completion, choice.steered
    token_ids = completion.token_ids
    if steered is not None:
        kept = len(steered.prompt_token_ids) - len(completion.prompt_token_ids)
        token_ids = completion.token_ids[:kept] + steered.token_ids
    summary, check = choice.guard.summary(), choice.answer
    if summary.steered is not None or (summary.abstained is not None and summary.abstained.kind != "answer"):
        check = None  # the guard stopped before the answer was complete, as guard serve reports it
    return GuardedAnswer("".join(choice.text), list(token_ids), summary, completion, steered, choice.gate, check)
