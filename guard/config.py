"""The engine-side configuration: one frozen object, built once (defaults -> ``GUARD_*`` env -> overrides)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guard import env
from guard.errors import ConfigError

__all__ = ["GuardConfig", "DEFAULT_LAYERS"]

#: Mid-depth layers of the default model (30 layers) where truth is linearly readable.
DEFAULT_LAYERS: tuple[int, ...] = (14,)


class GuardConfig(BaseModel):
    """Settings of a guarded engine.

    Attributes:
        model: ``"default"`` (embedded SmolLM2-135M-Instruct), an HF folder, or a hub id.
        probe: probe artefact scored in the engine; ``None`` captures ``layers`` without scoring.
        gate: pre-generation gate scored with the probe (same layers; see ``guard calibrate``).
        steering: steering-vector artefact; requests then steer with ``guard_steer`` (see guard.steering).
        layers: decoder layers to capture when no probe is given (a probe brings its own).
        capture_hidden: let requests ask for raw hidden rows (calibration).
        enforce_eager: run without torch.compile (the capture works in both modes).
        prefix_caching: keep vLLM prefix caching; cached prompt tokens then have no scores.
        max_model_len / max_num_seqs: engine limits.
        dtype: the engine's dtype; ``None``: the dtype the probe was calibrated in (its manifest's), and without a
            probe vLLM's ``auto`` on GPUs and ``float32`` on CPUs (where ``auto`` means bfloat16, which many CPUs
            lack).
        kv_cache_gib: CPU KV-cache size.
        score_endpoint: where workers push scores; ``None`` picks a fresh local ipc:// socket.
        selftest: prove at start-up that the hooks fire and rows map to the right requests.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "default"
    probe: str | None = None
    gate: str | None = None
    steering: str | None = None
    layers: tuple[int, ...] = DEFAULT_LAYERS
    capture_hidden: bool = False
    enforce_eager: bool = False
    prefix_caching: bool = False
    max_model_len: int = Field(default=2048, ge=16)
    max_num_seqs: int = Field(default=64, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    kv_cache_gib: float = Field(default=1.0, gt=0)
    score_endpoint: str | None = None
    selftest: bool = True

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or len(set(v)) != len(v) or any(x < 0 for x in v):
            raise ValueError(f"layers {list(v)} must be a non-empty list of distinct non-negative integers")
        return v

    @classmethod
    def build(cls, **overrides: Any) -> GuardConfig:
        """Defaults, then ``GUARD_*`` environment variables, then ``overrides`` (``None`` values ignored).

        Raises:
            ConfigError: a value is invalid (names the field and the value).
        """
        values: dict[str, Any] = {}
        for field, var in (("model", "GUARD_MODEL"), ("probe", "GUARD_PROBE"), ("gate", "GUARD_GATE"),
                           ("steering", "GUARD_STEERING"),
                           ("score_endpoint", "GUARD_SCORE_ENDPOINT")):
            if (raw := env.read(var)) is not None:
                values[field] = raw
        if (raw := env.read("GUARD_LAYERS")) is not None:
            try:
                values["layers"] = tuple(int(x) for x in raw.split(","))
            except ValueError as exc:
                raise ConfigError(f"GUARD_LAYERS={raw!r} is invalid: "
                                  "expected comma-separated integers like '12,14'") from exc
        for field, var in (("enforce_eager", "GUARD_ENFORCE_EAGER"), ("prefix_caching", "GUARD_PREFIX_CACHING")):
            if (raw := env.read(var)) is not None:
                if raw not in ("0", "1"):
                    raise ConfigError(f"{var}={raw!r} is invalid: expected 0 or 1")
                values[field] = raw == "1"
        if (raw := env.read("GUARD_KV_CACHE_GIB")) is not None:
            values["kv_cache_gib"] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(f"invalid guard configuration: {exc}") from exc
