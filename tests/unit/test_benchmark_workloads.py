"""Benchmark workloads are fixed: the same seed gives the same statements, every label represented."""

from __future__ import annotations

import pytest

from benchmarks.collection import sample_statements


def test_collection_sample_is_seeded_and_covers_every_label_evenly():
    sample = sample_statements(256, seed=0)
    assert [s.text for s in sample] == [s.text for s in sample_statements(256, seed=0)]
    assert len({s.text for s in sample}) == 256
    counts = {label: sum(s.label == label for s in sample) for label in ("true", "false", "neither")}
    assert counts == {"true": 86, "false": 85, "neither": 85}


@pytest.mark.parametrize("n", [2, 10_000])
def test_collection_sample_names_the_valid_range_for_an_impossible_n(n):
    with pytest.raises(ValueError, match=rf"n={n} .*pass an --n between 3 and"):
        sample_statements(n)
