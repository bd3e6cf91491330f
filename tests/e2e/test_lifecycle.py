"""The engine's lifecycle end to end, with real `guard serve` processes, a real vLLM engine and real signals.

`guard serve` runs vLLM's app in its own process; vLLM's engine core (and its workers) run in processes it
starts. Claims: an engine core that dies (SIGKILL) stops guard serve with exit status 2 and a log line that
says why, within seconds, leaving no engine process; SIGKILL of guard serve leaves no engine process either
(the engine core is tethered to it); SIGTERM with a long stream running exits 0 within the drain deadline plus
the engine's bounded stop, and ends the stream with an error event and ``[DONE]``; a client that leaves a
non-streamed request makes the engine stop generating it (vLLM's own metrics, on guard serve's /metrics).
Engine processes are found through /proc by PID, never by name. Each start of the engine costs a minute or two
on a CPU, so the server the one non-destructive test uses is shared (:class:`_Servers`); a test that ends a
server takes it for itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.launch import free_port

pytestmark = pytest.mark.e2e

MODEL = "smollm2"
DRAIN_S = 2.0  # --shutdown-timeout of every server here
STOP_S = 3.0  # what stopping the engine after the drain may take
LONG = 1800  # max_tokens of a request that would run for minutes on a CPU (with ignore_eos)
PROMPT = "Write a very long story about a lighthouse keeper."


@dataclass
class _Guard:
    """A running `guard serve` and what the tests read about it."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    started: tuple[int, ...] = ()  #: every process under it once it serves (engine core, workers)
    #: (GET /livez, GET /readyz) status codes and statuses seen while it started, before it said it serves
    starting: list[tuple[int, str, int, str]] = field(default_factory=list)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def engine(self) -> list[int]:
        """Every live process under guard serve (vLLM's engine core, its workers), by PID."""
        return _descendants(self.process.pid)


class _Servers:
    """Starts `guard serve` when a test needs one; ``shared()`` reuses a live one, ``take()`` hands it over."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.current, self.started = tmp, None, []
        self.config = tmp / "serve.yaml"
        self.config.write_text(f"served_model_name: {MODEL}\nmax_model_len: 2048\nmax_num_seqs: 4\n")

    def shared(self) -> _Guard:
        if self.current is None or self.current.process.poll() is not None:
            self.current = self._start()
        return self.current

    def take(self) -> _Guard:
        guard, self.current = self.shared(), None
        return guard

    def _start(self) -> _Guard:
        port, log = free_port(), self.tmp / f"serve-{len(self.started)}.log"
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "-m", "guard", "serve", "--eager", "--no-gate", "--port",
                                        str(port), "--config", str(self.config), "--shutdown-timeout", str(DRAIN_S)],
                                       stdout=out, stderr=subprocess.STDOUT)
        guard = _Guard(process, f"http://127.0.0.1:{port}", log)
        self.started.append(guard)

        def serving() -> bool:
            if "guard: serving" in log.read_text() or process.poll() is not None:
                return True
            status = _probe_status(guard.url)
            if "guard: serving" in log.read_text():  # the app may have taken the port while it was polled
                return True
            guard.starting.append(status)
            return False

        assert _within(600, serving, 1.0)
        assert process.poll() is None, guard.tail()
        guard.started = tuple(guard.engine())
        return guard

    def close(self) -> None:
        """SIGKILL whatever a failed test left running: guard serve and its engine's processes."""
        for guard in self.started:
            guard.process.kill()
            guard.process.wait()
            for pid in guard.started:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    pool = _Servers(tmp_path_factory.mktemp("lifecycle"))
    yield pool
    pool.close()


def _probe_status(url: str) -> tuple[int, str, int, str]:
    """``(status, body status)`` of GET /livez and GET /readyz (0 and "" where nothing answered)."""
    out: list[Any] = []
    for path in ("/livez", "/readyz"):
        try:
            answer = httpx.get(url + path, timeout=2)
            out += [answer.status_code, answer.json().get("status", "")]
        except (httpx.HTTPError, ValueError):
            out += [0, ""]
    return out[0], out[1], out[2], out[3]


def _within(seconds: float, condition: Callable[[], bool], every: float = 0.1) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (polled: processes and metrics give no other signal)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat``'s fields after the name (state, ppid, pgrp, ...), or ``None`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it holds no memory and no CPU)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _descendants(root: int) -> list[int]:
    parents = {int(p): int(f[1]) for p in os.listdir("/proc") if p.isdigit() and (f := _stat(int(p))) is not None}
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return [pid for pid in found if _alive(pid)]


def _parent(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields is not None else -1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _vllm_metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name)


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": PROMPT, "max_tokens": LONG, "ignore_eos": True, "temperature": 0, **extra}


def test_the_port_answers_starting_at_once_and_is_ready_only_after_the_self_test(servers):
    guard = servers.shared()
    # once the process has bound its port (before the engine starts), every poll finds it alive, not ready
    answered = [s for s in guard.starting[next((i for i, s in enumerate(guard.starting) if s[0]), 0):]]
    while answered and answered[-1][2] == 200:  # polled in the instant between the handover and the announcement
        answered.pop()
    assert answered and answered[0][0], f"guard serve said it serves before its port answered: {guard.starting}"
    assert all(s == (200, "starting", 503, "starting") for s in answered), guard.starting
    assert httpx.get(guard.url + "/readyz", timeout=5).status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(guard.url + "/metrics", timeout=5).text)}
    requests = [s for s in families["guard_requests"].samples
                if s.name == "guard_requests_total" and s.labels["endpoint"] == "completions"]
    assert sum(s.value for s in requests) >= 1  # the self-test's request went through the whole app first


def test_a_client_leaving_a_non_streamed_request_stops_its_generation_in_the_engine(servers):
    guard = servers.shared()
    upstream = guard.url  # vLLM's metrics are on guard serve's /metrics
    generated_before = _vllm_metric(upstream, "vllm:generation_tokens_total")
    raw = json.dumps(_body()).encode()
    port = int(guard.url.rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
    assert _within(60, lambda: _vllm_metric(upstream, "vllm:num_requests_running") == 1), guard.tail()
    client.close()
    left = time.monotonic()
    assert _within(10, lambda: _vllm_metric(upstream, "vllm:num_requests_running") == 0), guard.tail()
    print(f"\nengine stopped generating {time.monotonic() - left:.2f} s after the client left")
    generated = _vllm_metric(upstream, "vllm:generation_tokens_total") - generated_before
    assert generated < LONG / 2, f"the engine generated {generated:.0f} of {LONG} tokens for a client that left"
    metrics = httpx.get(f"{guard.url}/metrics", timeout=10).text
    assert 'guard_client_disconnects_total{endpoint="completions"} 1.0' in metrics
    assert "guard_requests_in_flight 0.0" in metrics


def test_sigterm_with_a_long_stream_running_exits_0_within_the_drain_deadline(servers):
    guard = servers.take()
    engine = guard.engine()
    events: list[tuple[float, str]] = []  # (when it arrived, the line)

    def consume() -> None:
        with httpx.stream("POST", f"{guard.url}/v1/completions", json=_body(stream=True), timeout=120) as answer:
            events.extend((time.monotonic(), line) for line in answer.iter_lines() if line)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert _within(60, lambda: len(events) >= 3), guard.tail()  # it is generating
    # vLLM's socket files and the score channel's are in guard serve's own run folder
    (run,) = Path(tempfile.gettempdir()).glob(f"guard-run-{guard.process.pid}-*")
    assert len([path for path in run.iterdir() if path.is_socket()]) >= 3, sorted(run.iterdir())
    started = time.monotonic()
    guard.process.send_signal(signal.SIGTERM)
    code = guard.process.wait(timeout=60)
    took = time.monotonic() - started
    reader.join(timeout=10)
    (ended, stopped), (_, done) = events[-2:]
    print(f"\nSIGTERM -> stream ended after {ended - started:.2f} s, exit {code} after {took:.2f} s "
          f"(drain deadline {DRAIN_S} s, engine stop at most {STOP_S} s)")
    assert code == 0, guard.tail()
    assert DRAIN_S <= ended - started < DRAIN_S + 1.5  # the stream ran on until the deadline, then was ended
    assert took < DRAIN_S + STOP_S, guard.tail()
    assert done == "data: [DONE]"  # in OpenAI's shape, not cut
    assert json.loads(stopped.removeprefix("data: "))["error"]["code"] == "server_shutting_down"
    assert '"finish_reason":"length"' not in "".join(line for _, line in events).replace(" ", "")
    assert not run.exists()  # and no socket file is left in the temp folder
    # the engine's workers follow their engine core out (vLLM's death pipe), a moment after guard serve exits
    assert _within(5, lambda: not [pid for pid in engine if _alive(pid)]), [_cmdline(p) for p in engine if _alive(p)]


def test_sigkill_of_the_engine_stops_guard_serve_with_an_error_within_seconds(servers):
    guard = servers.take()
    engine = guard.engine()
    vllm = [pid for pid in engine if _parent(pid) == guard.process.pid and "EngineCore" in _cmdline(pid)]
    assert len(vllm) == 1, [_cmdline(pid) for pid in engine]
    os.kill(vllm[0], signal.SIGKILL)
    killed = time.monotonic()
    health: list[tuple[float, int]] = []  # (seconds after the kill, /healthz status)

    def gone() -> bool:
        try:
            health.append((time.monotonic() - killed, httpx.get(f"{guard.url}/healthz", timeout=5).status_code))
        except httpx.HTTPError:  # it stopped listening
            pass
        return guard.process.poll() is not None

    assert _within(30, gone, 0.2), guard.tail()
    print(f"\nguard serve exited {guard.process.returncode} {time.monotonic() - killed:.2f} s after the engine "
          f"core's SIGKILL; /healthz answered {health}")
    assert guard.process.returncode == 2, guard.tail()
    assert f"the vLLM engine (pid {vllm[0]}) was killed by SIGKILL while serving" in guard.log.read_text()
    # vLLM notices a dead engine core within milliseconds; /healthz is never healthy once it has
    assert not [status for after, status in health if status == 200 and after > 0.5], health
    assert _within(5, lambda: not [pid for pid in engine if _alive(pid)]), [_cmdline(p) for p in engine if _alive(p)]


def test_sigkill_of_guard_serve_leaves_no_engine_process(servers):
    guard = servers.take()
    engine = guard.engine()
    assert len(engine) >= 2, [_cmdline(pid) for pid in engine]  # vLLM's engine core and its worker
    guard.process.kill()
    guard.process.wait()
    killed = time.monotonic()
    assert _within(10, lambda: not [pid for pid in engine if _alive(pid)]), [_cmdline(p) for p in engine if _alive(p)]
    print(f"\nevery engine process was gone {time.monotonic() - killed:.2f} s after guard serve's SIGKILL")
    # the tether: the kernel sent the engine core SIGTERM when guard serve died, and it stopped cleanly
    assert "EngineCore: trigger received signal=SIGTERM" in guard.log.read_text(), guard.tail()
