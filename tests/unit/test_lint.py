"""ruff and mypy, configured in pyproject.toml, find nothing: the README's test command enforces both.

mypy keeps its cache in the repository's ``.mypy_cache`` (ignored by git): a cold run takes a minute or
two, a warm one seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_ruff_finds_no_lint_or_import_order_problem():
    out = _run("ruff", "check", "--no-fix", "--output-format", "concise", ".")
    assert out.returncode == 0, f"ruff check . failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"


def test_mypy_finds_no_type_error_in_guard_adapters_or_calibration():
    out = _run("mypy")  # files and strictness from [tool.mypy]
    assert out.returncode == 0, f"mypy failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
