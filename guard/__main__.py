"""The ``guard`` console script: checks the ``adapters`` package is guard's, then runs the CLI.

This launcher is the one place the core reaches outward, and only at run time: ``import guard``
never imports it.
"""

from __future__ import annotations

import importlib
import sys

from guard.errors import GuardError
from guard.layout import require_own_adapters


def main(argv: list[str] | None = None) -> int:
    """Run the ``guard`` command line."""
    try:
        require_own_adapters()
    except GuardError as exc:
        print(f"guard: error: {exc}", file=sys.stderr)
        return 2
    cli = importlib.import_module("adapters.cli")
    return int(cli.main(argv))


if __name__ == "__main__":
    sys.exit(main())
