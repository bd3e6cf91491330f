"""What the engine's workers must capture: the contract between the front end and the worker.

A :class:`CaptureSpec` travels to every worker inside vLLM's ``additional_config["guard"]``. Because
vLLM hashes ``additional_config`` into its compile-cache key, the spec (with
:data:`HOOKS_VERSION`) also versions the compiled graph: a graph compiled without our hooks, or with
other layers, can never be loaded for a guarded engine.

The score endpoint is deliberately *not* part of the spec: it changes from run to run (a fresh
socket per engine) and would defeat the compile cache. Workers read it from the
``GUARD_SCORE_ENDPOINT`` environment variable, which vLLM's worker processes inherit.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from guard import env
from guard.errors import ConfigError

__all__ = ["HOOKS_VERSION", "ADDITIONAL_CONFIG_KEY", "CaptureSpec", "check_endpoint"]

#: Bump whenever the hook body or where it is installed changes (invalidates compiled graphs).
HOOKS_VERSION = 3  # 3: graph-native hooks (tensor ops on persistent buffers); 2: steering before capture
ADDITIONAL_CONFIG_KEY = "guard"


class CaptureSpec(BaseModel):
    """Engine-wide capture settings, fixed when the engine starts.

    Attributes:
        layers: decoder layers whose output residual stream is read (HF ``hidden_states[i + 1]``).
        probe: path of the probe artefact scored in the worker, or ``None`` to capture only.
        gate: path of a pre-generation gate scored with the probe (its columns follow the probe's).
        hidden: allocate buffers so requests may ask for raw hidden rows.
        steering: path of a steering-vector artefact requests may steer with, or ``None``.
        steering_layers: the artefact's layers (kept here so they version the compiled graph); any
            decoder layers, independent of ``layers``. At a layer in both, the steering addition
            happens first and the capture reads the steered residual stream.
        hooks_version: part of the compile-cache key; see :data:`HOOKS_VERSION`.
        hooks_source: digest of the adapter's hook code (set by the engine adapter): any edit to the code
            that is traced into the compiled graph changes the compile-cache key too, bumped or not.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: tuple[int, ...] = Field(min_length=1)
    probe: str | None = None
    gate: str | None = None
    hidden: bool = False
    steering: str | None = None
    steering_layers: tuple[int, ...] = ()
    hooks_version: int = HOOKS_VERSION
    hooks_source: str = ""

    @field_validator("layers")
    @classmethod
    def _distinct_nonnegative(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v) or any(x < 0 for x in v):
            raise ValueError(f"layers {list(v)} must be distinct non-negative decoder layer indices")
        return v

    @field_validator("steering_layers")
    @classmethod
    def _distinct_steering_layers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v) or any(x < 0 for x in v):
            raise ValueError(f"steering_layers {list(v)} must be distinct non-negative decoder layer indices")
        return v

    @model_validator(mode="after")
    def _steering_has_layers(self) -> CaptureSpec:
        if (self.steering is None) != (not self.steering_layers):
            raise ValueError(f"steering={self.steering!r} and steering_layers={list(self.steering_layers)} disagree: "
                             "give both (the artefact's layers) or neither")
        return self

    def to_additional_config(self) -> dict[str, Any]:
        """The ``additional_config`` entry for vLLM's engine arguments."""
        return {ADDITIONAL_CONFIG_KEY: self.model_dump(mode="json")}

    @classmethod
    def from_additional_config(cls, additional: Any) -> CaptureSpec | None:
        """Read the spec back in a worker; ``None`` when the engine is not guarded.

        Raises:
            ConfigError: the entry exists but is invalid.
        """
        if not isinstance(additional, dict) or ADDITIONAL_CONFIG_KEY not in additional:
            return None
        try:
            spec = cls.model_validate(additional[ADDITIONAL_CONFIG_KEY])
        except ValidationError as exc:
            raise ConfigError(f"additional_config['guard'] is invalid: {exc}") from exc
        if spec.hooks_version != HOOKS_VERSION:
            raise ConfigError(
                f"additional_config['guard'] has hooks_version={spec.hooks_version}, this guard installs "
                f"version {HOOKS_VERSION}; build the engine arguments with this guard version"
            )
        return spec


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def check_endpoint(endpoint: str | None) -> str:
    """Validate a score endpoint (``inproc://NAME``, ``ipc:///path`` or ``tcp://host:port``).

    The channel carries every request's scores without authentication, so a ``tcp://`` endpoint must be on the
    loopback interface unless ``GUARD_SCORE_REMOTE=1`` says the network is private.

    Raises:
        ConfigError: missing, of an unknown scheme, or a non-loopback ``tcp://`` host without the opt-in.
    """
    if not endpoint or not endpoint.startswith(("inproc://", "ipc://", "tcp://")):
        raise ConfigError(
            f"score endpoint {endpoint!r} is invalid: expected inproc://NAME, ipc:///path.sock or tcp://host:port "
            "(set GUARD_SCORE_ENDPOINT for the engine's processes)"
        )
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
        if host not in _LOOPBACK and env.read("GUARD_SCORE_REMOTE") != "1":
            raise ConfigError(f"score endpoint {endpoint!r} is not on the loopback interface: the score channel is "
                              "unauthenticated; use ipc:// or tcp://127.0.0.1:PORT, or set GUARD_SCORE_REMOTE=1 if "
                              "the network between the engine and the server is private")
    return endpoint
