"""guard as a NeMo Guardrails action: an output rail asks guard proxy's judge endpoint whether the bot's answer
to the user's message holds a sentence guard reads as likely false.

Install ``guard[nemo]``, run ``guard proxy`` (its reader judges the answers) and use the rails configuration in
``deploy/nemo/`` (or copy its parts): ``config.py`` registers the action, ``rails.co`` defines the output rail
``guard check answer``, and ``config.yml`` turns it on and tells the action where guard is::

    rails:
      output:
        flows:
          - guard check answer
    custom_data:
      guard:
        url: http://127.0.0.1:8000     # guard proxy (default: $GUARD_URL); its API key: $GUARD_API_KEY
        timeout_s: 30
        on_error: block                # block | allow: when guard gives no verdict

The action ``guard_check`` returns ``True`` when the answer passed and ``False`` when guard flagged it (or, with
``on_error: block``, could not judge it); either way it leaves ``$guard_verdict`` (decision and sentences) and
``$guard_flagged`` (the flagged sentences' text) in the context for the flow, and ``$guard_error`` when there was
no verdict. The question guard reads is the conversation up to the user's last message (``$user_message``),
rebuilt from the rails' events: system messages, earlier user turns and the bot's earlier answers, as a chat;
the answer judged is ``$bot_message``. The rail judges whole answers: keep NeMo's output-rail streaming off (its
default), under which the rail would see chunk windows.

:func:`register` checks ``custom_data.guard`` as it registers the action, so a bad setting stops ``LLMRails``
from being built (inside the action NeMo would turn it into "an internal error has occurred" on every answer).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from nemoguardrails.actions import action
from nemoguardrails.actions.actions import ActionResult

from adapters.guardrails.judge import GuardJudge, JudgeError
from guard.errors import ConfigError

__all__ = ["ACTION_NAME", "guard_check", "register", "conversation"]

_log = logging.getLogger("guard.nemo")
#: the action's name in Colang (``execute guard_check``)
ACTION_NAME = "guard_check"
_SETTINGS = ("url", "timeout_s", "alpha", "on_error")
#: NeMo event type -> (chat role, the event's text field)
_TURNS = {"SystemMessage": ("system", "content"), "UserMessage": ("user", "text"),
          "StartUtteranceBotAction": ("assistant", "script")}


@action(name=ACTION_NAME)  # type: ignore[untyped-decorator]  # nemoguardrails ships no type information
async def guard_check(context: Mapping[str, Any] | None = None, config: Any = None,
                      events: Sequence[Mapping[str, Any]] | None = None) -> ActionResult:
    """Judge the bot's answer (``$bot_message``) to the conversation ending in the user's message
    (``$user_message``) with guard.

    Args:
        context: the rails' context (NeMo passes it).
        config: the rails' configuration (NeMo passes it); its ``custom_data.guard`` holds the settings.
        events: the rails' event history (NeMo passes it): the conversation before the answer.

    Raises:
        ConfigError: a bad ``custom_data.guard`` setting, naming it.
    """
    judge, on_error = _judge(config)
    context = context or {}
    answer, question = context.get("bot_message"), context.get("user_message")
    try:
        if not isinstance(answer, str) or not answer.strip():
            raise JudgeError("the rail has no bot message to judge: run guard check answer as an output rail")
        if not isinstance(question, str) or not question.strip():
            raise JudgeError("the rail has no user message, so guard cannot tell what the answer answers")
        judgement = await judge.check(answer, messages=conversation(events, question))
    except JudgeError as e:
        _log.warning("guard_check gave no verdict (on_error: %s): %s", on_error, e)
        return ActionResult(return_value=on_error == "allow",
                            context_updates={"guard_verdict": None, "guard_flagged": [], "guard_error": str(e)})
    return ActionResult(return_value=judgement.passed,
                        context_updates={"guard_verdict": judgement.summary(), "guard_flagged": judgement.flagged_text,
                                         "guard_error": None})


def register(rails: Any) -> None:
    """Register :func:`guard_check` with an ``LLMRails`` (``deploy/nemo/config.py`` calls it from ``init``).

    Raises:
        ConfigError: a bad ``custom_data.guard`` setting in the rails' configuration, naming it.
    """
    _judge(rails.config)  # checks the settings now rather than at the first answer
    rails.register_action(guard_check, ACTION_NAME)


def conversation(events: Sequence[Mapping[str, Any]] | None, question: str) -> list[dict[str, str]]:
    """The chat that ``question`` ends, from NeMo's events: ``SystemMessage`` -> system, ``UserMessage`` -> user,
    ``StartUtteranceBotAction`` (an answer the bot gave) -> assistant, up to the last user message. Just the
    question when the events do not end in it (an unfamiliar event history)."""
    turns: list[dict[str, str]] = []
    for event in events or ():
        turn = _TURNS.get(str(event.get("type")))
        if turn is not None and isinstance(event.get(turn[1]), str):
            turns.append({"role": turn[0], "content": event[turn[1]]})
    last = max((i for i, turn in enumerate(turns) if turn["role"] == "user"), default=None)
    if last is None or turns[last]["content"] != question:
        return [{"role": "user", "content": question}]
    return turns[:last + 1]


def _judge(config: Any) -> tuple[GuardJudge, str]:
    """The judge ``custom_data.guard`` describes, and its ``on_error``; a ConfigError naming a bad setting."""
    settings = _settings(config)
    judge = GuardJudge(settings.get("url"), None, settings.get("timeout_s", 30.0), settings.get("alpha"))
    return judge, settings.get("on_error", "block")


def _settings(config: Any) -> dict[str, Any]:
    custom = getattr(config, "custom_data", None) or {}
    settings = custom.get("guard") or {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"custom_data.guard={settings!r} is invalid: expected a mapping of {list(_SETTINGS)}")
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ConfigError(f"custom_data.guard has unknown setting(s) {unknown}: expected some of {list(_SETTINGS)} "
                          "(guard's API key is read from $GUARD_API_KEY, never from the rails' files)")
    if settings.get("on_error", "block") not in ("block", "allow"):
        raise ConfigError(f"custom_data.guard.on_error={settings['on_error']!r} is invalid: expected 'block' or "
                          "'allow'")
    return dict(settings)
