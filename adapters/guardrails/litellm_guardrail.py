"""guard as a LiteLLM guardrail: LiteLLM's proxy sends each answer to guard proxy's judge endpoint after the
call (``mode: post_call``) and blocks, replaces or only logs the answers guard flags as likely false.

Install ``guard[litellm]`` next to LiteLLM's proxy and run ``guard proxy`` (its reader judges the answers), then
in LiteLLM's ``config.yaml`` (``deploy/litellm/config.yaml`` is a complete one)::

    guardrails:
      - guardrail_name: guard-hallucination
        litellm_params:
          guardrail: adapters.guardrails.litellm_guardrail.GuardGuardrail
          mode: post_call
          default_on: true
          api_base: http://127.0.0.1:8000      # guard proxy (default: $GUARD_URL)
          api_key: os.environ/GUARD_API_KEY    # when guard proxy has one
          on_flag: block                       # block | replace | log
          on_error: block                      # block | allow: when guard gives no verdict

``on_flag``: ``block`` answers the client with LiteLLM's guardrail error (HTTP 400) naming the flagged sentences;
``replace`` sends a normal answer whose text is ``abstain_message`` (LiteLLM's passthrough); ``log`` lets the
answer through. Every verdict, passed or not, is put in the request's ``metadata["guard"]`` (sentences and
decision, no token scores) for LiteLLM's loggers. No verdict (guard down, slow or unable to read the answer) is
HTTP 503 with ``on_error: block`` (LiteLLM logs it as the guardrail failing to respond, not as a block) and a
logged pass with ``on_error: allow``.

Only answers are judged, and only those of chat and text completions (the question is the request's
``messages`` or its one ``prompt``); requests (``pre_call``) and other routes' answers pass untouched, the latter
with a warning. A **streamed** answer is held by LiteLLM until the stream ends and judged whole, once
(``streaming_buffer_until_moderated``, ``streaming_end_of_stream_only``): a flagged one never reaches the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from fastapi import HTTPException
from litellm.exceptions import GuardrailRaisedException
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.guardrails import GuardrailEventHooks

from adapters.guardrails.judge import GuardJudge, JudgeError, Judgement
from guard.errors import ConfigError

__all__ = ["GuardGuardrail", "DEFAULT_ABSTAIN"]

_log = logging.getLogger("guard.litellm")
#: the text that replaces a flagged answer with ``on_flag: replace``
DEFAULT_ABSTAIN = "I am not confident that this answer is correct, so I will not give it."
_ON_FLAG = ("block", "replace", "log")
_ON_ERROR = ("block", "allow")


class GuardGuardrail(CustomGuardrail):
    """A LiteLLM post-call guardrail backed by guard proxy's judge endpoint (see the module docstring).

    Args:
        api_base: guard proxy's URL (default ``$GUARD_URL``, else ``http://127.0.0.1:8000``).
        api_key: guard proxy's API key (default ``$GUARD_API_KEY``).
        on_flag: ``block``, ``replace`` or ``log`` an answer with a flagged sentence.
        on_error: ``block`` (fail closed) or ``allow`` (fail open, logged) when guard gives no verdict.
        timeout_s: the most one check may take.
        alpha: the conformal error rate of the checks (default: guard proxy's).
        abstain_message: the text of a replaced answer.
        **kwargs: LiteLLM's own guardrail settings (``guardrail_name``, ``event_hook``, ``default_on``, ...).

    Raises:
        ConfigError: an unknown ``on_flag`` / ``on_error`` or a bad URL, timeout or alpha, naming the value.
    """

    #: LiteLLM holds a streamed answer until the end of the stream and judges it whole, once: guard reads whole
    #: sentences, and a flagged answer must not reach the client before its verdict
    streaming_buffer_until_moderated = True
    streaming_end_of_stream_only = True

    def __init__(self, api_base: str | None = None, api_key: str | None = None,
                 on_flag: Literal["block", "replace", "log"] = "block",
                 on_error: Literal["block", "allow"] = "block", timeout_s: float = 30.0,
                 alpha: float | None = None, abstain_message: str = DEFAULT_ABSTAIN, **kwargs: Any) -> None:
        if on_flag not in _ON_FLAG:
            raise ConfigError(f"guard guardrail on_flag={on_flag!r} is invalid: expected one of {list(_ON_FLAG)}")
        if on_error not in _ON_ERROR:
            raise ConfigError(f"guard guardrail on_error={on_error!r} is invalid: expected one of {list(_ON_ERROR)}")
        if not isinstance(abstain_message, str) or not abstain_message.strip():
            raise ConfigError(f"guard guardrail abstain_message={abstain_message!r} is invalid: expected a "
                              "non-empty text")
        # LiteLLM's loader turns an unset ``os.environ/GUARD_API_KEY`` into the text "None"
        self.judge = GuardJudge(api_base, None if api_key in ("", "None") else api_key, timeout_s, alpha)
        self.on_flag, self.on_error, self.abstain_message = on_flag, on_error, abstain_message
        kwargs.setdefault("supported_event_hooks", [GuardrailEventHooks.post_call])
        super().__init__(**kwargs)

    async def apply_guardrail(self, inputs: Any, request_data: dict[str, Any],
                              input_type: Literal["request", "response"], logging_obj: Any = None) -> Any:
        """Judge the answer texts of a response; requests pass untouched (LiteLLM's unified guardrail hook).

        Raises:
            GuardrailRaisedException: a flagged answer with ``on_flag: block`` (HTTP 400, ``blocked_content``).
            ModifyResponseException: a flagged answer with ``on_flag: replace`` (LiteLLM answers the abstain text).
            HTTPException: 503, no verdict with ``on_error: block``.
        """
        if input_type != "response":
            return inputs
        texts = [text for text in inputs.get("texts") or () if isinstance(text, str) and text.strip()]
        if not texts:
            return inputs
        question = _question(request_data)
        if question is None:
            _log.warning("guard guardrail %s let an answer through unjudged: its request has neither chat messages "
                         "nor one text prompt (guard judges chat and text completions only)", self.guardrail_name)
            request_data.setdefault("metadata", {})["guard"] = {"error": "unsupported request: no question"}
            return inputs
        try:
            judgements = await asyncio.gather(*(self.judge.check(text, **question) for text in texts))
        except JudgeError as e:
            return self._no_verdict(inputs, request_data, e)
        request_data.setdefault("metadata", {})["guard"] = [j.summary() for j in judgements]
        flagged = [j for j in judgements if not j.passed]
        if not flagged or self.on_flag == "log":
            for j in flagged:
                _log.warning("guard guardrail %s let a flagged answer through (on_flag: log): %s",
                             self.guardrail_name, j.reason())
            return inputs
        if self.on_flag == "replace":
            self.raise_passthrough_exception(violation_message=self.abstain_message, request_data=request_data,
                                             detection_info={"guard": [j.summary() for j in flagged]})
        raise GuardrailRaisedException(guardrail_name=self.guardrail_name, message=_block_message(flagged),
                                       should_wrap_with_default_message=False, blocked_content=True)

    def _no_verdict(self, inputs: Any, request_data: dict[str, Any], error: JudgeError) -> Any:
        request_data.setdefault("metadata", {})["guard"] = {"error": str(error)}
        if self.on_error == "allow":
            _log.warning("guard guardrail %s let an unjudged answer through (on_error: allow): %s",
                         self.guardrail_name, error)
            return inputs
        # not a GuardrailRaisedException: LiteLLM counts those as deliberate blocks; a 503 is a guardrail failure
        raise HTTPException(status_code=503, detail={"error": f"guard gave no verdict (on_error: block): {error}",
                                                     "guardrail": self.guardrail_name}) from error


def _question(request_data: dict[str, Any]) -> dict[str, Any] | None:
    """The request's question as the judge takes it: its chat messages, else its one completion prompt."""
    messages, prompt = request_data.get("messages"), request_data.get("prompt")
    if isinstance(messages, list) and messages:
        return {"messages": messages}
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return {"prompt": prompt}
    return None


def _block_message(flagged: list[Judgement]) -> str:
    return "The answer was blocked by guard: " + " | ".join(j.reason() for j in flagged)
