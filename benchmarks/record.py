"""Where a benchmark's result goes: printed for people, and written as JSON when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["save_record"]


def save_record(out: str | None, record: dict[str, Any], summary: str, indent: int = 2) -> None:
    """Print ``summary`` and, with ``out``, write ``record`` there as JSON (creating its folder)."""
    print(summary)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=indent) + "\n")
