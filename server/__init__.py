"""guard serve: an OpenAI-compatible HTTP server in front of a guarded vLLM engine; guard proxy: the same
API in front of a foreign OpenAI-compatible API, whose answers a local guarded *reader* engine reads.

Clients use OpenAI's API unchanged; each choice of an answer carries the guard's verdict in an
extra field ``guard``, and a request may carry a ``guard`` object (mode, alpha, abstain message).
The server starts vLLM's own OpenAI server as its upstream, with the capture switched on, and
receives every token's probe scores from the engine's workers over the score channel. This
package may import ``guard`` and ``adapters``; ``guard`` never imports it. See docs/serving.md
(its "Proxy mode" section for guard proxy: ``server.proxy*``, ``server.reader*``).

::

    client ─▶ server.app ─▶ server.relay ─HTTP─▶ vLLM OpenAI server ─▶ engine workers (probe in the hooks)
                  ▲              │ StreamGuard (guard.policy)                       │
                  └── verdicts ◀─┴──── ScoreFeed ◀── ScoreCollector ◀── zmq ipc ─────┘
"""

from server.app import create_app
from server.errors import APIError, ReaderError, UpstreamError
from server.proxy import ProxyRelay
from server.proxy_app import create_proxy_app
from server.reader import Reader, Reading
from server.reader_prompt import HFReaderPrompts, ReaderPrompts
from server.forwarding import JSONReply, StreamReply
from server.relay import Relay
from server.score_feed import ScoreFeed
from server.serve import run, run_proxy
from server.session import GuardSession
from server.settings import ProxySettings, ServeSettings
from server.tokens import HFTokenTexts, TokenTexts
from server.upstream import UpstreamServer

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
