"""Engine-tier fixtures: the real vLLM engine and the real default model, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from adapters.defaults import build_stand_in_probe
from adapters.model_store import resolve_model

LAYERS = (3, 14)
#: Small token budget per step so long prompts are prefilled in chunks.
CHUNK_TOKENS = 128

#: one steered layer the capture also reads (scores after the addition) and one it does not
STEER_LAYERS = (6, 14)
_TRUE = ["Paris is the capital of France.", "Water boils at 100 degrees Celsius at sea level.",
         "The Earth orbits the Sun.", "A week has seven days.", "Tokyo is in Japan.", "Two plus two is four."]
_FALSE = ["Paris is the capital of Italy.", "Water boils at 10 degrees Celsius at sea level.",
          "The Sun orbits the Earth.", "A week has nine days.", "Tokyo is in Brazil.", "Two plus two is five."]


@pytest.fixture(scope="session")
def model_path() -> str:
    return resolve_model("default")


@pytest.fixture(scope="session")
def probe_path(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("probe") / "stand-in"
    path = build_stand_in_probe(model_path, out, layers=LAYERS, seed=7)
    return str(path)


@pytest.fixture(scope="session")
def hf(model_path: str):
    from adapters.hf import HFReference

    return HFReference(model_path)


@pytest.fixture(scope="session")
def eager_engine(probe_path: str) -> Iterator:
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    cfg = GuardConfig.build(probe=probe_path, capture_hidden=True, enforce_eager=True, max_model_len=1024)
    llm = GuardedLLM(cfg, max_num_batched_tokens=CHUNK_TOKENS)
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def steering_path(model_path: str, hf, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A mean-difference truthful direction at STEER_LAYERS, from HF activations of a few statements."""
    from calibration.steering import build_steering_vector
    from guard.model_spec import ModelSpec

    texts = _TRUE + _FALSE
    rows = hf.hidden_states_batch([hf.tokenizer(t)["input_ids"] for t in texts], STEER_LAYERS)
    features = np.stack([r[-1] for r in rows])  # (n, L, H): each statement's last token
    labels = [0] * len(_TRUE) + [1] * len(_FALSE)
    out = tmp_path_factory.mktemp("steering") / "truth"
    return str(build_steering_vector(features, labels, STEER_LAYERS, ModelSpec.from_folder(model_path), out))


@pytest.fixture(scope="module")
def compiled_engine(probe_path: str, steering_path: str) -> Iterator:
    """The engine's default (compiled) mode, with the probe, hidden capture and steering; chunked prefill (one per
    module, closed with it, so no more than one compiled engine is alive beside the session's eager engine)."""
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    cfg = GuardConfig.build(probe=probe_path, steering=steering_path, capture_hidden=True, max_model_len=1024)
    llm = GuardedLLM(cfg, max_num_batched_tokens=CHUNK_TOKENS)
    yield llm
    llm.close()


def prompts_of_different_lengths(n: int) -> list[str]:
    """Distinct prompts whose lengths differ (so rows of different requests interleave unevenly)."""
    subjects = ["Paris", "the Moon", "water", "Mount Everest", "the Pacific Ocean", "gold", "Tokyo", "a violin"]
    return [f"Question {i}: tell me one fact about {subjects[i % len(subjects)]}." + " Please be brief." * (i % 4)
            for i in range(n)]


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-token relative error over all layers: ||got - ref|| / ||ref||."""
    return float((np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)).max())
