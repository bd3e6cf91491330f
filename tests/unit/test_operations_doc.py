"""docs/operations.md is the one table of error codes and metrics: every code the servers can answer with,
every metric and every label value they can record appear there, and the table names nothing they lack."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from adapters.http.errors import NONFINITE_CODES
from guard.metrics import (
    ABSTAIN_REASONS,
    GUARD_FAILURES,
    NONFINITE_SOURCES,
    UPSTREAM_ERRORS,
    GuardMetrics,
)
from guard.verdicts import AbstainReason

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()
SERVER = "\n".join(p.read_text() for p in sorted((ROOT / "adapters" / "http").rglob("*.py")))


def _codes_in_code() -> set[str]:
    codes = set(re.findall(r'\bcode="([a-z_]+)"', SERVER)) | set(NONFINITE_CODES)
    codes |= {f"upstream_{kind}" for kind in re.findall(r'\bUpstreamError\(\s*"([a-z_]+)"', SERVER)}
    codes.add("internal_error")  # in the shared body of an internal error, not as code="..."
    # ReaderError's "reader_failed" never reaches a client: guard proxy turns it into a guard failure
    return codes


def _metric_rows() -> dict[str, str]:
    section = DOC.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `guard_"):
            cell = line.split("|")[1]
            for name in re.findall(r"`(guard_[a-z_]+)", cell):
                rows[name] = line
    return rows


def test_every_error_code_the_servers_answer_with_is_in_the_operations_doc():
    missing = sorted(code for code in _codes_in_code() if f"`{code}`" not in DOC)
    assert not missing, f"add these error codes to docs/operations.md: {missing}"


def test_every_code_the_doc_names_exists_in_the_code():
    named = set(re.findall(r"\d{3} `([a-z_]+)`", DOC)) | set(re.findall(r"error event `([a-z_]+)`", DOC))
    assert named and named <= _codes_in_code(), sorted(named - _codes_in_code())


def test_the_metrics_table_lists_exactly_the_registered_metrics():
    exposed = set()
    for family in GuardMetrics().registry.collect():
        exposed.add(family.name + {"counter": "_total", "info": "_info"}.get(family.type, ""))
    assert set(_metric_rows()) == exposed


@pytest.mark.parametrize(("metric", "values"), [
    ("guard_upstream_errors_total", UPSTREAM_ERRORS),
    ("guard_abstentions_total", ABSTAIN_REASONS),
    ("guard_nonfinite_scores_total", NONFINITE_SOURCES),
    ("guard_failures_total", GUARD_FAILURES),
])
def test_each_labelled_metric_row_names_exactly_the_label_values_the_code_records(metric, values):
    row = _metric_rows()[metric].split("|")[3]
    others = set(_metric_rows()) | _codes_in_code() | {"fail_open", "fail_closed"}
    named = {v for v in re.findall(r"`([a-z_]+)`", row) if v not in others}
    assert named == set(values)


def test_abstention_reasons_are_exactly_the_kinds_an_abstention_can_have():
    kinds = typing.get_args(AbstainReason.model_fields["kind"].annotation)
    assert set(kinds) == set(ABSTAIN_REASONS)
