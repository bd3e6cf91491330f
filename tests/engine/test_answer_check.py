"""The answer check in the real engine: the shipped on-policy gate judges whole answers of the real model."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.engine

ALPHA = 0.3  # the shipped answer combiner certifies a threshold here (calibration/results/answers-smollm2/gate.json)


@pytest.fixture(scope="module")
def judged(model_path: str):
    from vllm import SamplingParams

    from adapters.vllm.engine import GuardedLLM
    from adapters.vllm.gated import generate_guarded
    from calibration.qa import qa_prompt
    from calibration.questions import generate_questions
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec
    from guard.options import GuardOptions
    from guard.shipped import shipped_probe

    fingerprint = ModelSpec.from_folder(model_path).fingerprint
    probe, gate = shipped_probe(fingerprint), shipped_probe(fingerprint, gate=True)
    assert probe is not None and gate is not None
    items = [q for relation in ("capital", "element_symbol", "arithmetic")
             for q in generate_questions(0, relations=[relation], wordings=1)[:8]]
    config = GuardConfig.build(probe=str(probe), gate=str(gate), capture_hidden=True, enforce_eager=True,
                               max_model_len=512)
    with GuardedLLM(config) as llm:
        prompts = [qa_prompt(llm.tokenizer, it.question) for it in items]
        options = GuardOptions(mode="abstain", alpha=0.01, answer_check=True, answer_alpha=ALPHA, gate=False)
        answers = generate_guarded(llm, prompts, SamplingParams(max_tokens=24, temperature=0.0), options)
        # the same greedy requests again, with the hidden rows the capture read
        plain = llm.generate(prompts, SamplingParams(max_tokens=24, temperature=0.0, logprobs=0), hidden=True)
        sampled = generate_guarded(llm, prompts, SamplingParams(max_tokens=24, temperature=0.0),
                                   options.model_copy(update={"answer_samples": True}))
    return items, answers, str(gate), plain, sampled


def test_engine_answer_check_equals_the_combiner_on_signals_recomputed_from_the_captured_rows(judged):
    from guard.answer_check import AnswerRule, AnswerTally
    from guard.probe import Probe

    _, answers, gate_path, plain, _ = judged
    gate = Probe.load(gate_path)
    rule = AnswerRule(gate, offset=0)
    for a, c in zip(answers, plain):
        d = a.answer_check
        assert d is not None and d.certified and d.alpha == ALPHA
        assert c.token_ids == a.completion.token_ids  # greedy: the same answer
        rows = gate.score(c.scores.hidden)  # the gate's read-out recomputed on the rows the capture kept
        n = len(c.prompt_token_ids)
        tally = AnswerTally()
        rule.add_prompt_row(tally, rows[int(np.flatnonzero(c.scores.positions == n - 1)[0])])
        rule.add_answer_rows(tally, rows[c.scores.positions >= n])
        tally.add_logprobs(c.token_logprobs, len(c.token_ids))
        again = rule.decide(tally, ALPHA)
        assert again is not None and d.answer_rows == len(c.token_ids) - 1  # every fed-back token, not the last
        assert d.p_correct == pytest.approx(again.p_correct, abs=2e-3)
        assert d.logprob == pytest.approx(float(np.mean(c.token_logprobs)), abs=1e-5) and d.logprob < 0


def test_engine_abstain_mode_sends_certified_answers_whole_and_abstains_on_the_rest(judged):
    from calibration.grading import grade
    from guard.options import DEFAULT_ABSTAIN_MESSAGE

    items, answers, _, _, _ = judged
    outcomes = []
    for it, a in zip(items, answers):
        d = a.answer_check
        assert d is not None and d.answer is (d.p_correct >= d.threshold)
        if d.answer:
            assert a.text == a.completion.text and a.summary.decision == "pass"
        else:
            assert a.text == DEFAULT_ABSTAIN_MESSAGE and a.summary.abstained.kind == "answer"
        outcomes.append((d.answer, grade(a.completion.text, it.answers, it.distractors, it.question)))
    answered = [right for said, right in outcomes if said]
    assert 0 < len(answered) < len(outcomes)  # both outcomes on these questions
    # the answered share is at least as accurate as all answers (the check ranks the model's own answers)
    assert np.mean(answered) >= np.mean([right for _, right in outcomes])


def test_engine_answer_samples_join_the_check_and_agree_more_with_right_answers(judged):
    from calibration.grading import grade
    from guard.probe import Probe

    items, answers, gate_path, _, sampled = judged
    sampling = Probe.load(gate_path).manifest.answer_sampling
    assert sampling is not None
    right, wrong = [], []
    for it, a, s in zip(items, answers, sampled):
        d, plain = s.answer_check, a.answer_check
        assert d is not None and plain is not None and d.samples == sampling.samples
        assert s.completion.token_ids == a.completion.token_ids  # greedy: the same answer, now with samples
        assert (d.gate_logit, d.answer_logit, d.logprob) == (plain.gate_logit, plain.answer_logit, plain.logprob)
        assert d.agreement is not None and 0.0 <= d.agreement <= 1.0
        again = sampling.combiner.confidence({"gate": d.gate_logit, "answer": d.answer_logit, "logprob": d.logprob,
                                              "agreement": d.agreement})
        assert d.p_correct == pytest.approx(again, abs=1e-5)
        (right if grade(a.completion.text, it.answers, it.distractors, it.question) else wrong).append(d.agreement)
    assert right and wrong and np.mean(right) > np.mean(wrong)  # the model repeats what it knows
