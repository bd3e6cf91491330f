"""guard: an inference-time hallucination guard for LLM serving — the core.

The core holds artefacts, numpy maths, configuration, the score channel's contract and errors.
It imports only the standard library, numpy, pydantic and prometheus_client; engines (torch,
transformers, vLLM) live in the ``adapters`` package.

::

    client ──▶ vLLM engine ──▶ worker: decoder layer ℓ ──hook──▶ probe matmul ──▶ scores
                                                                   │ (zmq / in-process)
    verdicts ◀── policy (guard) ◀── ScoreSource ◀──────────────────┘
"""

from guard.capture_spec import HOOKS_VERSION, CaptureSpec
from guard.config import GuardConfig
from guard.errors import (
    AdapterError,
    ArtifactError,
    ChannelError,
    ConfigError,
    DataError,
    GuardError,
    ModelError,
    SelfTestError,
)
from guard.model_spec import ModelSpec
from guard.probe import Probe, ProbeManifest
from guard.request_options import RequestOptions, parse_request_options
from guard.scores import ScoreSegment, ScoreSink, ScoreSource, ScoreStore, TokenScores

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "ArtifactError",
    "CaptureSpec",
    "ChannelError",
    "ConfigError",
    "DataError",
    "GuardConfig",
    "GuardError",
    "HOOKS_VERSION",
    "ModelError",
    "ModelSpec",
    "Probe",
    "ProbeManifest",
    "RequestOptions",
    "ScoreSegment",
    "ScoreSink",
    "ScoreSource",
    "ScoreStore",
    "SelfTestError",
    "TokenScores",
    "parse_request_options",
]
