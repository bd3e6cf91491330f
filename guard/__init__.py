"""guard: an inference-time hallucination guard for LLM serving — the core.

The core holds artefacts, numpy maths, configuration, the score channel's contract, the decision
policy (sentences, conformal verdicts, the per-choice stream guard), metric definitions and errors.
It imports only the standard library, numpy, pydantic and prometheus_client; engines (torch,
transformers, vLLM) live in the ``adapters`` package.

::

    client ──▶ vLLM engine ──▶ worker: decoder layer ℓ ──hook──▶ probe matmul ──▶ scores
                                                                   │ (zmq / in-process)
    verdicts ◀── policy (guard) ◀── ScoreSource ◀──────────────────┘
"""

from guard.capture_spec import HOOKS_VERSION, CaptureSpec
from guard.config import GuardConfig
from guard.conformal import MondrianConformal
from guard.errors import (
    AdapterError,
    ArtifactError,
    ChannelError,
    ConfigError,
    DataError,
    GuardError,
    ModelError,
    RequestOptionError,
    SelfTestError,
)
from guard.metrics import GuardMetrics
from guard.model_spec import ModelSpec
from guard.policy import (
    DEFAULT_ABSTAIN_MESSAGE,
    GuardEvent,
    GuardOptions,
    StreamGuard,
    TokenScore,
    parse_guard_options,
    response_decision,
)
from guard.probe import ConformalCalibration, Probe, ProbeManifest
from guard.request_options import RequestOptions, parse_request_options
from guard.scores import ScoreSegment, ScoreSink, ScoreSource, ScoreStore, TokenScores
from guard.selective import SelectiveCalibration, selective_threshold
from guard.sentences import Sentence, SentenceSplitter
from guard.shift import ShiftCalibration
from guard.steering import SteeringManifest, SteeringVector
from guard.verdicts import (
    AbstainReason,
    GuardSummary,
    SentenceVerdict,
    VerdictCounts,
    VerdictRule,
)

__version__ = "0.1.0"

__all__ = [
    "AbstainReason",
    "AdapterError",
    "ArtifactError",
    "CaptureSpec",
    "ChannelError",
    "ConfigError",
    "ConformalCalibration",
    "DEFAULT_ABSTAIN_MESSAGE",
    "DataError",
    "GuardConfig",
    "GuardError",
    "GuardEvent",
    "GuardMetrics",
    "GuardOptions",
    "GuardSummary",
    "HOOKS_VERSION",
    "ModelError",
    "ModelSpec",
    "MondrianConformal",
    "Probe",
    "ProbeManifest",
    "RequestOptionError",
    "RequestOptions",
    "ScoreSegment",
    "ScoreSink",
    "ScoreSource",
    "ScoreStore",
    "SelectiveCalibration",
    "ShiftCalibration",
    "SelfTestError",
    "Sentence",
    "SentenceSplitter",
    "SentenceVerdict",
    "SteeringManifest",
    "SteeringVector",
    "StreamGuard",
    "selective_threshold",
    "TokenScore",
    "TokenScores",
    "VerdictCounts",
    "VerdictRule",
    "parse_guard_options",
    "parse_request_options",
    "response_decision",
]
