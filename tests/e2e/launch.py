"""Starting a real ``guard`` command (``serve``, ``proxy``) as a subprocess for an end-to-end test module.

The contract with the child: it prints ``guard: <ready>`` to stderr once it accepts connections,
and exits 0 after SIGTERM (it stops its engine first).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["free_port", "logged_within", "running_guard"]


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_guard(args: list[str], log_path: Path, ready: str, start_s: float = 600,
                  stop_s: float = 90) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m guard *args`` until the block ends, then stop it with SIGTERM and check it exited 0.

    Args:
        args: the command and its options, e.g. ``["serve", "--port", "8000"]``.
        log_path: where its stdout and stderr go (the failures quote its tail).
        ready: the word after ``guard:`` that says it is serving (``serving``, ``proxying``).
        start_s / stop_s: how long it may take to start / to stop before the test fails / it is killed.

    Example:
        >>> with running_guard(["serve", "--port", str(free_port())], tmp / "log", "serving"):  # doctest: +SKIP
        ...     ...
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "guard", *args], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(process, log_path, f"guard: {ready}", start_s)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=stop_s)
            except subprocess.TimeoutExpired:
                process.kill()
                code = None
    assert code == 0, log_path.read_text()[-3000:]


def logged_within(log_path: Path, *fragments: str, within_s: float = 10.0) -> bool:
    """Whether one line of the child's log holds every one of ``fragments`` within ``within_s`` seconds.

    A server writes its access line after the response has gone out, so a client that has its answer may read
    the log before the line is there: poll it rather than read it once.
    """
    deadline = time.monotonic() + within_s
    while not any(all(part in line for part in fragments) for line in log_path.read_text().splitlines()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _wait_until_ready(process: subprocess.Popen[bytes], log_path: Path, line: str, start_s: float) -> None:
    deadline = time.monotonic() + start_s
    while line not in log_path.read_text():  # the log is the child's only signal; poll it
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, (f"{line!r} did not appear in {start_s:.0f} s:\n"
                                             + log_path.read_text()[-3000:])
        time.sleep(1)
