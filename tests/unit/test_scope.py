"""The gate's question scope: frames fitted from calibration templates, and which questions they cover."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration.gate_scope import fact_folds, scope_report
from guard.scope import Frame, QuestionScope

CAPITALS = ["What is the capital of France?", "What is the capital of Chad?", "What is the capital of New Zealand?"]
BELONGS = ["The city of Rotterdam belongs to which country?", "The city of Lyon belongs to which country?"]
SUMS = ["What is 2 plus 3?", "What is 40 minus 1?"]  # constant words without content: no frame


def test_a_frame_is_the_words_a_templates_questions_start_and_end_with_when_they_carry_content():
    scope = QuestionScope.fit({"capital/q0": CAPITALS, "city_country/q2": BELONGS, "arithmetic/q0": SUMS,
                               "alone/q0": ["Who painted the Mona Lisa?"]})  # one question: no frame either
    assert scope.frames == (
        Frame(template="capital/q0", head=("what", "is", "the", "capital", "of"), tail=()),
        Frame(template="city_country/q2", head=("the", "city", "of"), tail=("belongs", "to", "which", "country")))
    assert QuestionScope.of([("capital/q0", q) for q in CAPITALS]) == QuestionScope.fit({"capital/q0": CAPITALS})


@pytest.mark.parametrize(("text", "covered"), [
    ("What is the capital of Peru?", True),
    ("  WHAT is the capital of   peru ", True),  # casing, spacing, punctuation
    ("<|im_start|>user\nWhat is the capital of Peru? Answer briefly.<|im_end|>\n<|im_start|>assistant\n", True),
    ("I am curious. What is the capital of Côte d'Ivoire?", True),
    ("The city of Graz belongs to which country?", True),
    ("The city of belongs to which country?", False),  # nothing between the frame's ends: no fact asked
    ("What is the capital of?", False),
    ("Which city is the capital of Peru?", False),  # another wording
    ("Where was Ada Lovelace born?", False),  # another relation
    ("", False),
])
def test_a_question_is_in_scope_when_it_holds_a_frame_with_a_fact_inside(text, covered):
    scope = QuestionScope.fit({"capital/q0": CAPITALS, "city_country/q2": BELONGS})
    assert scope.covers(text) is covered
    assert (scope.match(text) is not None) is covered


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzÉé ", min_size=1, max_size=20).filter(lambda s: s.strip()),
       st.booleans())
def test_any_entity_in_a_calibrated_wording_is_in_scope_in_any_casing(entity, upper):
    scope = QuestionScope.fit({"city_country/q2": BELONGS})
    question = f"The city of {entity} belongs to which country?"
    assert scope.covers(question.upper() if upper else question)


def test_an_empty_scope_covers_nothing_and_round_trips_as_plain_data():
    assert not QuestionScope(frames=()).covers("What is the capital of Peru?")
    scope = QuestionScope.fit({"capital/q0": CAPITALS})
    assert QuestionScope.model_validate_json(scope.model_dump_json()) == scope


def test_fact_folds_keep_a_facts_wordings_together():
    facts = ["capital:France", "capital:France", "capital:Chad", "", "", *[f"x:{i}" for i in range(40)]]
    folds = fact_folds(facts)
    assert folds[0] == folds[1] and set(folds.tolist()) == set(range(5))
    assert np.array_equal(folds, fact_folds(facts))


def test_the_scope_report_says_where_the_gate_decides_on_left_out_relations_and_how_it_ranks_there():
    questions = [*CAPITALS, *BELONGS, "Which city is the capital of Peru?", "Which city is the capital of Chad?"]
    templates = ["capital/q0"] * 3 + ["city_country/q2"] * 2 + ["capital/q1"] * 2
    domains = np.array(["capital"] * 3 + ["city_country"] * 2 + ["capital"] * 2)
    correct = np.array([True, False, True, True, False, True, False])
    gate = np.array([2.0, -1.0, 1.0, 0.5, -0.5, 1.0, 0.0])
    report = scope_report(templates, questions, domains, gate, gate, correct)
    assert report["left_out"]["capital"] == {"in_scope": 0.0, "auroc_in_scope": None, "auroc_all": 1.0}
    assert report["trusted_everywhere"] and report["frames"] == 3 and report["calibration_in_scope"] == 1.0
    # a left-out relation worded like a calibrated one: the gate decides there, so it must rank it above chance
    alike = ["In which city is the Louvre?", "In which city is the Prado?", "In which city is the Kremlin?",
             "In which city is the parliament of Peru?", "In which city is the parliament of Chad?",
             "In which city is the parliament of Fiji?"]
    domains = np.array(["landmark"] * 3 + ["seat"] * 3)
    correct = np.array([True, False, True, False, True, True])
    right_way = np.array([1.0, -1.0, 0.5, -2.0, 1.0, 2.0])
    report = scope_report(["landmark/q0"] * 3 + ["seat/q0"] * 3, alike, domains, right_way, right_way, correct)
    assert report["left_out"]["seat"]["in_scope"] == 1.0 and report["left_out"]["seat"]["auroc_in_scope"] == 1.0
    assert report["trusted_everywhere"]
    wrong_way = scope_report(["landmark/q0"] * 3 + ["seat/q0"] * 3, alike, domains, -right_way, right_way, correct)
    assert not wrong_way["trusted_everywhere"]


def test_a_frame_is_found_exactly_where_a_plain_scan_of_every_position_finds_it() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from guard.scope import Frame

    def plain(frame: Frame, text: list[str]) -> bool:
        h, t, n = len(frame.head), len(frame.tail), len(text)
        starts = [i + h for i in range(n - h + 1) if tuple(text[i : i + h]) == frame.head]
        if not starts:
            return False
        first = starts[0]
        return first < n if not t else any(tuple(text[j : j + t]) == frame.tail for j in range(first + 1, n - t + 1))

    vocab = st.sampled_from(["what", "is", "the", "capital", "of", "x", "y"])

    @settings(max_examples=400, deadline=None)
    @given(st.lists(vocab, max_size=3), st.lists(vocab, max_size=3), st.lists(vocab, max_size=14))
    def check(head: list[str], tail: list[str], text: list[str]) -> None:
        frame = Frame(template="t", head=tuple(head), tail=tuple(tail))
        assert frame.found_in(text) == plain(frame, text)

    check()
