"""Users' own datasets: statements (``statement,label``) and QA items (``question,answers``).

CSV (with a header row) or JSONL (one object per line). Labels are ``true``, ``false`` or
``neither``; accepted answers are separated by ``|``. Every problem is reported with the file,
the line, the bad value and what was expected.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from calibration.statements import LABELS, QAItem, Statement
from guard.errors import DataError

__all__ = ["load_statements", "load_qa"]


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc.strerror}; check the path") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    if not text.strip():
        raise DataError(f"{str(path)!r} is empty; expected {', '.join(columns)} rows")
    if path.suffix.lower() in (".jsonl", ".json"):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path.name}:{lineno}: not valid JSON ({exc.msg}); "
                                "expected one object per line") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path.name}:{lineno}: expected a JSON object with {list(columns)}, "
                                f"got {type(row).__name__}")
            missing = [c for c in columns if c not in row]
            if missing:
                raise DataError(f"{path.name}:{lineno}: missing field(s) {missing}; each line needs {list(columns)}")
            yield lineno, row
        return
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path.name}:1: header {reader.fieldnames} lacks column(s) {missing}; "
                        f"expected a header with {list(columns)}")
    for lineno, row in enumerate(reader, start=2):
        yield lineno, dict(row)


def load_statements(path: str | Path, domain: str = "user") -> list[Statement]:
    """Read labelled statements.

    Raises:
        DataError: unreadable or empty file, missing column, unknown label, empty text, duplicate row.
    """
    path = Path(path)
    out: list[Statement] = []
    seen: dict[str, int] = {}
    for lineno, row in _rows(path, ("statement", "label")):
        text = str(row["statement"] or "").strip()
        label = str(row["label"] or "").strip().lower()
        if not text:
            raise DataError(f"{path.name}:{lineno}: empty statement; every row needs text")
        if label not in LABELS:
            raise DataError(f"{path.name}:{lineno}: label {row['label']!r} is not one of {list(LABELS)}")
        if text in seen:
            raise DataError(f"{path.name}:{lineno}: duplicate of line {seen[text]} ({text!r}); remove one")
        seen[text] = lineno
        out.append(Statement(text, label, domain, fact=text))
    if not out:
        raise DataError(f"{str(path)!r} has a header but no rows")
    return out


def load_qa(path: str | Path, domain: str = "user") -> list[QAItem]:
    """Read closed-book QA items; ``answers`` holds accepted answers separated by ``|``.

    Raises:
        DataError: unreadable or empty file, missing column, empty question or answers, duplicate question.
    """
    path = Path(path)
    out: list[QAItem] = []
    seen: dict[str, int] = {}
    for lineno, row in _rows(path, ("question", "answers")):
        question = str(row["question"] or "").strip()
        raw = row["answers"]
        parts = raw if isinstance(raw, list) else str(raw or "").split("|")
        answers = tuple(a.strip() for a in parts if str(a).strip())
        if not question:
            raise DataError(f"{path.name}:{lineno}: empty question")
        if not answers:
            raise DataError(f"{path.name}:{lineno}: no accepted answers; give them as 'Paris|City of Paris'")
        if question in seen:
            raise DataError(f"{path.name}:{lineno}: duplicate of line {seen[question]} ({question!r}); remove one")
        seen[question] = lineno
        out.append(QAItem(question, answers, domain))
    if not out:
        raise DataError(f"{str(path)!r} has a header but no rows")
    return out
