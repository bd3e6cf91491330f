"""Progress of calibration's long loops on stderr: one bar per loop with count, rate and ETA, and status notes.

Every long step of ``guard calibrate``, ``guard evaluate``, ``guard evaluate-qa``, ``guard calibrate-answers`` and
``guard steer build`` (activation batches, per-layer and per-fold fits, generation batches) reports through
:class:`Progress`; the commands' ``--quiet`` runs them inside :func:`quiet`, which silences bars and notes alike.
Bars are tqdm's, drawn on stderr (stdout keeps the commands' tables and JSON) every half second on a terminal,
and every :data:`LOG_INTERVAL_S` seconds when stderr is a file or pipe, so a CI log gets a line now and then rather
than thousands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "quiet", "is_quiet", "note", "add_quiet_option", "TTY_INTERVAL_S", "LOG_INTERVAL_S"]

#: seconds between redraws on a terminal
TTY_INTERVAL_S = 0.5
#: seconds between lines when stderr is not a terminal (a log file, a pipe)
LOG_INTERVAL_S = 30.0

_QUIET: ContextVar[bool] = ContextVar("guard_calibration_quiet", default=False)


@contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silence every :class:`Progress` bar and :func:`note` inside the block (``enabled=False``: leave them on).

    Example:
        >>> with quiet():
        ...     note("calibrate", "not shown")
    """
    token = _QUIET.set(enabled)
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    """Whether the caller runs inside :func:`quiet`."""
    return _QUIET.get()


def add_quiet_option(parser: Any) -> None:
    """Add ``--quiet`` to a command's ``argparse`` parser; its handler runs the command inside :func:`quiet`."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines on stderr")


def note(step: str, message: str, file: TextIO | None = None) -> None:
    """One status line ``STEP: MESSAGE`` on stderr (nothing inside :func:`quiet`)."""
    if not is_quiet():
        print(f"{step}: {message}", file=file or sys.stderr, flush=True)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class Progress:
    """A progress bar: ``LABEL: 42%|####      | 210/500 [00:31<00:43, 6.71statements/s]``.

    Use it as a context manager and call :meth:`update` after each batch; it closes (drawing the final count)
    on exit. Inside :func:`quiet` it draws nothing.

    Args:
        total: the count at completion (``None``: unknown; count and rate only).
        label: what the loop does, e.g. ``"collecting activations (vLLM)"``.
        unit: what is counted (``statements``, ``fits``, ``questions``).
        file: where to draw (default: ``sys.stderr`` at construction).
        interval: seconds between redraws (default: :data:`TTY_INTERVAL_S` on a terminal, else
            :data:`LOG_INTERVAL_S`).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(3, "fitting", unit="fits", file=out, interval=0) as bar:
        ...     bar.update(3)
        >>> "3/3" in out.getvalue() and "fits/s" in out.getvalue()
        True
    """

    def __init__(self, total: int | None, label: str, unit: str = "it", file: TextIO | None = None,
                 interval: float | None = None) -> None:
        from tqdm import tqdm

        stream = file or sys.stderr
        if interval is None:
            interval = TTY_INTERVAL_S if _is_terminal(stream) else LOG_INTERVAL_S
        self._bar = tqdm(total=total, desc=label, unit=unit, file=stream, mininterval=interval, miniters=1,
                         disable=is_quiet(), dynamic_ncols=_is_terminal(stream), ascii=not _is_terminal(stream))

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done."""
        self._bar.update(n)

    def close(self) -> None:
        """Draw the final state and stop."""
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
