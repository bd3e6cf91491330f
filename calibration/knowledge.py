"""Which facts does the model know? A likelihood test on paired statements.

A probe reads what the model *believes*. For a fact the model does not know, "true" and "false"
are labels it cannot reflect, so training on them teaches noise. A fact counts as known when the
model assigns its true affirmative statement a total log-probability at least ``margin`` nats above
the false one (the same sentence with a plausible wrong object). A bare preference (margin 0)
would pass half of the facts the model is guessing at; 2 nats (the true sentence about 7x more
likely) kept 245 of 349 facts of the default model and raised fact-grouped cross-validated
AUROC from 0.89 to 0.92. Facts without such a pair are kept as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from calibration.engine_port import GuardEngine
from calibration.statements import Statement

__all__ = ["known_facts", "statement_logprobs"]


def statement_logprobs(llm: GuardEngine, texts: Sequence[str]) -> list[float]:
    """Total log-probability of each text under the model (every token after the first), through vLLM."""
    from vllm import SamplingParams

    outs = llm.llm.generate(list(texts), SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    totals = []
    for out in outs:
        pairs = zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:])
        totals.append(float(sum(step[token].logprob for token, step in pairs)))
    return totals


def known_facts(llm: GuardEngine, statements: Sequence[Statement],
                margin: float = 2.0) -> tuple[set[str], set[str]]:
    """Split the facts with a true/false affirmative pair into ``(known, unknown)`` by the likelihood test.

    The pair compared is one wording's true and false affirmative (``form`` ``plain``, else ``qa``; the first
    such template of the fact), so both sentences differ only in the object.
    """
    pairs = _affirmative_pairs(statements)
    order = sorted(pairs)
    texts = [statements[pairs[f][label]].text for f in order for label in ("true", "false")]
    lp = statement_logprobs(llm, texts) if texts else []
    known = {f for j, f in enumerate(order) if lp[2 * j] - lp[2 * j + 1] >= margin}
    return known, set(order) - known


def _affirmative_pairs(statements: Sequence[Statement]) -> dict[str, dict[str, int]]:
    """Per fact: the indices of the true and false affirmative of its first complete wording."""
    by_wording: dict[tuple[str, int, str], dict[str, int]] = {}
    for i, s in enumerate(statements):
        if s.label in ("true", "false") and not s.negated and s.fact and s.form in ("plain", "qa"):
            key = (s.fact, 0 if s.form == "plain" else 1, s.template)
            by_wording.setdefault(key, {})[s.label] = i
    out: dict[str, dict[str, int]] = {}
    for (fact, _, _), pair in sorted(by_wording.items()):
        if fact not in out and len(pair) == 2:
            out[fact] = pair
    return out
