"""guard proxy's judge endpoint: ``POST /v1/guard/check``, a question and an answer in, the reader's verdicts out.

For guardrail frameworks (LiteLLM, NeMo Guardrails, custom gateways) that already hold the answer and want only
the judgement: no upstream call. The body is the question as a chat (``messages``) or a completion prompt
(``prompt``), the ``answer`` text, and optionally the ``guard`` object of a request (``mode``, ``alpha``, ...).
The answer is read exactly as guard proxy reads an upstream's answer (the same reader prompt, probe, conformal
rule and failure policy), and the reply is ``{"object": "guard.check", "guard": {...}}`` with the ``guard`` field
a proxied answer would carry (``decision``, ``sentences``, ``tokens``, ``source: "reader"``, ``verified``).

Example::

    curl -s localhost:8000/v1/guard/check -H 'content-type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "Capital of France?"}], "answer": "Berlin."}'
"""

from __future__ import annotations

from typing import Any, Protocol

from adapters.http.errors import invalid_request
from adapters.http.protocol import Endpoint
from adapters.http.proxy.protocol import ProxyRequest, proxy_request
from adapters.http.proxy.reader import Reading
from adapters.http.request_shape import show
from adapters.http.settings import ProxySettings
from guard.verdicts import VerdictRule

__all__ = ["CHECK_PATH", "CheckPort", "check"]

#: where the judge endpoint answers
CHECK_PATH = "/v1/guard/check"
_FIELDS = ("messages", "prompt", "answer", "guard", "model")
_MAX_ANSWER = 100_000  # characters; the reader's max_model_len refuses long ones first in practice


class CheckPort(Protocol):
    """What the judge needs of guard proxy's relay."""

    settings: ProxySettings
    rule: VerdictRule

    @property
    def prompts(self) -> Any:
        """The reader's prompt builder."""

    async def read_one(self, request: ProxyRequest, answer: str) -> Reading:
        """Read one answer to the request's (single) question."""

    def guard_field(self, reading: Reading) -> dict[str, Any]:
        """A reading's ``guard`` field."""


async def check(relay: CheckPort, body: dict[str, Any]) -> dict[str, Any]:
    """Judge ``body["answer"]`` to the question in ``body``.

    Raises:
        APIError: 400 naming the field: an unknown field, no or two questions, an answer that is not a non-empty
            string, several prompts, or a ``guard`` object guard proxy cannot serve (e.g. mode ``steer``).
    """
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise invalid_request(f"unknown field(s) {unknown} in a check request: expected messages or prompt, answer, "
                              "and optionally guard", param=unknown[0])
    answer = body.get("answer")
    if not isinstance(answer, str) or not answer.strip() or len(answer) > _MAX_ANSWER:
        raise invalid_request(f"answer={show(answer)} is invalid: expected the answer to judge as a non-empty string "
                              f"of at most {_MAX_ANSWER} characters", param="answer")
    asked = [name for name in ("messages", "prompt") if name in body]
    if len(asked) != 1:
        raise invalid_request("a check request needs exactly one question: messages (a chat, as in "
                              "/v1/chat/completions) or prompt (a text, as in /v1/completions)", param="messages")
    (field,) = asked
    question: dict[str, Any] = {"model": body.get("model") or relay.settings.served_name, field: body[field]}
    if "guard" in body:
        question["guard"] = body["guard"]
    endpoint: Endpoint = "chat_completions" if field == "messages" else "completions"
    settings = relay.settings
    request = proxy_request(question, endpoint, {}, settings.mode, settings.abstain_message, relay.rule,
                            relay.prompts)
    if len(request.prefixes) != 1:
        raise invalid_request(f"prompt={show(body[field])} holds {len(request.prefixes)} prompts: a check judges one "
                              "answer to one question; send one prompt string", param="prompt")
    return {"object": "guard.check", "guard": relay.guard_field(await relay.read_one(request, answer))}
