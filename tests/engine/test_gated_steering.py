"""Probe-gated steering through the Python API, on the default model and guard's own closed-book QA items.

One engine (shipped probe, shipped gate, shipped steering vector; in-process core so equal batches
give bit-identical results) answers a fixed subset of the QA items in every mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from calibration.qa import qa_prompt
from calibration.statements import generate_qa

#: the QA subset: the first items of guard's own shuffled set
N_ITEMS = 32
#: always-on strength of the truth-score test (x typical residual norm at the steered layer)
ALPHA = 0.2
MAX_TOKENS = 24


def _params():
    from vllm import SamplingParams

    return SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)


@pytest.fixture(scope="module")
def llm(model_path: str) -> Iterator:
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe, shipped_steering

    fingerprint = ModelSpec.from_folder(model_path).fingerprint
    probe, gate = shipped_probe(fingerprint), shipped_probe(fingerprint, gate=True)
    steering = shipped_steering(fingerprint)
    assert probe and gate and steering, "the default model ships a probe, a gate and a steering vector"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("GUARD_SCORE_ENDPOINT", "inproc://gated-steering-test")
        engine = GuardedLLM(GuardConfig.build(probe=str(probe), gate=str(gate), steering=str(steering),
                                              enforce_eager=True, max_model_len=1024))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(llm) -> list[list[int]]:
    texts = [qa_prompt(llm.tokenizer, it.question) for it in generate_qa()[:N_ITEMS]]
    return [c.prompt_token_ids for c in llm.generate(texts, _params())]


@pytest.fixture(scope="module")
def plain(llm, prompts) -> list:
    return llm.generate(prompts, _params())


def _guarded(llm, prompts, **options) -> list:
    from adapters.vllm.gated import generate_guarded
    from guard.options import GuardOptions

    return generate_guarded(llm, prompts, _params(), GuardOptions(**options))


def _truth_scores(llm, prompts, answers) -> np.ndarray:
    """Mean p(true) of each answer's tokens as the *unsteered* model reads prompt + answer."""
    from vllm import SamplingParams

    true = list(llm.probe.labels).index("true")
    seqs = [list(p) + list(a) for p, a in zip(prompts, answers)]
    out = []
    for p, a, res in zip(prompts, answers, llm.generate(seqs, SamplingParams(max_tokens=1, temperature=0.0))):
        pos = res.scores.positions
        rows = res.scores.scores[(pos >= len(p)) & (pos < len(p) + len(a) - 1)]
        out.append(llm.probe.probabilities(rows)[:, true].mean() if len(rows) else np.nan)
    return np.array(out)


def test_always_on_truthful_steering_raises_the_probes_truth_score_of_the_answers(llm, prompts, plain):
    steered = llm.generate(prompts, _params(), steer=ALPHA, steer_from=[len(p) - 1 for p in prompts])
    assert sum(s.token_ids != b.token_ids for s, b in zip(steered, plain)) >= N_ITEMS // 4  # it changed answers
    before = _truth_scores(llm, prompts, [c.token_ids for c in plain])
    after = _truth_scores(llm, prompts, [c.token_ids for c in steered])
    gain = after - before  # 0 for an answer steering did not change
    rose, fell = int(np.sum(gain > 0)), int(np.sum(gain < 0))
    # on these items (CPU, float32): mean 0.894 -> 0.920, 19 answers rose and 12 fell
    assert np.nanmean(gain) > 0.01 and rose > fell, (np.nanmean(before), np.nanmean(after), rose, fell)


def test_gated_steering_steers_exactly_the_answers_flag_mode_flags_and_leaves_the_rest_untouched(llm, prompts, plain):
    flagged = [a.summary.counts.flagged > 0 for a in _guarded(llm, prompts, mode="flag", gate=False)]
    gated = _guarded(llm, prompts, mode="steer", steer_alpha=ALPHA, gate=False)
    steered = [a.summary.steered is not None for a in gated]
    assert steered == flagged and 0 < sum(steered) < N_ITEMS
    for answer, base, was_steered in zip(gated, plain, steered):
        if not was_steered:
            assert (answer.text, answer.token_ids, answer.summary.decision) == (base.text, base.token_ids, "pass")
            continue
        point = answer.summary.steered
        assert answer.summary.decision == "steer" and point.kind == "sentence" and point.strength == ALPHA
        assert answer.text[: point.kept_chars] == base.text[: point.kept_chars]  # the verified sentences stay
        kept = point.position - len(base.prompt_token_ids)
        assert answer.token_ids[:kept] == base.token_ids[:kept]
        assert answer.steered_completion.prompt_token_ids == base.prompt_token_ids + base.token_ids[:kept]


@pytest.mark.parametrize("how", ["continue", "regenerate"])
def test_the_summary_says_how_each_answer_was_steered(llm, prompts, plain, how):
    answers = _guarded(llm, prompts, mode="steer", steer_alpha=ALPHA, steer_how=how, gate=False)
    steered = [a for a in answers if a.summary.steered is not None]
    assert steered and all(a.summary.steered.how == how for a in steered)
    for a in steered:
        point, n_prompt = a.summary.steered, len(a.completion.prompt_token_ids)
        if how == "regenerate":
            assert point.position is None and point.kept_chars == 0
            assert a.steered_completion.prompt_token_ids == a.completion.prompt_token_ids
        else:
            assert point.position >= n_prompt
            assert len(a.steered_completion.prompt_token_ids) == point.position


def test_a_gate_no_in_mode_steer_steers_from_the_first_token(llm, prompts):
    from guard.gating import GateRule

    gate_alpha = 0.5  # the shipped gate certifies no threshold at its calibrated 0.3 (nor below 0.5); at 0.5 it does
    assert np.isfinite(GateRule(llm.gate, offset=0).threshold(gate_alpha))
    answers = _guarded(llm, prompts, mode="steer", steer_alpha=ALPHA, gate_alpha=gate_alpha)
    said_no = [a.gate is not None and not a.gate.answer for a in answers]
    by_gate = [a.summary.steered is not None and a.summary.steered.kind == "gate" for a in answers]
    assert by_gate == said_no and any(said_no)
    for a in (a for a, no in zip(answers, said_no) if no):
        assert a.summary.steered.position is None
        assert a.steered_completion.prompt_token_ids == a.completion.prompt_token_ids


def test_steer_mode_without_a_strength_takes_the_vectors_default_alpha(llm, prompts):
    default = llm.steering.manifest.default_alpha
    assert default is not None
    points = [a.summary.steered for a in _guarded(llm, prompts, mode="steer", gate=False) if a.summary.steered]
    assert points and all(p.strength == default for p in points)


def test_abstain_mode_replaces_a_flagged_answer_by_the_message(llm, prompts, plain):
    answers = _guarded(llm, prompts, mode="abstain", gate=False, abstain_message="I do not know.")
    flagged = [a for a in answers if a.summary.decision == "abstain"]
    assert flagged and all(a.text.endswith("I do not know.") for a in flagged)
    assert all(a.text == b.text for a, b in zip(answers, plain) if a.summary.decision == "pass")
