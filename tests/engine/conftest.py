"""Engine-tier fixtures: the real vLLM engine and the real default model, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.defaults import build_stand_in_probe
from adapters.model_store import resolve_model

LAYERS = (3, 14)
#: Small token budget per step so long prompts are prefilled in chunks.
CHUNK_TOKENS = 128


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


def prompts_of_different_lengths(n: int) -> list[str]:
    """Distinct prompts whose lengths differ (so rows of different requests interleave unevenly)."""
    subjects = ["Paris", "the Moon", "water", "Mount Everest", "the Pacific Ocean", "gold", "Tokyo", "a violin"]
    return [f"Question {i}: tell me one fact about {subjects[i % len(subjects)]}." + " Please be brief." * (i % 4)
            for i in range(n)]
