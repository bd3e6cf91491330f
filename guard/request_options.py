"""Per-request guard options carried in vLLM's ``SamplingParams.extra_args``.

Keys are flat scalars so that they travel unchanged through vLLM's OpenAI server, whose
``vllm_xargs`` field accepts only strings and numbers:

* ``guard_key`` (str, required to opt in): the key under which the request's scores are delivered.
* ``guard_hidden`` (0/1, default 0): also deliver raw residual-stream rows (calibration capture).

A request without ``guard_key`` is not guarded: no scores, no work.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from guard.errors import ConfigError

__all__ = ["RequestOptions", "parse_request_options", "KEY_FIELD", "HIDDEN_FIELD"]

KEY_FIELD = "guard_key"
HIDDEN_FIELD = "guard_hidden"
_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestOptions(BaseModel):
    """Validated guard options of one request."""

    model_config = ConfigDict(frozen=True)

    key: str
    hidden: bool = False

    def to_extra_args(self) -> dict[str, str | int]:
        """The ``extra_args`` entries that carry these options."""
        return {KEY_FIELD: self.key, HIDDEN_FIELD: int(self.hidden)}


def parse_request_options(extra_args: dict[str, Any] | None) -> RequestOptions | None:
    """Read guard options from ``extra_args``; ``None`` when the request did not opt in.

    Raises:
        ConfigError: a guard field is present but invalid (names the field, the value and the fix).
    """
    if not extra_args or KEY_FIELD not in extra_args:
        if extra_args and HIDDEN_FIELD in extra_args:
            raise ConfigError(f"{HIDDEN_FIELD!r} was given without {KEY_FIELD!r}; add {KEY_FIELD}=<id> to opt in")
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
    return RequestOptions(key=key, hidden=bool(hidden))
