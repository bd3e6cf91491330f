"""Grading on-policy answers: aliases, distractors, the exact answer tokens and semantic classes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.aliases import accepted_answers
from calibration.grading import answer_key, answer_span, first_new_number, grade
from calibration.questions import QUESTIONS, answer_vocabulary, generate_questions, question_splits
from calibration.semantic import semantic_classes, semantic_entropy
from calibration.templates import CATALOGUE


@pytest.mark.parametrize(("answer", "value", "expected"), [
    ("It is in the USA.", "the United States", True),
    ("San Francisco is a city in the U.S.", "the United States", True),
    ("The answer is forty-two.", 42, True),
    ("The answer is forty two", 42, True),
    ("The answer is 42.", 42, True),
    ("The answer is 420.", 42, False),
    ("Whales are mammals.", "mammal", True),
    ("The sky is gray.", "grey", True),
    ("It is the Netherlands, also called Holland.", "the Netherlands", True),
])
def test_grader_accepts_aliases_numbers_in_words_and_plurals(answer, value, expected):
    assert grade(answer, accepted_answers(value)) is expected


def test_grader_wrong_when_a_distractor_is_said_first():
    assert grade("912 is larger than 45.", ("912",), ("45",))
    assert not grade("45 is larger than 912.", ("912",), ("45",))
    mexico = next(q for q in generate_questions(0, relations=["continent"]) if q.fact == "continent:Mexico")
    assert not grade("Mexico is in South America, north of nothing but North America.", mexico.answers,
                     mexico.distractors)
    assert grade("Mexico is in North America, next to South America.", mexico.answers, mexico.distractors)


def test_numbers_of_the_question_are_not_distractors():
    item = next(q for q in generate_questions(0, relations=["arithmetic"]) if q.template == "arithmetic/q0")
    restated = item.fact.split(":", 1)[1]  # "30 plus 33"
    assert item.distractors == ()
    assert grade(f"{restated} equals {item.answers[0]}.", item.answers, item.distractors, item.question)
    assert not grade(f"{restated} equals 1{item.answers[0]}.", item.answers, item.distractors, item.question)
    assert not grade(f"The answer is 9{item.answers[0]}, or {item.answers[0]}.", item.answers, item.distractors,
                     item.question)
    assert grade("It happened on July 14, 1863.", ("1863",), (), "What year was the Battle of Gettysburg?")


def test_every_relation_is_asked_in_three_wordings_with_one_held_out_of_training():
    items = generate_questions(0)
    assert {r.name for r in CATALOGUE} == set(QUESTIONS)
    assert len(items) == sum(len(r.facts) * 3 for r in CATALOGUE)
    masks = question_splits(items)
    held = masks["held_wording"]
    assert held.any() and not (held & (masks["train"] | masks["cal"])).any()
    facts = {side: {items[i].fact for i in range(len(items)) if masks[side][i]} for side in ("train", "cal", "test")}
    assert not facts["train"] & facts["test"] and not facts["cal"] & facts["test"]


def _token_texts(pieces: list[str]) -> list[str]:
    return ["".join(pieces[: i + 1]) for i in range(len(pieces))]


@settings(max_examples=60, deadline=None)
@given(prefix=st.sampled_from(["", "The answer is ", "I think it's  ", "Well,\tit is "]),
       casing=st.sampled_from([str.lower, str.upper, str.title, lambda s: s]),
       cut=st.integers(min_value=1, max_value=3), suffix=st.sampled_from(["", ".", " indeed.", ", I think."]))
def test_exact_answer_span_covers_the_answer_in_any_casing_and_spacing(prefix, casing, cut, suffix):
    said = casing("New  York")
    text = prefix + said + suffix
    # tokens: prefix words, the answer cut into pieces, the suffix
    pieces = [p for p in prefix.split(" ") if p]
    pieces = [p + " " for p in pieces] if pieces else []
    pieces = [prefix] if prefix and not pieces else pieces
    head = "".join(pieces)
    if head != prefix:
        pieces = [prefix] if prefix else []
    step = max(1, len(said) // cut)
    pieces += [said[i : i + step] for i in range(0, len(said), step)] + ([suffix] if suffix else [])
    assert "".join(pieces) == text
    span = answer_span(_token_texts(pieces), accepted_answers("New York"))
    assert span is not None
    covered = "".join(pieces[span[0] : span[1]])
    assert said in covered and len(covered) <= len(said) + 2 * step


def test_answer_span_does_not_depend_on_the_grade():
    candidates = ("Paris", "Rome", "Berlin")
    for city in candidates:
        pieces = ["The capital", " is ", city, "."]
        assert answer_span(_token_texts(pieces), candidates) == (2, 3)
    pieces = ["18 minus 6", " equals ", "13", "."]
    assert answer_span(_token_texts(pieces), (), "What is 18 minus 6?") == (2, 3)
    assert answer_span(_token_texts(["I", " do not", " know."]), candidates) is None


def test_first_new_number_skips_the_numbers_of_the_question():
    assert first_new_number("18 minus 6 equals 12", "What is 18 minus 6?") == "12"
    assert first_new_number("no number", "What is 1 plus 1?") is None


def test_semantic_classes_group_answers_that_say_the_same_thing():
    vocabulary = answer_vocabulary("city_country")
    answers = ["It is in the USA.", "Seattle is a city in the United States.", "Seattle is in Canada.",
               "I'm not sure."]
    keys = semantic_classes(answers, vocabulary)
    assert keys[0] == keys[1] != keys[2] != keys[3]
    assert semantic_entropy(answers[:2], vocabulary) == 0.0
    assert semantic_entropy(answers, vocabulary) > semantic_entropy(answers[:3], vocabulary) > 0.0
    numbers = semantic_classes(["18 minus 6 is 12", "12.", "It is 11"], {}, "What is 18 minus 6?")
    assert numbers[0] == numbers[1] == "number:12" != numbers[2]


def test_answer_key_prefers_the_first_entity_said():
    vocabulary = answer_vocabulary("capital")
    assert answer_key("Rome, not Paris", vocabulary) == "Rome"
    assert answer_key("no idea", vocabulary) == "text:no idea"


def test_grader_agrees_with_hand_checked_verdicts_on_the_models_own_answers():
    from calibration.grader_check import grader_agreement, load_checked

    rows = load_checked()
    assert len(rows) >= 200 and {r["split"] for r in rows} == {"dev", "test"}
    assert {r["correct"] for r in rows} == {True, False}
    agreement = grader_agreement()
    assert agreement["all"]["agreement"] >= 0.95
    assert agreement["test"]["agreement"] >= 0.95  # judged after the rules were written
