"""guard proxy's one metrics page: its reader's vllm:* metrics, read from the child's /metrics at each scrape."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.upstream import ReaderMetrics
from guard.metrics import GuardMetrics

CHILD_PAGE = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 42.0
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 7.0
"""


class _Child(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(CHILD_PAGE if self.path == "/metrics" else b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def child() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Child)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _samples(metrics: GuardMetrics) -> dict[str, float]:
    page = generate_latest(metrics.registry).decode()
    return {s.name: s.value for f in text_string_to_metric_families(page) for s in f.samples}


def test_the_readers_vllm_metrics_join_the_guards_page_and_nothing_else_of_it(child: str) -> None:
    metrics = GuardMetrics()
    metrics.registry.register(ReaderMetrics(child))
    samples = _samples(metrics)
    assert samples["vllm:num_requests_running"] == 3.0 and samples["vllm:prompt_tokens_total"] == 42.0
    assert "python_gc_objects_collected_total" not in samples  # the child's process metrics stay its own
    assert any(name.startswith("guard_") for name in samples)


def test_a_reader_that_does_not_answer_adds_nothing_and_the_page_still_renders() -> None:
    metrics = GuardMetrics()
    metrics.registry.register(ReaderMetrics("http://127.0.0.1:9", timeout=0.5))  # discard port: refused
    samples = _samples(metrics)
    assert not any(name.startswith("vllm:") for name in samples) and any(n.startswith("guard_") for n in samples)
