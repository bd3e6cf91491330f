"""Optional OpenTelemetry tracing: a server span per request, a client span per upstream call, one trace."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.fastapi", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

import adapters.http.tracing as tracing  # noqa: E402
from adapters.http.score_feed import ScoreFeed  # noqa: E402
from tests.unit.fake_upstream import GOOD, MODEL, FakeUpstream, Script, run_app  # noqa: E402

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _traced(monkeypatch: pytest.MonkeyPatch, otel: bool) -> tuple[InMemorySpanExporter, FakeUpstream]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    real = tracing.instrument
    monkeypatch.setattr("adapters.http.routes.instrument", lambda app, clients: real(app, clients, provider))
    script = Script([("Paris", GOOD), (" is", GOOD), (" big", GOOD), (".", GOOD)])

    async def run(client: Any, fake: Any, app: Any) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "q"}]}
        assert (await client.post("/v1/chat/completions", json=body, headers={"traceparent": INCOMING})).status_code \
            == 200
        assert (await client.get("/livez")).status_code == 200

    fake = run_app(FakeUpstream(ScoreFeed(), {"q": script}), run, otel=otel)
    return exporter, fake


def test_a_request_and_its_upstream_call_are_spans_of_the_callers_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter, fake = _traced(monkeypatch, otel=True)
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    client = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert [s.attributes.get("http.route") for s in server] == ["/v1/chat/completions"]  # /livez is not traced
    assert len(client) == 1 and client[0].attributes.get("http.request.method", client[0].attributes.get(
        "http.method")) == "POST"
    trace_id = int(INCOMING.split("-")[1], 16)
    assert server[0].context.trace_id == client[0].context.trace_id == trace_id  # the caller's trace continues
    sent = fake.headers[-1]["traceparent"].split("-")
    assert int(sent[1], 16) == trace_id and int(sent[2], 16) == client[0].context.span_id  # upstream sees the span


def test_tracing_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter, _ = _traced(monkeypatch, otel=False)
    assert exporter.get_finished_spans() == ()


def test_otel_without_its_packages_is_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from guard.errors import ConfigError

    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.fastapi", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'guard\[otel\]'"):
        tracing.instrument(object(), [])
