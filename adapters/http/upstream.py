"""The upstream: vLLM's own OpenAI server as a child process, with the guard's capture switched on.

Cross-process contract: the child is started with ``engine_arguments`` (capture spec in
``additional_config``, float32, vLLM's CPU defaults) and ``GUARD_SCORE_ENDPOINT`` = a fresh
``ipc://`` socket that this process's :class:`ScoreCollector` binds; the engine's workers push
every step's scores there, keyed by the guard key each request carries in ``vllm_xargs``. The
child listens on a free loopback port and serves the model under ``served_name``.

Lifecycle: the child runs on a leash (:mod:`adapters.http.leash`) in a session of its own, so a Ctrl-C
reaches only ``guard serve``, which then stops it (SIGTERM, at most ``ENGINE_GRACE`` seconds, then
SIGKILL to every engine process). The leash kills the whole engine when ``guard serve`` dies, even
by SIGKILL, and ends with the child's status when the child dies, which :meth:`UpstreamServer.watch`
reports. The leash is started from the main thread: the kernel's parent-death signal follows the
thread that started it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from adapters.http import leash
from adapters.http.score_feed import ScoreFeed
from adapters.http.settings import ServeSettings
from adapters.score_channel import ScoreCollector, new_ipc_endpoint
from adapters.vllm.engine import engine_arguments
from adapters.vllm.internals import cpu_thread_binding
from adapters.vllm.server_args import api_server_argv, parse_vllm_args
from guard.config import GuardConfig
from guard.errors import AdapterError

__all__ = ["ENGINE_GRACE", "ReaderMetrics", "UpstreamServer", "guarded_server_argv", "engine_obituary"]

#: seconds vLLM gets to exit after SIGTERM before the leash SIGKILLs its processes (nothing in it needs saving)
ENGINE_GRACE = 2.0
_LEASH_MARGIN = 3.0  # the leash's own clean-up after the grace period (at most 2 s while nothing hangs)
_STDERR = 2  # file descriptor: the child's output goes to this process's stderr, keeping stdout clean


class ReaderMetrics:
    """A Prometheus collector re-exposing a child vLLM server's ``vllm:*`` metrics (guard proxy's reader) on the
    guard's registry: each scrape of guard's ``/metrics`` reads the child's ``/metrics`` (loopback, at most
    ``timeout`` seconds; the page is built off the event loop). A child that does not answer adds nothing:
    ``/healthz`` says it is down.

    Example:
        >>> metrics.registry.register(ReaderMetrics(reader.url))  # doctest: +SKIP
    """

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def collect(self) -> Iterator[Metric]:
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=self.timeout).text
        except httpx.HTTPError:
            return
        for family in text_string_to_metric_families(text):
            if family.name.startswith("vllm:"):
                yield family


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def guarded_server_argv(settings: ServeSettings, probe: str, port: int = 8000,
                        prefix_caching: bool | None = None) -> tuple[str, str, list[str]]:
    """``(score endpoint, model path, argv)`` of vLLM's OpenAI server for ``settings`` with the capture on: guard's
    engine flags, the served name, then the passed-through ``vllm_args`` (checked first: bad or guard-owned flags
    are refused before anything starts).

    Also exports ``GUARD_SCORE_ENDPOINT`` (and, on a CPU with several ranks, the thread binding) into this
    process's environment, which the engine's processes inherit: this process runs one engine.

    Raises:
        ConfigError: passed-through vLLM arguments vLLM or the guard refuses.
    """
    endpoint = new_ipc_endpoint()
    config = GuardConfig.build(model=settings.model, probe=probe, gate=settings.gate if settings.use_gate else None,
                               steering=settings.steering, enforce_eager=settings.enforce_eager,
                               max_model_len=settings.max_model_len, max_num_seqs=settings.max_num_seqs,
                               score_endpoint=endpoint, prefix_caching=prefix_caching)
    kwargs, _, model_path = engine_arguments(config, endpoint)
    given = parse_vllm_args(settings.vllm_args, model_path)
    if (binding := cpu_thread_binding(given.tensor_parallel_size)) is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding
    # no per-request access log in vLLM: the guard writes its own, content-free
    argv = api_server_argv(kwargs, port=port) + ["--served-model-name", settings.served_name,
                                                 "--disable-uvicorn-access-log", *settings.vllm_args]
    return endpoint, model_path, argv


def engine_obituary(codes: Mapping[Any, int | None]) -> str:
    """What to say when the engine ended while serving: each process (PID -> exit code; negative: the signal that
    ended it; ``None``: it stopped answering) and what to do."""
    how = ", ".join(f"(pid {pid}) {_how(code)}" for pid, code in codes.items()) or "(pid unknown) stopped"
    return (f"the vLLM engine {how} while serving, so this server stops too; its log above says why (e.g. out of "
            "memory: lower max_model_len or max_num_seqs). Restart the server, or let a supervisor do it (docker "
            "--restart on-failure, systemd Restart=on-failure)")


def _how(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"


class UpstreamServer:
    """Start, watch and stop vLLM's OpenAI server for ``guard serve``.

    Args:
        settings: model, engine limits, served name and start-up timeout.
        probe: the probe artefact the engine scores with.
        log: where the child's output goes (``None``: this process's stderr).
        prefix_caching: override ``GUARD_PREFIX_CACHING`` (guard proxy's reader needs every prompt
            token scored, so it passes ``False``).

    Example:
        >>> with UpstreamServer(ServeSettings.build(), "probe.safetensors") as up:   # doctest: +SKIP
        ...     up.url, up.feed
    """

    def __init__(self, settings: ServeSettings, probe: str, log: IO[str] | None = None,
                 prefix_caching: bool | None = None) -> None:
        self.settings, self.probe, self.log, self.prefix_caching = settings, probe, log, prefix_caching
        self.url = ""
        self.model_path = ""
        self.feed = ScoreFeed()
        self.collector: ScoreCollector | None = None
        self.engine_pid: int | None = None  #: vLLM's server process (the leash's child), once started
        self.death: str | None = None  #: why the engine ended while not asked to stop, once it did
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the child on a leash and wait until its ``/health`` answers.

        Raises:
            AdapterError: called from a thread other than the main thread, or the child exited or did
                not become healthy within ``startup_timeout``.
        """
        if threading.current_thread() is not threading.main_thread():
            raise AdapterError(f"UpstreamServer.start() was called from thread {threading.current_thread().name!r}; "
                               "call it from the main thread (the engine's parent-death signal follows the thread "
                               "that starts it, so the engine would die with that thread)")
        port = _free_port()
        endpoint, self.model_path, argv = guarded_server_argv(self.settings, self.probe, port, self.prefix_caching)
        self.url = f"http://127.0.0.1:{port}"
        self.collector = ScoreCollector(endpoint, self.feed)
        self._process = subprocess.Popen(leash.command(argv, ENGINE_GRACE),
                                         stdout=self.log if self.log is not None else _STDERR,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_healthy(self._process)
        except BaseException:
            self.stop()
            raise
        self.engine_pid = next(iter(leash.children(self._process.pid)), None)

    def _wait_healthy(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout
        while True:
            code = process.poll()
            if code is not None:
                raise AdapterError(f"the vLLM server exited with status {code} while starting; its log (stderr, or "
                                   "the upstream log) says why. Common causes: not enough memory for the KV cache "
                                   "(lower max_model_len or GUARD_KV_CACHE_GIB) or a probe made for another model")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise AdapterError(f"the vLLM server did not become healthy in {self.settings.startup_timeout:.0f} s; "
                                   "raise startup_timeout (GUARD_STARTUP_TIMEOUT) or check its log")
            try:
                process.wait(timeout=1.0)  # returns early if the child dies
            except subprocess.TimeoutExpired:
                continue

    def healthy(self) -> bool:
        """Whether the child's ``/health`` answers 200 now."""
        try:
            return httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def watch(self, on_death: Callable[[], None]) -> None:
        """Call ``on_death()`` (from a watcher thread) if the engine ends before :meth:`stop`; :attr:`death`
        then says how and what to do.

        Example:
            >>> up.watch(lambda: print(up.death))  # doctest: +SKIP
        """
        process = self._process
        if process is None:
            raise AdapterError("UpstreamServer.watch() was called before start(); start the engine first")

        def wait() -> None:
            try:
                os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # leaves reaping to Popen
            except ChildProcessError:  # already reaped: stop() did it
                pass
            if not self._stopping:
                self.death = self._obituary(process.wait())
                on_death()

        threading.Thread(target=wait, name="guard-engine-watch", daemon=True).start()

    def _obituary(self, status: int) -> str:
        return engine_obituary({self.engine_pid if self.engine_pid is not None else "unknown": status})

    def stop(self) -> None:
        """Stop the engine and the collector: SIGTERM to the leash, which gives vLLM ``ENGINE_GRACE`` seconds,
        then SIGKILLs every engine process; SIGKILL to the whole group if the leash itself has not ended."""
        self._stopping = True
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=ENGINE_GRACE + _LEASH_MARGIN)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left, the leash included
            except ProcessLookupError:  # the group is already empty: a clean shutdown
                pass
            try:
                process.wait(timeout=_LEASH_MARGIN)
            except subprocess.TimeoutExpired:  # stuck in the kernel; the SIGKILL ends it once it returns
                pass
        if self.collector is not None:
            self.collector.close()
            self.collector = None

    def __enter__(self) -> UpstreamServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
