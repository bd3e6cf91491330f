"""Agreement of sampled answers for any question: what an answer adds to its question, and when two say the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from guard.agreement import agreement, answer_words, same_answer

QUESTION = "What is the capital of France?"


def test_answer_words_drop_the_question_and_function_words_and_prefer_names() -> None:
    assert answer_words("The capital of France is Paris.", QUESTION) == ("paris",)
    assert answer_words("Paris", QUESTION) == ("paris",)
    assert answer_words("It's Lyon, I think.", QUESTION) == ("lyon",)  # a name: the other words are not read
    assert answer_words("it is a lovely old city", QUESTION) == ("lovely", "old", "city")  # no name: content words
    assert answer_words("It was founded in 1066 by William.", "When was it founded?") == ("1066", "william")


def test_an_answer_in_the_questions_own_words_keeps_their_order() -> None:
    asked = "Which is larger, 45 or 912?"
    first, second = answer_words("912 is larger than 45.", asked), answer_words("45 is larger than 912", asked)
    assert first == ("=", "912", "larger", "45") and not same_answer(first, second)
    assert same_answer(first, answer_words("912 is larger.", asked))


def test_answer_words_read_only_the_first_sentence_of_the_first_line() -> None:
    assert answer_words("Paris. Lyon is the second city.", QUESTION) == ("paris",)
    assert answer_words("\n  Paris\nLyon", QUESTION) == ("paris",)


def test_number_words_and_digits_are_one_answer() -> None:
    asked = "How many legs does a spider have?"
    assert answer_words("A spider has eight legs.", asked) == answer_words("8", asked) == ("8",)
    assert answer_words("Forty-two.", "What is six times seven?") == ("42",)
    assert answer_words("forty two", "What is six times seven?") == ("42",)


def test_same_answer_needs_a_shared_word() -> None:
    assert same_answer(("paris",), ("paris", "france"))
    assert same_answer(("city", "paris"), ("paris",))
    assert not same_answer(("paris",), ("lyon",))
    assert not same_answer(("paris",), ("=", "paris"))
    assert same_answer((), ())
    assert not same_answer((), ("paris",))


def test_agreement_counts_the_samples_that_say_the_answer() -> None:
    samples = ["The capital of France is Paris.", "Lyon.", "paris!", "Marseille is the capital of France."]
    assert agreement("Paris.", samples, QUESTION) == 0.5
    assert agreement("Lyon", samples, QUESTION) == 0.25
    assert agreement("Paris", [], QUESTION) == 0.0


@given(st.sampled_from(["Paris", "Lyon", "Nice", "Lille"]), st.lists(st.sampled_from(["Paris", "Lyon", "Nice"]),
       min_size=1, max_size=8), st.sampled_from(["", " ", "  "]), st.sampled_from([".", "!", "", ". It is."]),
       st.booleans())
def test_agreement_ignores_casing_spacing_and_punctuation(answer: str, picks: list[str], pad: str, end: str,
                                                          upper: bool) -> None:
    def dress(text: str) -> str:
        return pad + (text.upper() if upper else text.lower()) + end

    expected = sum(p == answer for p in picks) / len(picks)
    assert agreement(dress(answer), [dress(p) for p in picks], QUESTION) == expected
    assert 0.0 <= expected <= 1.0


def test_answers_in_other_scripts_are_read_not_dropped() -> None:
    # folding to ASCII would leave these answers empty, and empty answers agree: every sample would "say the same"
    assert agreement("Москва.", ["Москва", "Санкт-Петербург."], "Какая столица России?") == 0.5
    assert answer_words("Столица России — Москва.", "Какая столица России?") == ("москва",)
    assert agreement("東京です。", ["東京です。", "大阪です。", "東京です"], "日本の首都は？") == 2 / 3
    assert answer_words("Ça s'appelle Bogotá.", "Quelle est la capitale ?")[-1] == "bogota"
