"""Tier markers by folder (tests/unit -> unit, tests/engine -> engine, tests/e2e -> e2e, tests/gpu -> gpu), and
the run order: unit, then engine, then e2e, then gpu (skipped without a CUDA GPU) — fast feedback first, and the
pure tests run before anything that starts an engine (torch's compiler changes process-wide state such as the
recursion limit when it first runs)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

TIERS = ("unit", "engine", "e2e", "gpu")
# LiteLLM fetches its model price map from GitHub when imported unless told to use its bundled copy; test machines
# have no internet (tests/unit/test_guardrail_litellm.py)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
#: variables guard exports for an engine's processes as it starts one (``engine_arguments``, ``GuardedLLM``)
_ENGINE_ENV = ("GUARD_SCORE_ENDPOINT", "VLLM_CPU_OMP_THREADS_BIND")


@pytest.fixture(autouse=True)
def _engine_env_restored() -> Iterator[None]:
    """What a test exported for its engine is gone after it: ``engine_arguments`` sets GUARD_SCORE_ENDPOINT for the
    engine it precedes, and a later test's ``GuardConfig.build()`` must not pick up that (perhaps still bound)
    endpoint."""
    saved = {name: os.environ.get(name) for name in _ENGINE_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _tier(item: pytest.Item) -> int:
    path = str(item.fspath)
    return next((i for i, tier in enumerate(TIERS) if f"/tests/{tier}/" in path), len(TIERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rank = _tier(item)
        if rank < len(TIERS):
            item.add_marker(getattr(pytest.mark, TIERS[rank]))
    items.sort(key=_tier)  # stable: the order within a tier is pytest's
