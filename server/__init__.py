"""guard serve: an OpenAI-compatible HTTP server in front of a guarded vLLM engine.

Clients use OpenAI's API unchanged; each choice of an answer carries the guard's verdict in an
extra field ``guard``, and a request may carry a ``guard`` object (mode, alpha, abstain message).
The server starts vLLM's own OpenAI server as its upstream, with the capture switched on, and
receives every token's probe scores from the engine's workers over the score channel. This
package may import ``guard`` and ``adapters``; ``guard`` never imports it. See docs/serving.md.

::

    client ─▶ server.app ─▶ server.relay ─HTTP─▶ vLLM OpenAI server ─▶ engine workers (probe in the hooks)
                  ▲              │ StreamGuard (guard.policy)                       │
                  └── verdicts ◀─┴──── ScoreFeed ◀── ScoreCollector ◀── zmq ipc ─────┘
"""

from server.app import create_app
from server.errors import APIError, UpstreamError
from server.relay import JSONReply, Relay, StreamReply
from server.score_feed import ScoreFeed
from server.serve import run
from server.session import GuardSession
from server.settings import ServeSettings
from server.tokens import HFTokenTexts, TokenTexts
from server.upstream import UpstreamServer

__all__ = [
    "APIError",
    "GuardSession",
    "HFTokenTexts",
    "JSONReply",
    "Relay",
    "ScoreFeed",
    "ServeSettings",
    "StreamReply",
    "TokenTexts",
    "UpstreamError",
    "UpstreamServer",
    "create_app",
    "run",
]
