"""Checks that guard's sibling packages are guard's own and not same-named packages from PyPI.

``adapters`` collides with AdapterHub's PyPI package of that name. Whichever comes first on
``sys.path`` wins, so launchers call :func:`require_own_adapters` before importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from guard.errors import GuardError

__all__ = ["require_own_adapters"]

_MARKER = "__guard_adapters__ = True"


def require_own_adapters() -> None:
    """Fail with a clear message unless ``import adapters`` would load guard's package.

    Raises:
        GuardError: ``adapters`` is missing or is another project's package (e.g. AdapterHub).
    """
    spec = importlib.util.find_spec("adapters")
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    try:
        ours = origin is not None and _MARKER in origin.read_text(encoding="utf-8")
    except OSError:
        ours = False
    if not ours:
        raise GuardError(
            f"the top-level package 'adapters' resolves to {str(origin)!r}, which is not guard's "
            "(PyPI's AdapterHub package has the same name and shadows it); run "
            "`pip uninstall adapters` in this environment or use a separate virtual environment for guard"
        )
