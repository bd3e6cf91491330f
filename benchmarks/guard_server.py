"""A ``guard serve`` subprocess for benchmarks: started on a free loopback port, stopped on exit.

It runs exactly as a user starts it (``python -m guard serve``), with the probe and gate shipped for
the default model, from a YAML settings file written to a temporary folder. Its log (vLLM's
included) goes to a file there, so stdout and stderr stay the benchmark's; a failed start shows the
log's tail. vLLM's own app over the same engine also answers, unguarded, on a loopback port (``--engine-port``):
``/healthz`` names it as the upstream.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SERVED_NAME", "guard_serve"]

SERVED_NAME = "smollm2"
_READY = "guard: serving"
_STOP_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _failed(log: Path, why: str) -> RuntimeError:
    """An error naming a kept copy of the log (the temporary folder goes) and showing its tail."""
    kept = Path(tempfile.mkstemp(prefix="guard-bench-serve-", suffix=".log")[1])
    kept.write_text(text := log.read_text(errors="replace"))
    return RuntimeError(f"guard serve {why}; its full log is kept at {kept}, and ends:\n{text[-3000:]}")


def _wait_ready(process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _READY not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise _failed(log, f"exited with status {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise _failed(log, f"did not start in {timeout:.0f} s")
        try:
            process.wait(timeout=1.0)  # returns at once if it dies
        except subprocess.TimeoutExpired:
            continue


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # guard serve stops its engine on SIGTERM
    try:
        process.wait(timeout=_STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def guard_serve(*, eager: bool = False, max_num_seqs: int = 8, max_model_len: int = 1024,
                startup_timeout: float = 900.0) -> Iterator[tuple[str, int]]:
    """Start ``guard serve`` and yield its base URL and process id; stop it (SIGTERM) on exit.

    Args:
        eager: start the engine without torch.compile (``--eager``: a faster start).
        max_num_seqs / max_model_len: engine limits.
        startup_timeout: seconds to wait for it to accept requests.

    Raises:
        RuntimeError: it exited or did not accept requests in time (the message holds its log's tail).

    Example:
        >>> with guard_serve(eager=True) as (url, pid):  # doctest: +SKIP
        ...     httpx.get(f"{url}/healthz").json()["upstream"]["url"]
    """
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        config, log_path = Path(tmp) / "serve.yaml", Path(tmp) / "serve.log"
        config.write_text(f"served_model_name: {SERVED_NAME}\nmax_model_len: {max_model_len}\n"
                          f"max_num_seqs: {max_num_seqs}\n")
        port = _free_port()
        # vLLM's own app over the same engine, unguarded, on loopback: what a benchmark's "direct" path calls
        argv = [sys.executable, "-m", "guard", "serve", "--port", str(port), "--config", str(config),
                "--engine-port", str(_free_port())]
        print(f"starting {' '.join(argv[1:])}{' --eager' if eager else ''}", file=sys.stderr, flush=True)
        with open(log_path, "w") as log:
            process = subprocess.Popen(argv + (["--eager"] if eager else []), stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_ready(process, log_path, startup_timeout)
                yield f"http://127.0.0.1:{port}", process.pid
            finally:
                _stop(process)
