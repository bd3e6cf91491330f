"""Where a benchmark's result goes: printed for people, and written as JSON when asked."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["save_record", "finite", "timed_record"]


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float inside it replaced by ``None`` (strict JSON has neither).

    Example:
        >>> finite({"risk": float("nan"), "n": [1.0, float("inf")]})
        {'risk': None, 'n': [1.0, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def save_record(out: str | None, record: dict[str, Any], summary: str, indent: int = 2) -> None:
    """Print ``summary`` and, with ``out``, write ``record`` there as strict JSON.

    NaN becomes ``null``; the folder of ``out`` is created when missing.
    """
    print(summary)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(finite(record), indent=indent, allow_nan=False) + "\n")


def timed_record(command: str, machine: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A record of ``measure()``'s results: the command that ran it, the machine, then the results, then
    ``wall_s``, the seconds it took.

    Example:
        >>> timed_record("python -m x", {"cpu": "?"}, lambda: {"n": 1})["n"]
        1
    """
    started = time.time()
    record = {"command": command, "machine": machine, **measure()}
    record["wall_s"] = round(time.time() - started, 1)
    return record
