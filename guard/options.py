"""The ``guard`` object of a request: per-request policy options, validated with errors that name the field.

A client sends ``{"guard": {"mode": ..., "alpha": ...}}`` beside its OpenAI request; the Python
API takes the same :class:`GuardOptions`. What each mode means is the contract of
:mod:`guard.policy`.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guard.errors import ConfigError, RequestOptionError
from guard.splitters import DEFAULT_SPLITTER, splitter_factory, splitter_names
from guard.verdicts import Mode

__all__ = ["DEFAULT_ABSTAIN_MESSAGE", "GuardOptions", "SteerHow", "parse_guard_options"]

#: what a choice says instead of an unverified answer when no ``abstain_message`` is given
DEFAULT_ABSTAIN_MESSAGE = "I'm not confident enough to answer that reliably."
#: how mode "steer" steers: from a flagged sentence on, a fresh answer after a flagged one, or the whole answer
SteerHow = Literal["continue", "regenerate", "always"]
_MAX_MESSAGE = 2000
_STEER_ONLY = ("steer_alpha", "steer_how")
_EXPECTED = {
    "mode": "one of 'pass', 'flag', 'abstain', 'steer'",
    "alpha": "a number strictly between 0 and 1, or null for the probe's calibrated alpha",
    "abstain_message": f"a non-empty string of at most {_MAX_MESSAGE} characters, or null for the default",
    "gate": "true or false",
    "gate_alpha": "a number strictly between 0 and 1, or null for the gate's calibrated alpha",
    "answer_check": "true or false",
    "answer_alpha": "a number strictly between 0 and 1, or null for the answer check's calibrated alpha",
    "answer_samples": "true or false (true needs answer_check true)",
    "steer_alpha": "a finite number (the steering strength), or null for the steering vector's default",
    "steer_how": "'continue' (steer from the flagged sentence on), 'regenerate' (steer a fresh answer) or 'always' "
                 "(steer every token, unconditionally)",
    "split": "the name of a splitter installed on this server",
}


class GuardOptions(BaseModel):
    """The ``guard`` object of a request body (strict JSON types; unknown fields refused).

    Attributes:
        mode: ``pass`` (score only), ``flag`` (report flagged sentences), ``abstain`` (replace an
            unverified answer by the abstain message), ``steer`` (at the first flagged sentence,
            steer the model toward the truthful direction: see :mod:`guard.policy`).
        alpha: the tolerated flag rate among true sentences; ``None`` uses the probe's calibrated alpha.
        abstain_message: replaces :data:`DEFAULT_ABSTAIN_MESSAGE`.
        gate: consult the pre-generation gate when one is loaded.
        gate_alpha: the gate's tolerated error rate among answered questions; ``None`` uses the gate's
            calibrated alpha.
        answer_check: judge the whole answer with the on-policy gate's answer combiner
            (:mod:`guard.answer_check`, when the loaded gate carries one): in mode ``abstain`` the text is
            held until the answer is complete, then sent whole if its ``p(correct)`` reaches the threshold
            certified at ``answer_alpha``, else replaced by the abstain message; other modes only report it.
        answer_alpha: the answer check's tolerated error rate among answered questions; ``None`` uses its
            calibrated alpha.
        answer_samples: the answer check also asks the model again (as many answers, drawn as, the gate's answer
            sampling was calibrated with) and reads how many say what the answer says (:mod:`guard.agreement`);
            needs ``answer_check`` and a gate with a sampled combiner. Costs that many more generations.
        steer_alpha: steering strength for mode ``steer``; ``None`` uses the steering vector's default.
        steer_how: ``continue`` (keep the verified sentences, generate on steered from the flagged
            one), ``regenerate`` (discard the answer and generate a steered one) or ``always`` (steer
            from the first token, whatever the probe says); mode ``steer`` only.
        split: which installed splitter cuts the answer into the units judged (:mod:`guard.splitters`):
            ``sentences`` (default), ``lines`` (line breaks only), or one a server's package registers.

    Example:
        >>> GuardOptions(mode="abstain", alpha=0.05).message
        "I'm not confident enough to answer that reliably."
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    mode: Mode = "flag"
    alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    abstain_message: str | None = Field(default=None, min_length=1, max_length=_MAX_MESSAGE)
    gate: bool = True
    gate_alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    answer_check: bool = False
    answer_alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    answer_samples: bool = False
    steer_alpha: float | None = Field(default=None, allow_inf_nan=False)
    steer_how: SteerHow = "continue"
    split: str = Field(default=DEFAULT_SPLITTER, min_length=1, max_length=64)

    @field_validator("split")
    @classmethod
    def _installed_splitter(cls, name: str) -> str:
        try:
            splitter_factory(name)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _steer_fields_need_steer_mode(self) -> GuardOptions:
        if self.mode != "steer":
            for name in _STEER_ONLY:
                if name in self.model_fields_set:
                    raise ValueError(f"{name} is only used with mode 'steer'")
        if self.answer_samples and not self.answer_check:
            raise ValueError("answer_samples is only used with answer_check")
        return self

    @property
    def message(self) -> str:
        """The text emitted on abstention."""
        return self.abstain_message or DEFAULT_ABSTAIN_MESSAGE


def parse_guard_options(raw: object, param: str = "guard") -> GuardOptions:
    """Validate a request's ``guard`` object (``None``: defaults).

    Raises:
        RequestOptionError: names the field path (``guard.alpha``), the value given and the accepted
            values; ``.param`` is the path of the first bad field.
    """
    if raw is None:
        return GuardOptions()
    if not isinstance(raw, dict):
        raise RequestOptionError(f"{param}={_show(raw)} is invalid: expected an object with optional fields "
                                 f"{', '.join(GuardOptions.model_fields)}", param=param)
    try:
        return GuardOptions.model_validate(raw)
    except ValidationError as exc:
        problems, paths = [], []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            if not err["loc"] and "answer_samples is only used" in err["msg"]:
                paths.append(f"{param}.answer_samples")
                problems.append(f"{paths[-1]}=true is invalid: expected it only with {param}.answer_check=true (the "
                                f"samples add to the answer check); set answer_check too, or drop answer_samples")
                continue
            if not err["loc"]:  # the cross-field rule: a steer-only field without mode "steer" (not a field named "")
                name = next(f for f in _STEER_ONLY if f in raw)
                paths.append(f"{param}.{name}")
                problems.append(f"{paths[-1]}={_show(raw[name])} is invalid: it is only used with "
                                f"{param}.mode='steer' (mode is {_show(raw.get('mode', 'flag'))}); "
                                f"set mode to 'steer' or drop {name}")
                continue
            paths.append(f"{param}.{name}")
            expected = (f"no such field (accepted fields: {', '.join(GuardOptions.model_fields)})"
                        if err["type"] == "extra_forbidden" else _expected(name, err["msg"]))
            problems.append(f"{paths[-1]}={_show(err.get('input'))} is invalid: expected {expected}")
        raise RequestOptionError("; ".join(problems), param=paths[0]) from exc


def _expected(name: str, fallback: str) -> str:
    """What a field accepts, for its error message (the splitters installed are listed)."""
    if name == "split":
        return f"one of {', '.join(repr(n) for n in splitter_names())} (the splitters installed on this server)"
    return _EXPECTED.get(name, fallback)


def _show(value: object) -> str:
    """A value as JSON, shortened: error messages name it without echoing long user text."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
