"""Per-request guard options carried in vLLM's ``SamplingParams.extra_args``.

Keys are flat scalars so that they travel unchanged through vLLM's OpenAI server, whose
``vllm_xargs`` field accepts only strings and numbers:

* ``guard_key`` (str, required to opt in): the key under which the request's scores are delivered.
* ``guard_hidden`` (0/1, default 0): also deliver raw residual-stream rows (calibration capture).
* ``guard_steer`` (finite number, default absent = no steering): add ``alpha`` times the engine's
  steering vector to the residual stream at its layers (needs an engine started with ``steering``).
* ``guard_steer_from`` (int, default: the prompt length, i.e. the first generated token's
  position): the first token position whose rows are steered; a negative value counts back from
  the prompt length (``-1``: the last prompt token, whose row produces the first generated token,
  so every generated token comes out steered); needs ``guard_steer``.

A request without ``guard_key`` is not guarded: no scores, no work. Steering is part of the opt-in:
``guard_steer`` without ``guard_key`` is refused, so a steered request is always scored too.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from guard.errors import ConfigError

__all__ = [
    "RequestOptions",
    "parse_request_options",
    "KEY_FIELD",
    "HIDDEN_FIELD",
    "STEER_FIELD",
    "STEER_FROM_FIELD",
]

KEY_FIELD = "guard_key"
HIDDEN_FIELD = "guard_hidden"
STEER_FIELD = "guard_steer"
STEER_FROM_FIELD = "guard_steer_from"
_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestOptions(BaseModel):
    """Validated guard options of one request.

    Attributes:
        key: delivery key of the request's scores.
        hidden: also deliver raw residual-stream rows.
        steer: steering strength ``alpha``; ``None`` = the request does not steer.
        steer_from: first steered token position; ``None`` = the prompt length; negative: the prompt
            length plus it (``-1``: the last prompt token).
    """

    model_config = ConfigDict(frozen=True)

    key: str
    hidden: bool = False
    steer: float | None = None
    steer_from: int | None = None

    def to_extra_args(self) -> dict[str, str | int | float]:
        """The ``extra_args`` entries that carry these options."""
        out: dict[str, str | int | float] = {KEY_FIELD: self.key, HIDDEN_FIELD: int(self.hidden)}
        if self.steer is not None:
            out[STEER_FIELD] = self.steer
        if self.steer_from is not None:
            out[STEER_FROM_FIELD] = self.steer_from
        return out


def parse_request_options(extra_args: dict[str, Any] | None) -> RequestOptions | None:
    """Read guard options from ``extra_args``; ``None`` when the request did not opt in.

    Raises:
        ConfigError: a guard field is present but invalid (names the field, the value and the fix).
    """
    if not extra_args or KEY_FIELD not in extra_args:
        stray = [f for f in (HIDDEN_FIELD, STEER_FIELD, STEER_FROM_FIELD) if extra_args and f in extra_args]
        if stray:
            raise ConfigError(f"{stray[0]!r} was given without {KEY_FIELD!r}; add {KEY_FIELD}=<id> to opt in")
        return None
    key = extra_args[KEY_FIELD]
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ConfigError(
            f"{KEY_FIELD}={key!r} is invalid: expected 1-128 characters of letters, digits, '.', '_', ':' or '-' "
            "(a UUID hex string works)"
        )
    hidden = extra_args.get(HIDDEN_FIELD, 0)
    if hidden not in (0, 1, True, False):
        raise ConfigError(f"{HIDDEN_FIELD}={hidden!r} is invalid: expected 0 or 1")
    steer, steer_from = _steering(extra_args)
    return RequestOptions(key=key, hidden=bool(hidden), steer=steer, steer_from=steer_from)


def _steering(extra_args: dict[str, Any]) -> tuple[float | None, int | None]:
    steer = extra_args.get(STEER_FIELD)
    steer_from = extra_args.get(STEER_FROM_FIELD)
    number = isinstance(steer, (int, float)) and not isinstance(steer, bool)
    if steer is not None and (not number or not math.isfinite(steer)):
        raise ConfigError(f"{STEER_FIELD}={steer!r} is invalid: expected a finite number (the steering strength alpha)")
    if steer_from is None:
        return (None if steer is None else float(steer)), None
    if steer is None:
        raise ConfigError(f"{STEER_FROM_FIELD!r} was given without {STEER_FIELD!r}; add {STEER_FIELD}=<alpha>")
    if isinstance(steer_from, bool) or not isinstance(steer_from, int):
        raise ConfigError(f"{STEER_FROM_FIELD}={steer_from!r} is invalid: expected an integer token position (>= 0), "
                          "or a negative offset from the prompt length (-1: the last prompt token)")
    return float(steer), steer_from
