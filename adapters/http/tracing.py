"""Optional OpenTelemetry tracing of guard serve and guard proxy (``otel: true``, ``GUARD_OTEL=1``, ``--otel``).

With it on, every request gets a server span (FastAPI's instrumentation; the incoming W3C ``traceparent`` is
continued) and every call the server makes upstream (vLLM's app, the foreign API, the proxy's reader) a client
span whose context travels in the upstream request's ``traceparent``. Health, readiness and metrics routes are
not traced. Spans go to the process's OpenTelemetry tracer provider: the one ``opentelemetry-instrument``
or the embedding application set up, or else a new SDK provider exporting over OTLP/HTTP, configured by
OpenTelemetry's standard environment (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ...). Span
attributes are OpenTelemetry's HTTP conventions: no request or answer content.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx

from guard.errors import ConfigError

__all__ = ["UNTRACED_ROUTES", "instrument"]

#: routes that get no span (probes and scrapes would drown the traces)
UNTRACED_ROUTES = ("/livez", "/readyz", "/healthz", "/health", "/metrics", "/ping")


def instrument(app: Any, clients: Sequence[httpx.AsyncClient], provider: Any = None) -> None:
    """Trace ``app``'s requests and its ``clients``' upstream calls through ``provider`` (default: see above).

    Raises:
        ConfigError: OpenTelemetry's instrumentation packages are not installed (names the fix).
    """
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError as exc:
        raise ConfigError(f"otel is on but OpenTelemetry's instrumentation is not installed ({exc}); install it "
                          "with pip install 'guard[otel]', or turn otel off") from exc
    provider = provider if provider is not None else _provider()
    excluded = ",".join(rf"{path}(\?|$)" for path in UNTRACED_ROUTES)  # searched in the full URL
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=excluded)
    for client in clients:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


def _provider() -> Any:
    """The process's SDK tracer provider, or a new one exporting over OTLP/HTTP (set as the global one)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                        "guard")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
