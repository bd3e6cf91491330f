"""The ``vllm.general_plugins`` entry point.

vLLM calls :func:`register` in every process it starts (front end, engine core, workers), possibly
more than once. It only wraps the runner's ``load_model``; the wrapper reads the engine's
``additional_config["guard"]`` once, right after the model is loaded, and installs the capture only
when that entry exists. An engine started without it runs untouched.
"""

from __future__ import annotations

from typing import Any

from guard.capture_spec import CaptureSpec

__all__ = ["register"]

_registered = False


def register() -> None:
    """Entry point: arrange for guarded engines to install the capture at model load (idempotent)."""
    global _registered
    if _registered:
        return
    from adapters.vllm import internals

    internals.patch_runner_load_model(_on_model_loaded)
    _registered = True


def _on_model_loaded(runner: Any) -> None:
    from adapters.vllm import internals

    spec = CaptureSpec.from_additional_config(internals.additional_config(runner))
    if spec is None:
        return
    from adapters.vllm.capture import install

    install(runner, spec)
