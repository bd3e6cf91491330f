"""guard serve: an OpenAI-compatible HTTP server in front of a guarded vLLM engine; guard proxy: the same
API in front of a foreign OpenAI-compatible API, whose answers a local guarded *reader* engine reads.

Clients use OpenAI's API unchanged; each choice of an answer carries the guard's verdict in an
extra field ``guard``, and a request may carry a ``guard`` object (mode, alpha, abstain message).
The server starts vLLM's own OpenAI server as its upstream, with the capture switched on, and
receives every token's probe scores from the engine's workers over the score channel. This
package may import ``guard`` and the rest of ``adapters``; neither ``guard`` nor ``adapters.vllm``
imports it. See docs/serving.md (its "Proxy mode" section for guard proxy: ``adapters.http.proxy``).

Layout: shared parts here (app factory and routes, errors, wire format, SSE, forwarding, failure
policy, settings, the upstream vLLM process on its leash, launch), ``serve/`` (guard serve: router,
protocol, serving, session, streaming, steering) and ``proxy/`` (guard proxy: router, protocol,
serving, streaming, reader). The request path file by file: the README's "Pipeline" section.
"""

from adapters.http.errors import APIError, ReaderError, UpstreamError
from adapters.http.forwarding import JSONReply, StreamReply
from adapters.http.launch import run, run_proxy
from adapters.http.proxy.reader import Reader, Reading
from adapters.http.proxy.reader_prompt import HFReaderPrompts, ReaderPrompts
from adapters.http.proxy.router import create_proxy_app
from adapters.http.proxy.serving import ProxyRelay
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.router import create_app
from adapters.http.serve.serving import Relay
from adapters.http.serve.session import GuardSession
from adapters.http.settings import ProxySettings, ServeSettings
from adapters.http.tokens import HFTokenTexts, TokenTexts
from adapters.http.upstream import UpstreamServer

__all__ = [
    "APIError",
    "GuardSession",
    "HFReaderPrompts",
    "HFTokenTexts",
    "JSONReply",
    "ProxyRelay",
    "ProxySettings",
    "Reader",
    "ReaderError",
    "ReaderPrompts",
    "Reading",
    "Relay",
    "ScoreFeed",
    "ServeSettings",
    "StreamReply",
    "TokenTexts",
    "UpstreamError",
    "UpstreamServer",
    "create_app",
    "create_proxy_app",
    "run",
    "run_proxy",
]
