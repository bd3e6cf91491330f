"""The held-out statements: unfamiliar topics, never in the training corpus, each fact said four ways."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from calibration.holdout import HOLDOUT_TOPICS, holdout_statements
from calibration.statements import LABELS, RELATIONS, Statement, generate_statements

HOLDOUT = holdout_statements()


def _facts() -> dict[str, list[Statement]]:
    """The statements about real facts, grouped by fact."""
    out: dict[str, list[Statement]] = defaultdict(list)
    for s in HOLDOUT:
        if s.label != "neither":
            out[s.fact].append(s)
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_holdout_topics_are_five_and_none_is_a_training_relation() -> None:
    assert len(HOLDOUT_TOPICS) == len(set(HOLDOUT_TOPICS)) == 5
    assert set(HOLDOUT_TOPICS).isdisjoint(RELATIONS)
    assert {s.domain for s in HOLDOUT} == {f"holdout:{t}" for t in HOLDOUT_TOPICS}
    assert not {s.domain for s in HOLDOUT} & set(RELATIONS)


def test_each_topic_has_twelve_facts_and_six_neither_statements() -> None:
    for topic in HOLDOUT_TOPICS:
        mine = [s for s in HOLDOUT if s.domain == f"holdout:{topic}"]
        assert len({s.fact for s in mine if s.label != "neither"}) == 12, topic
        assert sum(s.label == "neither" for s in mine) == 6, topic
    assert len(HOLDOUT) == 5 * (48 + 6)


def test_every_fact_has_the_four_forms_with_negation_flipping_the_label() -> None:
    for fact, group in _facts().items():
        assert len(group) == 4, fact
        assert Counter((s.form, s.label) for s in group) == Counter(
            [("plain", "true"), ("plain", "false"), ("negated", "true"), ("negated", "false")]), fact
        for s in group:
            assert s.negated == (s.form == "negated") == ("not" in _words(s.text)), s
        by = {(s.form, s.label): s.text for s in group}
        true_object = _words(by["plain", "true"]) - _words(by["plain", "false"])
        wrong_object = _words(by["plain", "false"]) - _words(by["plain", "true"])
        assert true_object and wrong_object, fact
        # the true negation denies the false claim, the false negation denies the true one
        assert wrong_object <= _words(by["negated", "true"]) and not true_object & _words(by["negated", "true"]), fact
        assert true_object <= _words(by["negated", "false"]) and not wrong_object & _words(by["negated", "false"])


def test_every_topic_has_neither_statements_about_made_up_entities_affirmed_and_negated() -> None:
    for topic in HOLDOUT_TOPICS:
        neither = [s for s in HOLDOUT if s.domain == f"holdout:{topic}" and s.label == "neither"]
        assert {s.form for s in neither} == {"plain", "negated"}, topic
        assert all(s.fact.startswith(f"holdout:{topic}:fictional:") for s in neither), topic
        assert all(s.negated == (s.form == "negated") for s in neither), topic


def test_no_holdout_text_appears_in_the_training_corpus() -> None:
    training = {s.text for s in generate_statements(0)}
    assert not {s.text for s in HOLDOUT} & training


def test_no_two_holdout_statements_share_a_text() -> None:
    duplicates = [t for t, n in Counter(s.text for s in HOLDOUT).items() if n > 1]
    assert not duplicates


def test_statements_are_single_sentences_with_valid_fields_in_a_fixed_order() -> None:
    assert holdout_statements() == HOLDOUT
    for s in HOLDOUT:
        assert s.label in LABELS and s.text[:1].isupper() and s.text.endswith(".") and s.text.count(".") == 1, s
        assert s.domain.startswith("holdout:") and s.fact.startswith(s.domain + ":"), s
        assert s.template == f"{s.domain}/0" and s.form in ("plain", "negated"), s
    labels = Counter(s.label for s in HOLDOUT)
    assert labels["true"] == labels["false"] > labels["neither"] > 0
