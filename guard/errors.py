"""The guard error tree: every error the project raises on purpose.

::

    GuardError
    ├── ConfigError        bad settings, CLI flags, env vars or request options
    │   └── RequestOptionError  one per-request option is invalid; ``param`` names it (``guard.alpha``)
    ├── DataError          a user's dataset file is malformed (names file, line and value)
    ├── ArtifactError      a probe/steering artefact is missing, corrupt or for another model
    ├── ModelError         the model cannot be found, prepared or verified
    ├── AdapterError       an engine integration (vLLM, transformers) misbehaves
    │   ├── SelfTestError  the in-engine capture did not fire or captured wrong rows
    │   └── NonFiniteScores  the engine's scores for a request hold NaN or infinity
    └── ChannelError       scores could not be delivered between processes

Messages name the offending value, what was expected, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "GuardError",
    "ConfigError",
    "RequestOptionError",
    "DataError",
    "ArtifactError",
    "ModelError",
    "AdapterError",
    "SelfTestError",
    "NonFiniteScores",
    "ChannelError",
]


class GuardError(Exception):
    """Base class of every error guard raises on purpose."""


class ConfigError(GuardError, ValueError):
    """A setting, flag, environment variable or request option is invalid."""


class RequestOptionError(ConfigError):
    """A per-request option is invalid; the server answers it with an OpenAI-style 400.

    Args:
        message: names the field path, the value given and the accepted values.
        param: the offending field's path in the request body, e.g. ``"guard.alpha"``.
    """

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class DataError(GuardError, ValueError):
    """A dataset file is malformed; the message names the file, the line and the bad value."""


class ArtifactError(GuardError):
    """An artefact (probe, threshold, steering vector) is unusable for this model."""


class ModelError(GuardError):
    """The model cannot be located, prepared or verified."""


class AdapterError(GuardError):
    """An engine integration (vLLM, transformers) is unavailable or misbehaves."""


class SelfTestError(AdapterError):
    """The start-up self-test proved that the capture hooks are not working."""


class NonFiniteScores(AdapterError):
    """The engine's scores for a request hold NaN or infinity: its hidden states left the finite range.

    A request that steered brought it on itself; for one that did not, the engine is broken (a
    serving layer marks itself unhealthy).
    """


class ChannelError(GuardError):
    """Scores could not be delivered from the engine worker to their consumer."""
