"""On-policy answer data through the real engine: the rows kept are the model's own states, graded answers."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.grading import normalise
from calibration.onpolicy import collect_answers, sample_answers
from calibration.qa import qa_prompt
from calibration.questions import generate_questions

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def easy_items():
    return [q for q in generate_questions(0, relations=["capital", "language", "city_country"], wordings=1)][:24]


@pytest.fixture(scope="module")
def answered(eager_engine, easy_items):
    return collect_answers(eager_engine, easy_items, max_tokens=20)


def test_onpolicy_answer_rows_match_hf_hidden_states_of_the_generated_tokens(answered, eager_engine, hf):
    from tests.engine.conftest import LAYERS

    for a in answered[:4]:
        prompt_ids = eager_engine.tokenizer(qa_prompt(eager_engine.tokenizer, a.item.question))["input_ids"]
        reference = hf.hidden_states(list(prompt_ids) + list(a.token_ids), LAYERS)  # (T, L, H)
        n = len(prompt_ids)
        assert len(a.answer_rows) == len(a.token_ids) - 1  # the last generated token is never fed back
        np.testing.assert_allclose(a.prompt_row.astype(np.float32), reference[n - 1], rtol=0.02, atol=0.05)
        np.testing.assert_allclose(a.answer_rows.astype(np.float32), reference[n : n + len(a.answer_rows)],
                                   rtol=0.02, atol=0.05)


def test_onpolicy_answers_are_graded_and_their_answer_tokens_found(answered, eager_engine):
    correct = [a for a in answered if a.correct]
    assert len(correct) >= len(answered) // 3  # the model knows most capitals and languages
    for a in correct:
        assert a.span is not None
        said = eager_engine.tokenizer.decode(list(a.token_ids[a.span[0] : a.span[1]]))
        assert any(normalise(x) in normalise(said) for x in a.item.answers), (said, a.item.answers)
    assert all(np.isfinite(a.mean_logprob) and a.mean_logprob <= 0 for a in answered)


def test_sampled_answers_come_k_per_question_and_differ(eager_engine, easy_items):
    drawn = sample_answers(eager_engine, easy_items[:8], k=3, temperature=1.0, max_tokens=12)
    assert [len(d) for d in drawn] == [3] * 8
    assert len({s for d in drawn for s in d}) > 8  # sampling, not the greedy answer repeated
