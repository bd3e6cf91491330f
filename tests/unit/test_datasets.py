from __future__ import annotations

import numpy as np
import pytest

from calibration.pipeline import split_indices
from calibration.statements import LABELS, generate_qa, generate_statements
from calibration.user_files import load_qa, load_statements
from guard.errors import DataError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_statements_load_from_csv_and_jsonl_alike(tmp_path):
    csv = _write(tmp_path, "s.csv", "statement,label\nParis is in France.,true\nParis is in Peru.,FALSE\n"
                                    "Zorblax is tall.,neither\n")
    jsonl = _write(tmp_path, "s.jsonl", '{"statement": "Paris is in France.", "label": "true"}\n\n'
                                         '{"statement": "Paris is in Peru.", "label": "false"}\n')
    assert [(s.text, s.label) for s in load_statements(csv)] == [
        ("Paris is in France.", "true"), ("Paris is in Peru.", "false"), ("Zorblax is tall.", "neither")]
    assert [s.label for s in load_statements(jsonl)] == ["true", "false"]


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("a.csv", "text,label\nx,true\n", r"a.csv:1: .*lacks column\(s\) \['statement'\]"),
        ("b.csv", "statement,label\nx,maybe\n", r"b.csv:2: label 'maybe' is not one of \['true', 'false', 'neither'\]"),
        ("c.csv", "", r"is empty; expected statement, label"),
        ("d.csv", "statement,label\nx,true\ny,false\nx,false\n", r"d.csv:4: duplicate of line 2"),
        ("e.csv", "statement,label\n", r"has a header but no rows"),
        ("f.jsonl", '{"statement": "x"}\n', r"f.jsonl:1: missing field\(s\) \['label'\]"),
        ("g.jsonl", "[1, 2]\n", r"g.jsonl:1: expected a JSON object"),
        ("h.jsonl", "{oops\n", r"h.jsonl:1: not valid JSON"),
        ("i.csv", "statement,label\n ,true\n", r"i.csv:2: empty statement"),
    ],
)
def test_bad_statement_files_name_line_value_and_expectation(tmp_path, name, text, match):
    with pytest.raises(DataError, match=match):
        load_statements(_write(tmp_path, name, text))


def test_qa_answers_split_on_bars_and_bad_rows_are_named(tmp_path):
    good = _write(tmp_path, "qa.csv", "question,answers\nCapital of France?,Paris| City of Paris \n")
    assert load_qa(good)[0].answers == ("Paris", "City of Paris")
    with pytest.raises(DataError, match=r"qa2.csv:2: no accepted answers"):
        load_qa(_write(tmp_path, "qa2.csv", "question,answers\nCapital of France?, | \n"))
    with pytest.raises(DataError, match=r"qa3.jsonl:2: duplicate of line 1"):
        load_qa(_write(tmp_path, "qa3.jsonl", '{"question": "q", "answers": ["a"]}\n'
                                              '{"question": "q", "answers": "b"}\n'))


def test_missing_file_is_a_data_error_naming_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.csv"):
        load_statements(tmp_path / "nope.csv")


def test_generated_statements_cover_three_labels_and_several_domains_without_duplicates():
    items = generate_statements(0)
    assert {s.label for s in items} == set(LABELS)
    assert len({s.domain for s in items}) >= 5
    assert len({s.text for s in items}) == len(items)
    assert generate_statements(0) == items  # deterministic for a seed
    assert all(q.answers for q in generate_qa(0))


def test_split_is_disjoint_stratified_and_complete():
    labels = np.array([LABELS.index(s.label) for s in generate_statements(0)])
    train, cal, test = split_indices(labels, seed=0)
    assert not set(train) & set(cal) and not set(train) & set(test) and not set(cal) & set(test)
    assert len(train) + len(cal) + len(test) == len(labels)
    for c in range(3):
        frac = np.mean(labels[train] == c) - np.mean(labels == c)
        assert abs(frac) < 0.02


def test_grouped_split_keeps_every_fact_in_one_split():
    from calibration.pipeline import dataset_splits

    statements = generate_statements(0)
    splits = dataset_splits(statements, unknown=set(), seed=0)
    facts = [{statements[i].fact for i in part} for part in (splits.train, splits.cal, splits.test)]
    assert not facts[0] & facts[1] and not facts[0] & facts[2] and not facts[1] & facts[2]
    assert any(statements[i].negated for i in splits.train)  # negations train by default
    off = dataset_splits(statements, unknown=set(), seed=0, negations=False)
    assert not any(statements[i].negated for part in (off.train, off.cal, off.test) for i in part)


def test_unknown_facts_leave_the_splits_but_are_flagged():
    from calibration.pipeline import dataset_splits

    statements = generate_statements(0)
    unknown = {s.fact for s in statements if s.domain == "arithmetic"}
    splits = dataset_splits(statements, unknown, seed=0)
    used = set(np.concatenate([splits.train, splits.cal, splits.test]).tolist())
    flagged = set(np.flatnonzero(splits.is_unknown).tolist())
    assert flagged and not used & flagged
    assert all(statements[i].domain == "arithmetic" for i in flagged)


def test_best_window_picks_the_highest_mean_run_of_consecutive_layers():
    from calibration.pipeline import best_window

    aurocs = {2: 0.6, 4: 0.9, 6: 0.7, 8: 0.85, 10: 0.86, 12: 0.5}
    assert best_window(aurocs, 1) == (4,)
    assert best_window(aurocs, 3) == (4, 6, 8)  # mean 0.817 beats (6, 8, 10) at 0.803
    assert best_window(aurocs, 99) == (2, 4, 6, 8, 10, 12)  # capped at the sweep
