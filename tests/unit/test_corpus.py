"""The generated corpus: broad (relations x templates x forms), correctly labelled, balanced and reproducible."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict

import pytest

from calibration.number_words import number_words
from calibration.relation import Fact, Relation, Value, sentence_case
from calibration.statements import FORMS, LABELS, RELATIONS, Statement, generate_qa, generate_statements
from calibration.templates import CATALOGUE

CORPUS = generate_statements(0)
BY_NAME = {r.name: r for r in CATALOGUE}
NUMERIC = ("arithmetic", "comparison", "unit", "atomic_number", "legs")
COMPOUND = ("conjunction", "disjunction")
NUMBER_WORD = re.compile(r"\b(zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|[a-z]+teen|"
                         r"twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand)\b", re.I)


def _of(relation: str, corpus: list[Statement] = CORPUS) -> list[Statement]:
    return [s for s in corpus if s.domain == relation]


def _real(statements: list[Statement]) -> list[Statement]:
    """True and false statements about real facts, compounds left out."""
    return [s for s in statements if s.label != "neither" and s.form not in COMPOUND]


def _wrong_candidates(relation: Relation, fact: Fact) -> set[Value]:
    out: set[Value] = set(relation.answers) | set(fact.slots.values())
    if isinstance(fact.answer, int):
        out |= set(range(max(0, fact.answer - 40), fact.answer + 41))
    return out - {fact.answer}


def test_there_are_at_least_sixteen_relations_each_with_enough_facts():
    assert len(RELATIONS) >= 16 and len(set(RELATIONS)) == len(RELATIONS)
    assert {s.domain for s in CORPUS} == set(RELATIONS)
    small = {r.name: len(r.facts) for r in CATALOGUE if len(r.facts) < 25}
    assert all(n >= 12 for n in small.values()) and len(small) <= 2, small


def test_every_relation_has_four_templates_including_a_question_answer_one_and_uses_them_all():
    for relation in CATALOGUE:
        assert len(relation.templates) >= 4, relation.name
        assert any(t.qa for t in relation.templates), relation.name
        used = {s.template for s in _of(relation.name)}
        assert used == {relation.template_id(k) for k in range(len(relation.templates))}, relation.name
        assert any(s.form == "qa" for s in _of(relation.name)), relation.name


def test_statement_fields_are_consistent():
    for s in CORPUS:
        assert s.label in LABELS and s.form in FORMS and s.domain in RELATIONS
        assert s.negated == (s.form == "negated")
        domain, index = s.template.split("/")
        assert domain == s.domain and 0 <= int(index) < len(BY_NAME[domain].templates)
        prefix = f"fictional:{s.domain}:" if s.label == "neither" else f"{s.domain}:"
        assert s.fact.startswith(prefix), s


def test_each_fact_and_template_gives_true_false_and_both_negations_that_flip_the_labels():
    for relation in CATALOGUE:
        facts = {relation.fact_id(f): f for f in relation.facts}
        groups: dict[tuple[str, str], list[Statement]] = defaultdict(list)
        for s in _real(_of(relation.name)):
            groups[s.fact, s.template].append(s)
        assert len(groups) == 2 * len(facts), relation.name  # templates_per_fact=2
        for (fact_id, template), group in groups.items():
            fact, index = facts[fact_id], int(template.split("/")[1])
            by_kind = {(s.negated, s.label): s for s in group}
            assert len(group) == 4 and len(by_kind) == 4, group
            assert by_kind[False, "true"].text == relation.say(index, fact.slots, fact.answer)
            assert by_kind[True, "false"].text == relation.say(index, fact.slots, fact.answer, negated=True)
            wrong = [w for w in _wrong_candidates(relation, fact)
                     if relation.say(index, fact.slots, w) == by_kind[False, "false"].text]
            assert len(wrong) == 1, by_kind[False, "false"]
            assert by_kind[True, "true"].text == relation.say(index, fact.slots, wrong[0], negated=True)


def test_negated_question_answer_forms_answer_no():
    for relation in CATALOGUE:
        qa = [k for k, t in enumerate(relation.templates) if t.qa]
        negated = [s for s in _of(relation.name) if s.negated and int(s.template.split("/")[1]) in qa]
        assert negated and all(s.text.startswith("Q: ") and s.text.endswith(" A: No.") for s in negated)


def test_every_relation_has_neither_statements_about_made_up_entities_at_about_a_sixth():
    for relation in CATALOGUE:
        statements = _of(relation.name)
        neither = [s for s in statements if s.label == "neither"]
        assert 0.14 <= len(neither) / len(statements) <= 0.21, relation.name
        assert {s.negated for s in neither} == {False, True}, relation.name
        assert not {s.fact for s in neither} & {s.fact for s in statements if s.label != "neither"}
        subjects = re.compile("|".join(rf"\b{re.escape(f.key)}\b" for f in relation.facts if len(f.key) > 4))
        assert not [s.text for s in neither if subjects.search(s.text)], relation.name


def test_numbers_appear_both_as_digits_and_as_words():
    for name in NUMERIC:
        texts = [s.text for s in _real(_of(name))]
        assert any(re.search(r"\d", t) for t in texts), name
        assert any(not re.search(r"\d", t) and NUMBER_WORD.search(t) for t in texts), name


def _components(compound: Statement, affirmatives: dict[str, Statement]) -> list[tuple[Statement, Statement]]:
    """Every way to read ``compound`` as two of the corpus's affirmatives joined by its connective."""
    word = " and " if compound.form == "conjunction" else " or "
    out = []
    for match in re.finditer(re.escape(word), compound.text):
        left, right = compound.text[: match.start()] + ".", sentence_case(compound.text[match.end():])
        if left in affirmatives and right in affirmatives:
            out.append((affirmatives[left], affirmatives[right]))
    return out


def test_compound_labels_follow_the_truth_tables_of_their_components():
    for relation in CATALOGUE:
        statements = _of(relation.name)
        affirmatives = {s.text: s for s in statements if s.form == "plain" and s.label != "neither"}
        compounds = [s for s in statements if s.form in COMPOUND]
        assert 0.03 <= len(compounds) / len(statements) <= 0.07, relation.name
        for kind in COMPOUND:
            assert {s.label for s in compounds if s.form == kind} == {"true", "false"}, (relation.name, kind)
        for compound in compounds:
            readings = _components(compound, affirmatives)
            assert len(readings) == 1, compound
            first, second = readings[0]
            assert first.fact == compound.fact != second.fact
            assert first.template == second.template == compound.template
            a, b = first.label == "true", second.label == "true"
            truth = (a and b) if compound.form == "conjunction" else (a or b)
            assert compound.label == ("true" if truth else "false"), compound
            assert not compound.negated


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty-two"), (100, "one hundred"),
    (115, "one hundred fifteen"), (1969, "one thousand nine hundred sixty-nine"), (2000, "two thousand"),
    (9999, "nine thousand nine hundred ninety-nine"),
])
def test_number_words_spells_known_values(n, words):
    assert number_words(n) == words


@pytest.mark.parametrize("bad", [-1, 10000, 2.5, True])
def test_number_words_refuses_what_it_cannot_spell(bad):
    with pytest.raises(ValueError, match="0 to 9999"):
        number_words(bad)


def test_generation_is_deterministic_for_a_seed_and_varies_across_seeds():
    assert generate_statements(0) == CORPUS
    other = generate_statements(1)
    assert other != CORPUS and {s.fact for s in _real(other)} == {s.fact for s in _real(CORPUS)}


@pytest.mark.parametrize("seed, per_fact", [(0, 2), (1, 1), (3, 3), (5, 9)])
def test_no_text_appears_twice_so_none_has_two_labels(seed, per_fact):
    statements = generate_statements(seed, templates_per_fact=per_fact)
    repeated = [t for t, n in Counter(s.text for s in statements).items() if n > 1]
    assert repeated == []


def test_templates_per_fact_sets_how_many_wordings_each_fact_gets():
    one = generate_statements(0, templates_per_fact=1)
    per_fact = Counter(s.fact for s in _real(one))
    assert set(per_fact.values()) == {4}
    with pytest.raises(ValueError, match="at least 1"):
        generate_statements(0, templates_per_fact=0)


def test_true_and_false_are_balanced_overall_and_per_relation():
    counts = Counter(s.label for s in CORPUS)
    assert 0.45 <= counts["true"] / (counts["true"] + counts["false"]) <= 0.55
    for name in RELATIONS:
        labels = Counter(s.label for s in _of(name))
        assert 0.4 <= labels["true"] / (labels["true"] + labels["false"]) <= 0.6, name


def test_the_corpus_has_five_to_nine_thousand_statements():
    assert 5000 <= len(CORPUS) <= 9000


def test_generate_qa_is_unchanged_for_seed_0():
    # the items' question, answers and domain as they were written before QAItem gained optional fields
    said = ", ".join(f"QAItem(question={q.question!r}, answers={q.answers!r}, domain={q.domain!r})"
                     for q in generate_qa(0))
    digest = hashlib.sha256(f"[{said}]".encode()).hexdigest()
    assert digest == "51c8914b15d0a695fb831e750841825960e47d65263996ca69d280599e99a0a4"
